"""RunDetails outside a notebook: fed by the relay's observers, the run's status from a real
SQLite store, the text summary on a terminal and elsewhere. Synchronised on events only."""

from __future__ import annotations

import io
import re

import pytest

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
    assert "no points from tasks yet" in text
    assert "link: http://127.0.0.1:5000/#/experiments/" in text
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
    assert [(r.metric, r.step, r.workers, r.points) for r in snap.rows] == [("loss", 9, 2, 15)]
    assert out.getvalue().count("\x1b[J") >= 1  # redrawn in place
    assert re.search(r"^loss +9 +\S+ +\S+ +\S+ +2 +15$", out.getvalue(), re.M), out.getvalue()

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
    for _ in range(3):
        observers.notify(_points(run_id, 0, range(5)))
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
