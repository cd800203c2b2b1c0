"""Processes a Spark task starts (``subprocess``, ``multiprocessing`` spawn; torchrun ranks in
tests/patterns/test_torch.py) log into the driver's run through the binding the task's Python
worker exports when the startup hook is installed, in barrier and plain tasks: a process with a
``RANK`` logs as that worker, one without as its task's partition; what such a process logged
is handed over when it ends."""

import os
import subprocess
import sys

import mlflow
from conftest import history
from driver_program import run_on_cluster, spark_session
from faults import StalledRelay

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.task.spill import SpillStore

CHILD = (
    "import os, spark_tracking\n"
    "w = int(os.environ.get('RANK', os.environ.get('PARTITION')))\n"
    "for s in range(3): spark_tracking.log_metric(os.environ['KEY'], w * 10 + s, step=s)\n"
    "assert spark_tracking.flush(60)\n"
)

DRIVER = (
    spark_session("local[2]")
    + f"CHILD = {CHILD!r}\n"
    + """
import multiprocessing, os, subprocess, sys
import mlflow, spark_tracking
from pyspark import TaskContext

def start(key, **env):
    # like TorchDistributor: the task itself logs nothing and starts processes
    subprocess.run([sys.executable, "-c", CHILD], env=dict(os.environ, KEY=key, **env), check=True)

def barrier_task(rows):
    base = TaskContext.get().partitionId() * 2
    for local_rank in range(2):
        start("rank_loss", RANK=str(base + local_rank))
    yield 1

def plain_task(rows):
    partition = TaskContext.get().partitionId()
    start("plain_loss", PARTITION=str(partition))  # no RANK: the task's partition
    os.environ.update(RANK=str(4 + partition), KEY="spawn_loss")  # a spawned process's environment
    child = multiprocessing.get_context("spawn").Process(target=exec, args=(CHILD,))
    child.start()
    child.join()
    del os.environ["RANK"], os.environ["KEY"]
    assert child.exitcode == 0
    yield 1

with mlflow.start_run() as run:
    rdd = spark.sparkContext.parallelize(range(2), 2)
    rdd.barrier().mapPartitions(barrier_task).collect()
    rdd.mapPartitions(plain_task).collect()
assert spark_tracking.flush(60)
print(run.info.run_id)
spark.stop()
"""
)


def test_processes_started_by_tasks_log_to_the_driver_run_as_their_rank(tmp_path, sqlite_uri):
    run_id = run_on_cluster(DRIVER, sqlite_uri, tmp_path)[-1]
    client = mlflow.MlflowClient(sqlite_uri)
    expected = {("rank_loss", w) for w in range(4)} | {("plain_loss", w) for w in range(2)}
    expected |= {("spawn_loss", w) for w in (4, 5)}
    for key, w in sorted(expected):
        got = history(client, run_id, key, worker=w, flush=False)
        assert got == [(s, float(w * 10 + s)) for s in range(3)], (key, w, sorted(client.get_run(run_id).data.metrics))


IN_FLIGHT_AT_EXIT = """
import time
import spark_tracking
from spark_tracking.forwarding.task import executor
for s in range(3):
    spark_tracking.log_metric("loss", float(s), step=s)
executor.shipper.wake.set()
while executor.stats()["buffered"]:  # the shipper took them: they are in flight, then the rank returns
    time.sleep(0.001)
"""


def test_a_process_that_ends_while_its_points_are_in_flight_spills_them(tmp_path):
    relay = StalledRelay("test-secret")  # takes the frame, never acknowledges it
    env = dict(
        os.environ,
        TMPDIR=str(tmp_path),  # the spill folder, <tmp>/spark_tracking_spill-<uid>
        SPARK_TRACKING_TASK_FLUSH_TIMEOUT="2",
        RANK="1",
        **{protocol.ENV_RELAY: relay.address, protocol.ENV_SECRET: "test-secret", protocol.ENV_WORKER: "3:1:0:9:0"},
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", IN_FLIGHT_AT_EXIT], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        relay.close()
    assert out.returncode == 0, out.stderr
    spill = SpillStore(str(tmp_path / f"spark_tracking_spill-{os.getuid()}"))
    frames = [frame for claimed in spill.claim([relay.address]) for frame in claimed.frames]
    assert sorted(m[3] for f in frames for m in f["m"]) == [0, 1, 2]
    assert "the driver did not take this process's points within task_flush_timeout (2s)" in out.stderr


FIRST_INSTRUCTION = (
    "import os\n"
    "uri = os.environ.get('MLFLOW_TRACKING_URI')\n"  # what Lightning reads at import, before mlflow
    "import mlflow\n"
    "mlflow.MlflowClient(uri).get_experiment_by_name('lightning_logs')\n"
    "print(uri)\n"
)


def test_a_started_process_finds_the_forwarding_store_from_its_first_instruction(tmp_path, sqlite_uri):
    """Executors as on a cluster (a HOME of their own, nothing of the driver's store in their
    environment): a process a bound task starts reads the task store in ``MLFLOW_TRACKING_URI``
    before anything imports MLflow, and no store is ever created on the executor."""
    home = tmp_path / "executor-home"
    home.mkdir()
    program = (
        spark_session("local[2]", {"HOME": str(home), "SPARK_TRACKING_TRACKING_URI": ""})
        + f"CHILD = {FIRST_INSTRUCTION!r}\n"
        + """
import subprocess, sys
import mlflow, spark_tracking

def task(rows):
    yield subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.strip()

with mlflow.start_run() as run:
    seen = spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
print(seen)
print(run.info.run_id)
spark.stop()
"""
    )
    *_, seen, _ = run_on_cluster(program, sqlite_uri, tmp_path)
    assert seen == str(["spark-tracking-task:"] * 2)
    assert [os.path.join(top, n) for top, dirs, files in os.walk(home) for n in dirs + files if n.endswith(".db")] == []
