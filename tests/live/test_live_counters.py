"""The view's counters are its run's (N item 7): in a notebook session that ran a job with a retried
task, the view of the next run shows that run's values only, not the session's drops. Real Spark
(local-cluster), the relay and a SQLite store."""

from __future__ import annotations

import re

import mlflow

import spark_tracking
from spark_tracking.live import RunDetails
from spark_tracking.live.text import counters_help


def _retried(rows):
    import mlflow
    from pyspark import TaskContext

    ctx = TaskContext.get()
    attempt = ctx.attemptNumber()
    for step in range(10 if attempt == 0 else 20):
        mlflow.log_metric("loss", attempt * 1000 + step, step=step)
    if attempt == 0 and ctx.partitionId() == 1:
        raise RuntimeError("injected failure after logging")
    yield attempt


def _clean(rows):
    import mlflow

    for step in range(5):
        mlflow.log_metric("acc", step / 10, step=step)
    yield 1


def test_the_counters_are_the_run_s_not_the_driver_session_s(spark, sqlite_uri):
    spark_tracking.configure(tracking_uri=sqlite_uri)
    with mlflow.start_run() as retried:
        assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(_retried).collect() == [0, 1]
    with mlflow.start_run() as clean:
        assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(_clean).collect() == [1, 1]
    assert spark_tracking.flush()

    # worker 0: 10 steps; worker 1: 10, then 20 in its second attempt, whose first 10 are dropped;
    # stored: 30 worker points and a mean for each of steps 0-19
    assert spark_tracking.stats(retried.info.run_id) == {
        "run_id": retried.info.run_id,
        "received": 40,
        "sent": 50,
        "spooled": 0,
        "dropped": {"duplicate_attempt": 10},
    }
    # 2 workers x 5 steps, and the 5 means
    assert spark_tracking.stats(clean.info.run_id) == {
        "run_id": clean.info.run_id,
        "received": 10,
        "sent": 15,
        "spooled": 0,
        "dropped": {},
    }
    assert spark_tracking.stats()["dropped"]["duplicate_attempt"] >= 10  # the session's, all runs

    text = RunDetails(clean, tracking_uri=sqlite_uri).summary()  # a view never shown: what the store holds
    assert text.splitlines()[0].endswith("  FINISHED"), text
    assert "10 loaded from the store" in text and re.search(r"^acc +4 +0\.4 +0\.4 +0\.4 +4 +2 +10$", text, re.M), text
    assert "this run: received 10  stored 15  spooled 0  dropped 0  |" in text, text
    assert "duplicate_attempt" not in text
    view = RunDetails(retried, tracking_uri=sqlite_uri)
    text = view.summary()
    assert "this run: received 40  stored 50  spooled 0  dropped 10 (duplicate_attempt 10)  |" in text, text
    assert "duplicate_attempt: steps a retried task attempt sent again" in counters_help(view.snapshot())
