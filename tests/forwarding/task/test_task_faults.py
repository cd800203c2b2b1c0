"""Faults of real Spark tasks (local-cluster: separate executor JVMs and Python workers) and
what reaches a real MLflow store: a task that raises after logging, a Python worker killed
with SIGKILL mid-task, a barrier stage that Spark runs again, a worker reused after a task that
was not bound."""

import json

import faults
import mlflow
import pytest
from conftest import history, run_driver
from pyspark import cloudpickle

cloudpickle.register_pickle_by_value(faults)  # executors cannot import the tests' modules


def test_a_task_that_raises_after_logging_hands_over_its_curve(spark, store):
    def diverge(rows):
        import os

        from pyspark import TaskContext

        import spark_tracking

        if TaskContext.get().attemptNumber() > 0:
            raise FloatingPointError("loss diverged at step 200")  # retries log nothing
        # nothing ships in the background before the task ends: only the task's end can save it
        os.environ["SPARK_TRACKING_SHIP_INTERVAL"] = "3600"
        for step in range(200):
            spark_tracking.log_metric("curve", 1.0 + step, step=step)
        spark_tracking.log_metric("curve", 1e6, step=200)
        raise FloatingPointError("loss diverged at step 200")

    with mlflow.start_run() as run:
        with pytest.raises(Exception, match="loss diverged at step 200"):
            spark.sparkContext.parallelize(range(1), 1).mapPartitions(diverge).collect()
    # what a user debugging the divergence looks at: the whole curve, each step once
    assert history(store, run.info.run_id, "curve") == [(s, 1.0 + s) for s in range(200)] + [(200, 1e6)]


def test_a_python_worker_killed_mid_task_loses_no_step_and_doubles_none(spark, store):
    def train(rows):
        from pyspark import TaskContext

        import spark_tracking

        ctx = TaskContext.get()
        for step in range(100):
            spark_tracking.log_metric("k9", float(step), step=step)
        if ctx.attemptNumber() == 0:
            spark_tracking.flush()  # some points are in the driver's custody, then the worker dies
            spark_tracking.log_metric("k9", 100.0, step=100)  # ... and one is not
            faults.kill_own_python_worker()
        for step in range(100, 200):
            spark_tracking.log_metric("k9", float(step), step=step)
        yield ctx.attemptNumber()

    with mlflow.start_run() as run:
        assert spark.sparkContext.parallelize(range(1), 1).mapPartitions(train).collect() == [1]
    assert history(store, run.info.run_id, "k9") == [(s, float(s)) for s in range(200)]


REUSED_WORKERS = """
import json, os, sys
import mlflow, spark_tracking
from pyspark.sql import SparkSession
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["SPARK_TRACKING_RELAY_SECRET"] = "reused-workers-test-secret"
spark = (SparkSession.builder.master("local-cluster[2,1,1024]").config("spark.driver.host", "127.0.0.1")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.python.worker.reuse", "true")
         .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable).getOrCreate())

def unbound(rows):  # no spark_tracking session on the driver yet: MLflow logs on the executor
    import os
    import mlflow
    mlflow.log_metric("local", 1.0)  # starts an executor-local run and leaves it active
    yield os.getpid()

def bound(rows):
    import os
    import mlflow
    from pyspark import TaskContext
    p = TaskContext.get().partitionId()
    with mlflow.start_run() as run:  # MLflow refuses this while an earlier task's run is active
        mlflow.log_metric("loss", float(p), step=0)
    yield os.getpid(), run.info.run_id, TaskContext.get().attemptNumber()

first = spark.sparkContext.parallelize(range(6), 6).mapPartitions(unbound).collect()
spark_tracking.configure(tracking_uri=sys.argv[1])
with mlflow.start_run(run_name="second") as second:
    later = spark.sparkContext.parallelize(range(6), 6).mapPartitions(bound).collect()
spark_tracking.flush()
print(json.dumps({"first": first, "later": later, "run": second.info.run_id}))
spark.stop()
"""


def test_a_reused_worker_starts_a_bound_task_without_the_run_an_unbound_task_left_active(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    result = json.loads(run_driver(REUSED_WORKERS, store, cwd=tmp_path).strip().splitlines()[-1])
    assert [attempt for _, _, attempt in result["later"]] == [0] * 6  # no task failed
    assert set(result["first"]) & {pid for pid, _, _ in result["later"]}  # the workers really were reused
    assert {run for _, run, _ in result["later"]} == {result["run"]}  # every task logged to the driver's run
    client = mlflow.MlflowClient(store)
    for p in range(6):
        assert [(m.step, m.value) for m in client.get_metric_history(result["run"], f"loss/worker_{p}")] == [
            (0, float(p))
        ]
