"""The per-worker series and means, and the caps of a run, on a real Sink or Forwarder over
SQLite: long barrier stages, child runs a task created, the param cap, extreme values."""

import mlflow
import pytest
from conftest import history

from spark_tracking.config import Config
from spark_tracking.forwarding.driver import current as driver
from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission
from spark_tracking.forwarding.records import decode
from spark_tracking.forwarding.task.transport import Connection as _Connection

TS = 1_700_000_000_000
SECRET = "means-secret"


def _sink(uri, tmp_path, stage_tasks=lambda stage: 1, **kw):
    return Sink(
        mlflow.MlflowClient(uri), uri, Spool(str(tmp_path / "spool"), 1 << 30), stage_tasks, sleep=lambda s: None, **kw
    )


# -- item 13: the open means of ranks --------------------------------------------------------------


def test_a_long_rank_stage_writes_its_means_while_it_runs_and_holds_few_open(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path, max_open_steps=100)
    last = None
    for chunk in range(10):  # four ranks of one barrier task log 1,000 steps, 100 at a time
        for rank in range(4):
            steps = range(100 * chunk, 100 * (chunk + 1))
            last = sink.submit(
                Submission("points", rid, [2, 0, 0, 5, rank, 0], [("loss", rank + 10.0 * s, TS + s, s) for s in steps])
            )
    assert last.result(60) is True  # the rounds ran; the stage has not ended
    (state,) = sink.aggregator.stages.values()
    assert len(state.agg) <= 100 and sink.stats()["aggregated"] >= 900
    assert sink.flush(60)
    sink.stop()
    assert history(client, rid, "loss", flush=False) == [(s, 1.5 + 10 * s) for s in range(1000)]
    assert history(client, rid, "loss/worker_3", flush=False) == [(s, 3.0 + 10 * s) for s in range(1000)]


# -- item 16: the mean of values near the float maximum --------------------------------------------


def test_the_mean_of_two_values_near_the_float_maximum_does_not_overflow(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path, stage_tasks=lambda stage: 2)
    for partition in range(2):
        sink.submit(Submission("points", rid, [1, partition, 0, partition, None, 0], [("big", 1e308, TS, 0)]))
    assert sink.flush(60)
    sink.stop()
    assert history(client, rid, "big", flush=False) == [(0, 1e308)]


# -- item 15: the param cap counts what the driver logged ------------------------------------------


def test_the_param_cap_counts_params_the_driver_logged_itself(sqlite_uri, tmp_path, caplog):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path, max_params_per_run=200)
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], params=[(f"task{i}", "1") for i in range(10)]))
    assert sink.flush(60)
    for i in range(150):  # the driver's own log_param calls
        client.log_param(rid, f"driver{i}", "1")
    sink.submit(Submission("points", rid, [0, 0, 0, 1, None], params=[(f"late{i}", "1") for i in range(100)]))
    sink.flush(60)
    sink.stop()
    assert len(client.get_run(rid).data.params) == 200
    assert sink.stats()["dropped"] == {"param_cap": 60}
    assert f"run {rid} has 200 params, the most its store keeps in a run; dropped 60 param(s)" in caplog.text


# -- item 9: a child run one task created keeps the user's keys -------------------------------------


class FourTasks:
    """Spark's answer for a stage of four tasks that is still running."""

    def tasks(self, stage):
        return 4

    def finished(self, stages):
        return set()


@pytest.fixture
def forwarder(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_TRACKING_RELAY_SECRET", SECRET)
    fw = driver.Forwarder(Config.resolve({"home": str(tmp_path / "driver-home")}), None, stages=FourTasks())
    yield fw
    fw.stop(30)


def test_a_child_run_a_task_created_keeps_the_users_keys(forwarder, sqlite_uri):
    client = mlflow.MlflowClient(sqlite_uri)
    parent = client.create_run("0").info.run_id
    name = f"thread:{forwarder.sink_index(sqlite_uri)}"
    conn = _Connection(forwarder.relay.address, SECRET, timeout=60)
    children = {}
    try:
        for partition in range(4):  # a many-models job: each task trains one model in a child run
            worker = [3, partition, 0, 10 + partition, None]
            reply = conn.request(
                {
                    "id": f"c{partition}",
                    "op": "create_run",
                    "b": name,
                    "w": worker,
                    "t": [["mlflow.parentRunId", parent]],
                    "s": TS,
                }
            )
            run = decode(reply["v"])
            children[partition] = run.info.run_id
            rows = [["mse", 1.0 / (s + 1), TS + s, s] for s in range(5)]
            conn.request(
                {"id": f"p{partition}", "op": "points", "b": name, "w": worker, "m": rows, "r": run.info.run_id}
            )
            rows = [["loss", float(partition), TS, 0]]
            conn.request({"id": f"q{partition}", "op": "points", "b": name, "w": worker, "m": rows, "r": parent})
    finally:
        conn.close()
    sink = forwarder.sinks[0][1]
    assert sink.flush(60)
    for child in children.values():
        assert set(client.get_run(child).data.metrics) == {"mse"}
        assert history(client, child, "mse", flush=False) == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert set(client.get_run(parent).data.metrics) == {"loss", *(f"loss/worker_{p}" for p in range(4))}
