"""Faults of real Spark tasks (local-cluster: separate executor JVMs and Python workers) and
what reaches a real MLflow store: a task that raises after logging, a Python worker killed
with SIGKILL mid-task, a barrier stage that Spark runs again."""

import faults
import mlflow
import pytest
from pyspark import cloudpickle

import spark_tracking

cloudpickle.register_pickle_by_value(faults)  # executors cannot import the tests' modules


@pytest.fixture
def store(sqlite_uri):
    spark_tracking.configure(tracking_uri=sqlite_uri)
    return mlflow.MlflowClient(sqlite_uri)


def history(client, run_id, key):
    spark_tracking.flush()
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


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
