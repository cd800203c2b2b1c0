"""Workers' system metrics on the driver side: when the driver turns them on for a run's jobs,
and how the sink stores them (always per worker, never a mean beside MLflow's own series)."""

import mlflow
import pytest

import spark_tracking
from spark_tracking.config import Config, ConfigError
from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission
from spark_tracking.forwarding.driver.system_metrics import sampling_interval

TS = 1_700_000_000_000


def _cfg(**explicit):
    return Config.resolve(explicit=explicit, spark_conf={}, environ={})


def test_off_by_default_on_with_the_setting_or_mlflows_switch_read_at_run_start():
    assert sampling_interval(_cfg(), environ={}) is None
    assert sampling_interval(_cfg(system_metrics=True), environ={}) == 10.0
    # mlflow.enable_system_metrics_logging() after configure(): read when the run starts
    assert sampling_interval(_cfg(), environ={"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "True"}) == 10.0
    # mlflow.set_system_metrics_sampling_interval(2) is followed unless our setting names one
    on = {"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "true", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "2"}
    assert sampling_interval(_cfg(), environ=on) == 2.0
    assert sampling_interval(_cfg(system_metrics_interval=0.5), environ=on) == 0.5


def test_an_interval_that_is_not_a_positive_number_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        Config.resolve(spark_conf={}, environ={"SPARK_TRACKING_SYSTEM_METRICS_INTERVAL": "0"})
    assert "system_metrics_interval='0' from env SPARK_TRACKING_SYSTEM_METRICS_INTERVAL" in str(err.value)
    assert "is not a number of seconds > 0; use e.g. 10" in str(err.value)


def test_the_job_property_follows_each_run_start_and_start_run_log_system_metrics_wins(spark, sqlite_uri, monkeypatch):
    spark_tracking.configure(tracking_uri=sqlite_uri)
    sc = spark.sparkContext
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")  # MLflow's driver monitor stays idle
    with mlflow.start_run():
        assert sc.getLocalProperty(protocol.PROP_SYSTEM_METRICS) == "30.0"
    with mlflow.start_run(log_system_metrics=False):
        assert sc.getLocalProperty(protocol.PROP_SYSTEM_METRICS) is None
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
    with mlflow.start_run():
        assert sc.getLocalProperty(protocol.PROP_SYSTEM_METRICS) is None
    with mlflow.start_run(log_system_metrics=True):
        assert sc.getLocalProperty(protocol.PROP_SYSTEM_METRICS) == "30.0"


def test_system_metrics_are_per_worker_even_alone_and_never_averaged(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = Sink(client, sqlite_uri, Spool(str(tmp_path / "spool"), 1 << 30), lambda stage: 1, sleep=lambda s: None)
    cpu = "system/cpu_utilization_percentage"
    sink.submit(Submission("points", rid, [1, 0, 0, 7, None, 0], [(cpu, 12.5, TS, 100), ("loss", 1.0, TS, 0)]))
    for p in range(2):  # a two-task stage
        sink.submit(Submission("points", rid, [2, p, 0, 8 + p, None, 0], [(cpu, 10.0 * p, TS + 1, 101)]))
    assert sink.flush(60)
    sink.stop()
    keys = set(client.get_run(rid).data.metrics)
    # plain system/<name> is MLflow's own series of the driver's machine: never written by the sink
    assert keys == {"loss", f"{cpu}/worker_0", f"{cpu}/worker_1"}
    assert sorted((m.step, m.value) for m in client.get_metric_history(rid, f"{cpu}/worker_0")) == [
        (100, 12.5),
        (101, 0.0),
    ]
