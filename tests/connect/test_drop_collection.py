"""Spark Connect without a reachable driver, client side, without a Connect server: the drop
files tasks left are collected when forwarding shuts down (``spark_tracking.shutdown()``, and
at interpreter exit, which calls it), not only at ``spark_tracking.flush()``, as
docs/connect.md says. A real Relay and Sink on SQLite; the file is one a task writes."""

import json

import mlflow

import spark_tracking
from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver import current as driver


def test_drop_files_are_collected_when_forwarding_shuts_down(tmp_path, sqlite_uri, monkeypatch):
    drop = tmp_path / "drop"
    drop.mkdir()
    monkeypatch.setenv("SPARK_TRACKING_TASK_DROP_DIR", str(drop))
    spark_tracking.configure(tracking_uri=sqlite_uri)
    owner = object()  # a Connect session stands here: no SparkContext
    fw = driver.use_forwarder(owner, lambda: driver.Forwarder(driver.config(), None, host="127.0.0.1"))
    try:
        with mlflow.start_run() as run:
            binding = fw.bind_thread()
            token = protocol.thread_token(binding)  # as the task side names its file
            lines = [
                {"id": "t:1", "op": "points", "b": binding, "w": [1, 0, 0, 5, None, 0], "m": [["loss", 0.5, 1000, 3]]},
                {"id": "t:2", "op": "done", "b": binding, "w": [1, 0, 0, 5, None, 0]},
            ]
            (drop / f"{token}-1-abc.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            assert driver.shutdown(30.0)
    finally:
        driver.shutdown(5.0)
    client = mlflow.MlflowClient(sqlite_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss/worker_0")] == [(3, 0.5)]
    assert list(drop.iterdir()) == []
