"""Spark Connect with a server the client's own process launched
(``SparkSession.builder.remote("local[2]")``), with nothing configured but the startup hook: the
server inherits the client's environment, so tasks forward to the client's run live, with no
warning, and the relay secret is in no job tag."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from spark_tracking import hook

pytest.importorskip("grpc", reason="the Spark Connect client extra (connect) is not installed")

PROGRAM = """
import json, os
import mlflow, spark_tracking
from pyspark.sql import SparkSession

spark = (SparkSession.builder.remote("local[2]")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .getOrCreate())

def log(batches):
    import os

    import mlflow
    import pandas as pd
    from pyspark import TaskContext

    ctx = TaskContext.get()
    tags = ctx.getLocalProperty("spark.job.tags") or ""
    secret = os.environ.get("SPARK_TRACKING_RELAY_SECRET") or os.environ.get("SPARK_TRACKING_LOCAL_RELAY_SECRET")
    for batch in batches:
        for step in range(3):
            mlflow.log_metric("loss", ctx.partitionId() * 10 + step, step=step)
        yield pd.DataFrame({"secret_in_tags": [bool(secret) and secret in tags], "tagged": ["spark_tracking_v1_" in tags]})

with mlflow.start_run() as run:
    seen = spark.range(0, 2, 1, 2).mapInPandas(log, "secret_in_tags boolean, tagged boolean").collect()
assert spark_tracking.flush(60)
print(json.dumps([[r.secret_in_tags, r.tagged] for r in seen]))
print(run.info.run_id)
spark.stop()
"""


def test_a_connect_server_the_client_launched_forwards_with_nothing_configured(tmp_path, sqlite_uri):
    env = dict(
        os.environ,
        SPARK_TRACKING_TRACKING_URI=sqlite_uri,
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    hook.enable()
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
        )
    finally:
        hook.disable()
    assert out.returncode == 0, out.stderr[-3000:]
    *_, seen, run_id = out.stdout.strip().splitlines()
    assert json.loads(seen) == [[False, True], [False, True]]  # tagged, and never with the secret
    assert "forwarding from Spark tasks is not available" not in out.stderr
    client = mlflow.MlflowClient(sqlite_uri)
    for worker in range(2):
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"loss/worker_{worker}"))
        assert got == [(s, float(worker * 10 + s)) for s in range(3)], sorted(client.get_run(run_id).data.metrics)
