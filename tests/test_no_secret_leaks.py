"""Secrets hygiene: with known secret values in play, nothing the package logs, writes or
prints contains them — nor Spark's event log, which sees the relay secret as a local property."""

import glob
import logging
import os
import subprocess
import sys
import tempfile
import textwrap

import mlflow

import spark_tracking
from spark_tracking.forwarding.driver import current as driver

AZURE_SECRET = "az-client-secret-9f8e7d"
DATABRICKS_TOKEN = "dapi-token-1a2b3c4d"


def _files_under(*roots):
    for root in roots:
        for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
            if os.path.isfile(path) and not os.path.islink(path):
                yield path


def _assert_absent(secrets, text, where):
    for secret in secrets:
        assert secret not in text, f"a secret reached {where}"


def test_nothing_logged_written_or_printed_holds_a_secret(spark, sqlite_uri, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", AZURE_SECRET)
    monkeypatch.setenv("DATABRICKS_TOKEN", DATABRICKS_TOKEN)
    caplog.set_level(logging.DEBUG)
    spark_tracking.configure(tracking_uri=sqlite_uri)

    def task(rows):
        import mlflow

        for step in range(20):
            mlflow.log_metric("loss", step, step=step)
        mlflow.log_param("p", "v")
        yield 1

    with mlflow.start_run():
        spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
    assert spark_tracking.flush()
    secrets = [AZURE_SECRET, DATABRICKS_TOKEN, driver.forwarder().secret]
    _assert_absent(secrets, caplog.text, "the logs")
    _assert_absent(secrets, repr(spark_tracking.stats()), "stats()")
    spill = os.path.join(tempfile.gettempdir(), "spark_tracking_spill")
    for path in _files_under(str(tmp_path), os.path.expanduser("~"), spill):
        with open(path, "rb") as fh:
            data = fh.read()
        _assert_absent([s.encode() for s in secrets], data, path)
    env = dict(os.environ)
    for args in (["settings", "--resolved"], ["settings"], ["hook", "status"]):
        out = subprocess.run(
            [sys.executable, "-m", "spark_tracking.cli", *args], capture_output=True, text=True, env=env
        )
        _assert_absent(secrets, out.stdout + out.stderr, f"spark-tracking {' '.join(args)}")


EVENT_LOG_DRIVER = textwrap.dedent("""
    import sys
    import mlflow, spark_tracking
    from pyspark.sql import SparkSession
    from spark_tracking.forwarding.driver import current as driver
    spark = (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").config("spark.eventLog.enabled", "true")
             .config("spark.eventLog.dir", sys.argv[1]).config("spark.eventLog.compress", "false").getOrCreate())
    with mlflow.start_run():
        spark.sparkContext.parallelize(range(1), 1).map(lambda x: x).collect()
    secret = driver.forwarder().secret
    spark.stop()
    print(secret)
""")


def test_the_relay_secret_stays_out_of_spark_event_logs(tmp_path, sqlite_uri):
    logs = tmp_path / "events"
    logs.mkdir()
    # driver and executors get the secret from their environment, as a cluster's secret scope gives it
    env = dict(
        os.environ,
        SPARK_TRACKING_TRACKING_URI=sqlite_uri,
        PYSPARK_PYTHON=sys.executable,
        SPARK_TRACKING_RELAY_SECRET="0123456789abcdef" * 4,
    )
    out = subprocess.run(
        [sys.executable, "-c", EVENT_LOG_DRIVER, str(logs)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    secret = out.stdout.strip().splitlines()[-1]
    text = "".join(open(p, encoding="utf-8", errors="replace").read() for p in _files_under(str(logs)))
    assert "spark_tracking.relay" in text  # the job's properties are in the event log...
    assert secret not in text  # ...with the secret redacted
