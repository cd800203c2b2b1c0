"""``multiprocessing`` children a task starts with *fork* (Linux's default start method on
Python <= 3.13) end with ``os._exit``: ``atexit`` never runs there. What they logged is handed
to the driver when ``multiprocessing`` finalizes them (``multiprocessing.util.Finalize``), as
at a task's end: within ``task_flush_timeout``, the rest spilled with a warning. A real relay
(unit level), then a real Spark task on ``local-cluster`` with a real MLflow store."""

import json
import os
import subprocess
import sys

import mlflow
from conftest import QUIET_ENV, run_driver
from faults import RecordingHandler, StalledRelay

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.relay import Relay
from spark_tracking.forwarding.task.spill import SpillStore

# a process a task started (bound through the environment it exported); it logs nothing itself
CHILDREN = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
import spark_tracking

def child(key):
    for step in range(50):
        spark_tracking.log_metric(key, float(step), step=step)
    return key

if __name__ == "__main__":
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=child, args=(f"proc_{i}",)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    with ProcessPoolExecutor(2, mp_context=fork) as pool:
        assert list(pool.map(child, ["pool_0", "pool_1"])) == ["pool_0", "pool_1"]
"""


def _env(tmp_path, relay_address, **extra):
    return dict(
        os.environ,
        TMPDIR=str(tmp_path),  # the spill folder, <tmp>/spark_tracking_spill-<uid>
        SPARK_TRACKING_SHIP_INTERVAL="3600",  # nothing ships in the background: only the children's end
        **{protocol.ENV_RELAY: relay_address, protocol.ENV_SECRET: "test-secret", protocol.ENV_WORKER: "3:1:0:9:0"},
        **extra,
    )


def test_forked_children_and_a_process_pool_hand_over_what_they_logged(tmp_path):
    handler = RecordingHandler()
    relay = Relay("test-secret", handler).start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILDREN],
            env=_env(tmp_path, relay.address),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        relay.stop()
    assert out.returncode == 0, out.stderr
    got: dict = {}
    for _, key, value, _, step in handler.received:
        got.setdefault(key, []).append((step, value))
    keys = [f"proc_{i}" for i in range(4)] + ["pool_0", "pool_1"]
    assert {k: sorted(v) for k, v in got.items()} == {k: [(s, float(s)) for s in range(50)] for k in keys}


def test_a_forked_child_whose_relay_does_not_answer_spills_with_the_warning(tmp_path):
    relay = StalledRelay("test-secret")  # takes the frame, never acknowledges it
    code = CHILDREN.replace("range(4)", "range(1)").replace("[0] * 4", "[0]").split("    with ProcessPoolExecutor")[0]
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(tmp_path, relay.address, SPARK_TRACKING_TASK_FLUSH_TIMEOUT="2"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        relay.close()
    assert out.returncode == 0, out.stderr
    spill = SpillStore(str(tmp_path / f"spark_tracking_spill-{os.getuid()}"))
    frames = [frame for claimed in spill.claim([relay.address]) for frame in claimed.frames]
    assert sorted(m[3] for f in frames for m in f["m"]) == list(range(50))
    assert "the driver did not take this process's points within task_flush_timeout (2s)" in out.stderr


SPARK_TASK = """
import json, os, sys
import mlflow, spark_tracking
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
         .config("spark.executorEnv.HOME", sys.argv[2])
         .config("spark.executorEnv.SPARK_TRACKING_SHIP_INTERVAL", "3600")
         .getOrCreate())
spark_tracking.configure(tracking_uri=sys.argv[1])

def child(key):
    import spark_tracking
    for step in range(50):
        spark_tracking.log_metric(key, float(step), step=step)

def task(rows):
    import multiprocessing
    from pyspark import TaskContext
    p = TaskContext.get().partitionId()
    procs = [multiprocessing.get_context("fork").Process(target=child, args=(f"child_{p}_{i}",)) for i in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    yield [proc.exitcode for proc in procs]

with mlflow.start_run() as run:
    codes = spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
assert spark_tracking.flush(60)
print(json.dumps({"codes": codes, "run": run.info.run_id}))
spark.stop()
"""


def test_forked_children_of_a_real_spark_task_log_into_the_driver_run(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    executor_home = tmp_path / "executor-home"
    executor_home.mkdir()
    out = run_driver(SPARK_TASK, store, str(executor_home), cwd=tmp_path, env=dict(QUIET_ENV))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["codes"] == [[0, 0], [0, 0]]
    client = mlflow.MlflowClient(store)
    for p in range(2):
        for i in range(2):
            got = sorted(
                (m.step, m.value) for m in client.get_metric_history(result["run"], f"child_{p}_{i}/worker_{p}")
            )
            assert got == [(s, float(s)) for s in range(50)], (p, i, sorted(client.get_run(result["run"]).data.metrics))
