"""The driver sink and the spool on a real MLflow store (SQLite, or an `mlflow server`):
custody at stop, spool claims across processes, replay past refusals, request limits, a
refused run, first-attempt-wins across stage attempts, means counted per worker, bounded state."""

import json
import os
import subprocess
import sys

import mlflow
from conftest import history
from faults import FaultProxy, before_store_call

from spark_tracking import cli
from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission

TS = 1_700_000_000_000


def _sink(uri, tmp_path, stage_tasks=lambda stage: 1, **kw):
    return Sink(
        mlflow.MlflowClient(uri), uri, Spool(str(tmp_path / "spool"), 1 << 30), stage_tasks, sleep=lambda s: None, **kw
    )


def _points(n, key="m", offset=0):
    return [(key, float(i + offset), TS + i + offset, i + offset) for i in range(n)]


class Recorder:
    """Stands between the sink and its store writer: records each log_batch it passes on."""

    def __init__(self, sink):
        self.inner, self.calls = sink.writer, []
        sink.writer = self

    def log_batch(self, run_id, metrics, params, tags):
        body = {
            "run_id": run_id,
            "metrics": [{"key": k, "value": v, "timestamp": t, "step": s} for k, v, t, s in metrics],
            "params": [{"key": k, "value": v} for k, v in params],
            "tags": [{"key": k, "value": v} for k, v in tags],
        }
        self.calls.append(
            {
                "entities": len(metrics) + len(params) + len(tags),
                "params_tags": len(params) + len(tags),
                "bytes": len(json.dumps(body)),
            }
        )
        return self.inner.log_batch(run_id, metrics, params, tags)


def _replay(spool_dir, uri, capsys):
    code = cli.main(["replay", "--spool-dir", str(spool_dir), "--tracking-uri", uri])
    return code, capsys.readouterr().out


# -- custody at stop (issue H item 3) ---------------------------------------------------------


def test_stop_with_a_stalled_store_writes_what_it_holds_to_the_spool(mlflow_server, tmp_path, caplog, capsys):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    spool_dir = tmp_path / "spool"
    with FaultProxy(mlflow_server.uri) as proxy:
        sink = _sink(proxy.uri, tmp_path)
        proxy.stall.set()
        sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(100)))
        assert proxy.stalled.wait(60)  # the store holds the first request
        sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(100, offset=100)))
        assert sink.stop(timeout=0.5) is False
        files = sorted(os.listdir(spool_dir))
        assert len(files) == 2
        proxy.stall.clear()
        proxy.release.set()  # the held request may still reach the store: replay must not double it
    assert (
        f"did not take 200 values in time; they are in the spool {spool_dir}: run `spark-tracking replay`"
        in caplog.text
    )
    assert _replay(spool_dir, mlflow_server.uri, capsys)[0] == 0
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(200)]


# -- two processes on one spool (item 4) ------------------------------------------------------


def test_two_processes_draining_one_spool_deliver_every_file_once(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir), 1 << 30)
    for k in range(2):
        spool.write(
            {
                "run_id": rid,
                "metrics": [list(p) for p in _points(50, "spooled", 50 * k)],
                "params": [],
                "tags": [],
                "tracking_uri": sqlite_uri,
            }
        )
    sink = _sink(sqlite_uri, tmp_path)
    other = []  # `spark-tracking replay` in another process, while the sink delivers a spooled file
    replay = [sys.executable, "-m", "spark_tracking.cli", "replay", "--spool-dir", str(spool_dir)]
    before_store_call(sink, lambda: other.append(subprocess.run(replay, capture_output=True, text=True)))
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(10, "live")))
    assert sink.flush(30) is True
    sink.stop()
    assert f"replayed 1 spool file(s) from {spool_dir}; 0 left" in other[0].stdout, other[0]
    assert history(client, rid, "spooled", flush=False) == [(i, float(i)) for i in range(100)]
    assert history(client, rid, "live", flush=False) == [(i, float(i)) for i in range(10)]
    assert os.listdir(spool_dir) == []


def test_a_claim_left_by_a_dead_process_is_delivered(sqlite_uri, tmp_path, capsys):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    path = spool.write(
        {"run_id": rid, "metrics": [list(p) for p in _points(5)], "params": [], "tags": [], "tracking_uri": sqlite_uri}
    )
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    os.rename(path, f"{path}.claim-{dead.stdout.strip()}")  # it claimed the file, then died
    assert _replay(spool.directory, sqlite_uri, capsys)[0] == 0
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(5)]


# -- replay past a refused file (item 8) --------------------------------------------------------


def test_replay_reports_a_refused_file_sets_it_aside_and_goes_on(sqlite_uri, tmp_path, capsys):
    client = mlflow.MlflowClient(sqlite_uri)
    good = client.create_run("0").info.run_id
    deleted = client.create_run("0").info.run_id
    client.delete_run(deleted)
    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir), 1 << 30)
    names = [
        os.path.basename(
            spool.write(
                {
                    "run_id": run,
                    "metrics": [list(p) for p in _points(10, offset=o)],
                    "params": [],
                    "tags": [],
                    "tracking_uri": sqlite_uri,
                }
            )
        )
        for run, o in ((good, 0), (deleted, 0), (good, 10))
    ]
    code, out = _replay(spool_dir, sqlite_uri, capsys)
    assert code == 1
    assert f"refused {names[1]}: MlflowException:" in out
    assert f"moved to {spool_dir / 'refused' / names[1]}" in out
    assert (
        f"replayed 2 spool file(s) from {spool_dir}; 1 refused by the store, kept in {spool_dir / 'refused'}; 0 left"
    ) in out
    assert history(client, good, "m", flush=False) == [(i, float(i)) for i in range(20)]
    assert sorted(os.listdir(spool_dir / "refused")) == [names[1], names[1] + ".reason.txt"]
    assert _replay(spool_dir, sqlite_uri, capsys)[0] == 0  # what was set aside is not retried


# -- request limits, a refused run (item 13) ------------------------------------------------------


def test_requests_stay_within_1000_entities_100_params_and_tags_and_1_mb(mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(mlflow_server.uri, tmp_path)
    recorder = Recorder(sink)
    wide = "é" * 250  # 250 characters MLflow accepts, six bytes each in the request's JSON
    sink.submit(
        Submission(
            "points",
            rid,
            [0, 0, 0, 0, None],
            [(f"{wide[:-3]}{i:03d}", 0.123456789012345, TS, 10**12 + i) for i in range(1000)],
            params=[(f"p{i}", "v" * 6000) for i in range(60)],
            tags=[(f"t{i}", "x") for i in range(60)],
        )
    )
    assert sink.flush(120)
    sink.stop()
    assert sink.stats()["dropped"] == {}
    assert all(c["entities"] <= 1000 and c["params_tags"] <= 100 and c["bytes"] <= 1_000_000 for c in recorder.calls), (
        recorder.calls
    )
    assert len(client.get_run(rid).data.metrics) == 1000 and len(client.get_run(rid).data.params) == 60


def test_a_deleted_run_is_detected_once_not_split_into_a_call_per_point(sqlite_uri, tmp_path, caplog):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    client.delete_run(rid)
    sink = _sink(sqlite_uri, tmp_path)
    recorder = Recorder(sink)
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(500)))
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(500, offset=500)))
    assert sink.flush(120) is False
    sink.stop()
    assert len(recorder.calls) == 1
    assert sink.stats()["dropped"] == {"run_refused": 1000}
    assert caplog.text.count(f"the store refuses every write to run {rid} (run is deleted)") == 1


# -- first attempt wins across stage attempts (item 10) --------------------------------------------


def test_a_rerun_stage_attempt_stores_each_step_once(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path, stage_tasks=lambda stage: 2)
    for stage_attempt, task_id, base in ((0, 10, 0.0), (1, 20, 100.0)):  # attempt 0 in both stage attempts
        for partition in range(2):
            sink.submit(
                Submission(
                    "points",
                    rid,
                    [4, partition, 0, task_id + partition, None, stage_attempt],
                    [("loss", base + s, TS + s, s) for s in range(5)],
                )
            )
    assert sink.flush(60)
    sink.stop()
    for partition in range(2):
        assert history(client, rid, f"loss/worker_{partition}", flush=False) == [(s, float(s)) for s in range(5)]
    assert history(client, rid, "loss", flush=False) == [(s, float(s)) for s in range(5)]
    assert sink.stats()["dropped"] == {"duplicate_attempt": 10}


# -- the mean series (item 11) -----------------------------------------------------------------------


def test_ranks_of_one_task_give_one_mean_per_step(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path, stage_tasks=lambda stage: 1)  # one task started four ranks
    for rank in range(4):
        sink.submit(
            Submission("points", rid, [2, 0, 0, 5, rank, 0], [("loss", rank + 10.0 * s, TS + s, s) for s in range(3)])
        )
    assert sink.flush(60)
    sink.stop()
    assert history(client, rid, "loss", flush=False) == [(s, 1.5 + 10 * s) for s in range(3)]
    assert history(client, rid, "loss/worker_3", flush=False) == [(s, 3.0 + 10 * s) for s in range(3)]


# -- bounded state (item 18) ------------------------------------------------------------------------


def test_state_per_stage_and_run_is_bounded(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    runs = [client.create_run("0").info.run_id for _ in range(3)]
    sink = _sink(sqlite_uri, tmp_path, stage_tasks=lambda stage: 2, max_stages=8, max_runs=2)
    for stage in range(40):
        run = runs[stage % 3]
        for partition in range(2):
            sink.submit(
                Submission(
                    "points",
                    run,
                    [stage, partition, 0, 2 * stage + partition, None, 0],
                    [("m", 1.0, TS, stage)],
                    params=[("p", "1")],
                )
            )
            sink.submit(Submission("done", run, [stage, partition, 0, 2 * stage + partition, None, 0]))
    assert sink.flush(60)
    sink.stop()
    assert len(sink.aggregator.stages) <= 8 and len(sink.aggregator.params) <= 2
    assert len(sink.delivery.run_points) <= 2
    assert sum(len(history(client, run, "m/worker_0", flush=False)) for run in runs) == 40
