"""RunDetails outside a notebook: fed by the relay's observers, the run's status from a real
SQLite store, the text summary on a terminal and elsewhere. Synchronised on events only."""

from __future__ import annotations

import io
import math
import re
import threading

import pytest

from spark_tracking import layout
from spark_tracking.forwarding.driver import observers
from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission
from spark_tracking.live import RunDetails
from spark_tracking.live import details as details_module


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def run_id(sqlite_uri):
    import mlflow

    client = mlflow.MlflowClient(sqlite_uri)
    experiment = client.create_experiment("live")
    return client.create_run(experiment, run_name="watched").info.run_id


def _points(run_id, partition, steps, key="loss"):
    return Submission(
        "points",
        run_id,
        [0, partition, 0, partition, None, 0],
        [(key, 1.0 / (s + 1) + partition, 1_700_000_000_000 + s, s) for s in steps],
    )


def test_outside_a_tty_the_summary_is_printed_once(sqlite_uri, run_id):
    out = io.StringIO()
    RunDetails(run_id, tracking_uri=sqlite_uri).show(file=out)
    text = out.getvalue()
    assert text.count("run ") == 1
    assert re.match(rf"run {run_id[:8]} watched  RUNNING\n", text), text
    assert "no points yet" in text
    assert "experiment live" in text
    # a local store and no MLflow UI running: no dead 127.0.0.1:5000 link, but how to get one
    assert "127.0.0.1:5000" not in text
    assert "no link: no MLflow UI runs for this store (start one with: spark-tracking ui)" in text
    assert observers.registered() == ()  # nothing left listening


def test_on_a_terminal_it_refreshes_from_the_relay_until_the_run_ends(sqlite_uri, run_id):
    import mlflow

    out = Terminal()
    view = RunDetails(run_id, tracking_uri=sqlite_uri, refresh_interval=3600, status_interval=1e-9)
    view.show(file=out)
    assert observers.registered() == (view._observe,)
    observers.notify(_points(run_id, 0, range(10)))
    observers.notify(_points(run_id, 1, range(5)))
    observers.notify(_points("another-run", 0, range(100)))  # not this view's run
    observers.notify(Submission("done", run_id, [0, 0, 0, 0, None, 0]))
    snap = view.refresh()
    assert (snap.points, snap.status) == (15, "RUNNING")
    assert [(r.metric, r.step, r.latest, r.workers, r.points) for r in snap.rows] == [("loss", 4, 9, 2, 15)]
    assert out.getvalue().count("\x1b[J") >= 1  # redrawn in place
    # the table's step is the latest one both workers reached (4), the latest any reached is 9
    assert re.search(r"^loss +4 +\S+ +\S+ +\S+ +9 +2 +15$", out.getvalue(), re.M), out.getvalue()

    mlflow.MlflowClient(sqlite_uri).set_terminated(run_id, "FINISHED")
    view.stop()  # the last refresh reads the status once more
    assert view.wait(0)
    assert view.status == "FINISHED"
    assert observers.registered() == ()
    last = out.getvalue().rsplit("\x1b[J", 1)[1]
    assert last.startswith(f"run {run_id[:8]} watched  FINISHED\n"), last


def test_the_thread_stops_by_itself_when_the_run_ends(sqlite_uri, run_id):
    import mlflow

    view = RunDetails(run_id, tracking_uri=sqlite_uri, refresh_interval=0.01, status_interval=0.01)
    view.show(file=Terminal())
    observers.notify(_points(run_id, 0, range(3)))
    mlflow.MlflowClient(sqlite_uri).set_terminated(run_id, "FAILED")
    assert view.wait(60)
    assert (view.status, view.live.points) == ("FAILED", 3)
    assert "stopped" in repr(view)


class Updates:
    """A frontend that says when it was handed a snapshot."""

    live = True

    def __init__(self):
        self.updated = threading.Event()
        self.snaps = []

    def open(self, snap):
        pass

    def update(self, snap):
        self.snaps.append(snap)
        self.updated.set()

    def finish(self, snap):
        pass


def test_points_arriving_wake_the_view_without_waiting_for_its_tick(sqlite_uri, run_id):
    view = RunDetails(run_id, tracking_uri=sqlite_uri, refresh_interval=3600, status_interval=3600)
    frontend = Updates()
    view._start(frontend)
    assert not frontend.updated.is_set()
    observers.notify(_points(run_id, 0, range(3)))
    assert frontend.updated.wait(60)  # within a fraction of a second, not refresh_interval (an hour)
    assert frontend.snaps[0].points == 3
    view.stop()
    assert view.wait(0)


def test_with_no_run_it_follows_the_first_run_tasks_log_to(sqlite_uri, run_id):
    view = RunDetails(tracking_uri=sqlite_uri, refresh_interval=3600)
    view.show(file=Terminal())
    observers.notify(_points(run_id, 0, range(4)))
    observers.notify(_points("later-run", 0, range(4)))
    snap = view.refresh()
    assert (snap.run_id, snap.points) == (run_id, 4)
    view.stop()


def test_a_view_that_falls_behind_counts_what_it_does_not_draw(monkeypatch, sqlite_uri, run_id):
    monkeypatch.setattr(details_module, "QUEUE_LIMIT", 2)
    view = RunDetails(run_id, tracking_uri=sqlite_uri, refresh_interval=3600)
    view.show(file=Terminal())
    for start in (0, 5, 10):
        observers.notify(_points(run_id, 0, range(start, start + 5)))
    snap = view.refresh()
    assert (snap.points, snap.hidden_points) == (10, 5)  # two frames queued, the third counted
    assert "5 points not drawn (view limits)" in view.summary()
    view.stop()


def test_the_sink_hands_what_it_takes_in_to_the_observers(tmp_path, sqlite_uri, run_id):
    import mlflow

    seen = []
    sink = Sink(mlflow.MlflowClient(sqlite_uri), sqlite_uri, Spool(str(tmp_path / "spool"), 10**6), lambda stage: 2)
    observers.add(seen.append)
    try:
        sub = _points(run_id, 0, range(3))
        sink.submit(sub).result(30)
    finally:
        observers.remove(seen.append)
        sink.stop()
    assert seen == [sub]
    history = mlflow.MlflowClient(sqlite_uri).get_metric_history(run_id, "loss/worker_0")
    assert sorted(m.step for m in history) == [0, 1, 2]


def test_an_observer_that_fails_is_removed_and_forwarding_goes_on(caplog):
    def broken(sub):
        raise RuntimeError("boom")

    observers.add(broken)
    observers.notify(object())
    assert observers.registered() == ()
    assert "observer" in caplog.text and "removed" in caplog.text


def test_a_run_that_is_not_a_run_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"RunDetails\(run=42\): pass a run id \(str\), an MLflow Run"):
        RunDetails(42)
    with pytest.raises(ValueError, match="refresh_interval=0"):
        RunDetails("r", refresh_interval=0)


def test_the_vocabulary_run_shows_its_details(capsys, sqlite_uri, run_id):
    import spark_tracking

    assert spark_tracking.RunDetails is RunDetails
    spark_tracking.Run(run_id, tracking_uri=sqlite_uri).show_details()  # stdout is not a terminal here
    out = capsys.readouterr().out
    assert out.startswith(f"run {run_id[:8]} watched  RUNNING\n"), out
    assert observers.registered() == ()


def _store_run(client, run_id, workers=4, steps=25, driver_key="val_loss"):
    """What the sink and the driver leave in the store: per-worker series (layout's keys), their
    per-step mean under the plain key, and a metric the driver logged itself."""
    from mlflow.entities import Metric

    metrics = []
    for step in range(steps):
        values = [1.0 / (step + 1) + w for w in range(workers)]
        metrics += [
            Metric(layout.worker_metric_key("loss", w), v, 1_700_000_000_000 + step, step) for w, v in enumerate(values)
        ]
        metrics.append(Metric("loss", sum(values) / workers, 1_700_000_000_000 + step, step))
        if step % 5 == 4:
            metrics.append(Metric(driver_key, 0.25 + step, 1_700_000_000_000 + step, step))
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start : start + 900])


def test_a_finished_run_opened_late_shows_what_the_store_holds(sqlite_uri, run_id):
    import mlflow

    client = mlflow.MlflowClient(sqlite_uri)
    _store_run(client, run_id)
    client.set_terminated(run_id, "FINISHED")
    out = io.StringIO()
    view = RunDetails(run_id, tracking_uri=sqlite_uri)
    view.show(file=out)
    assert view.wait(0)  # a finished run: drawn once, nothing to follow
    assert observers.registered() == ()
    snap = view.snapshot()
    workers, mean = snap.curves["loss"]
    assert {w: len(p) for w, p in workers.items()} == {w: 25 for w in range(4)}
    assert [s for s, _ in mean] == list(range(25))
    assert all(math.isclose(v, 1.0 / (s + 1) + 1.5) for s, v in mean)  # the workers' mean, the stored one not added
    assert snap.driver == {"val_loss": [(s, 0.25 + s) for s in range(4, 25, 5)]}
    assert (snap.loaded, snap.received, snap.status) == (100 + 5, 0, "FINISHED")
    text = out.getvalue()
    assert text.startswith(f"run {run_id[:8]} watched  FINISHED\n"), text
    assert "no points yet" not in text
    assert re.search(r"^loss +24 +\S+ +\S+ +\S+ +24 +4 +100 +-$", text, re.M), text
    assert re.search(r"^val_loss +- +- +- +- +- +0 +5 +24\.25$", text, re.M), text
    assert re.search(r"^3 +done +- +0 +24 +3\.04 +25 ", text, re.M), text  # a worker row from the store


def test_a_view_opened_late_loads_the_history_then_follows_the_relay(sqlite_uri, run_id):
    import mlflow

    client = mlflow.MlflowClient(sqlite_uri)
    _store_run(client, run_id, workers=2, steps=10)
    view = RunDetails(run_id, tracking_uri=sqlite_uri, refresh_interval=3600, status_interval=3600)
    view.show(file=Terminal())
    observers.notify(_points(run_id, 0, range(8, 12)))  # steps 8, 9 are in the store already
    observers.notify(_points(run_id, 1, range(8, 12)))
    snap = view.refresh()
    workers, mean = snap.curves["loss"]
    assert [s for s, _ in workers[0]] == list(range(12))
    assert [s for s, _ in mean] == list(range(12))
    assert (snap.loaded, snap.received) == (20 + 2, 4)
    # the driver logs a point of its own while the view runs: read at the next status read
    client.log_metric(run_id, "val_loss", 0.125, step=11)
    view._status_at = -float("inf")
    snap = view.refresh()
    assert snap.driver["val_loss"][-1] == (11, 0.125)
    view.stop()


Failed = observers.TaskFailed  # a task failure as the driver reports it


def test_a_failed_task_is_shown_with_its_attempt_and_the_error_s_first_line(sqlite_uri, run_id):
    view = RunDetails(run_id, tracking_uri=sqlite_uri, refresh_interval=3600, status_interval=3600)
    out = Terminal()
    view.show(file=out)
    observers.notify(_points(run_id, 1, range(5)))
    observers.notify(_points(run_id, 2, range(5)))
    observers.notify(Failed(None, [0, 1, 0, 1, None, 0], "ValueError: bad batch 7\nTraceback ..."))
    observers.notify(Failed(None, [9, 1, 0, 1, None, 0], "another job's stage"))  # not a stage of this run
    snap = view.refresh()
    assert [(f.worker, f.attempt, f.error) for f in snap.failures] == [(1, 0, "ValueError: bad batch 7")]
    assert [(w.worker, w.state) for w in snap.workers] == [(1, "failed"), (2, "running")]
    observers.notify(Submission("points", run_id, [0, 1, 1, 9, None, 0], [("loss", 0.1, 1, s) for s in range(7)]))
    observers.notify(Submission("done", run_id, [0, 2, 0, 2, None, 0]))
    snap = view.refresh()
    assert [(w.worker, w.state, w.attempt, w.step) for w in snap.workers] == [(1, "retried", 1, 6), (2, "done", 0, 4)]
    text = out.getvalue().rsplit("\x1b[J", 1)[1]
    assert "task failed: worker 1, stage 0, attempt 0: ValueError: bad batch 7" in text, text
    view.stop()


def test_the_drops_are_explained_by_cause(monkeypatch, sqlite_uri, run_id):
    from spark_tracking import api

    asked = []

    def run_stats(run_id=None):
        asked.append(run_id)
        return {"received": 824, "sent": 1000, "spooled": 0, "dropped": {"duplicate_attempt": 24}}

    monkeypatch.setattr(api, "stats", run_stats)
    view = RunDetails(run_id, tracking_uri=sqlite_uri)
    text = view.summary()
    assert "this run: received 824  stored 1,000  spooled 0  dropped 24 (duplicate_attempt 24)" in text
    assert set(asked) == {run_id}  # the run's counters, never the session's
    snap = view.snapshot()
    from spark_tracking.live.text import counters_help

    assert "duplicate_attempt: steps a retried task attempt sent again" in counters_help(snap)
    assert "including the per-step means the driver adds" in counters_help(snap)


def test_the_link_points_to_the_run_in_the_server_s_ui(mlflow_server):
    import mlflow

    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment("live-linked")
    run_id = client.create_run(experiment).info.run_id
    out = io.StringIO()
    RunDetails(run_id, tracking_uri=mlflow_server.uri).show(file=out)
    assert f"link: {mlflow_server.uri}/#/experiments/{experiment}/runs/{run_id}" in out.getvalue()
