"""The issue's promise: a notebook-like session with only the workspace's config.json (or only
the Databricks link) logs a run, metrics from Spark tasks included, through the AML endpoint."""

from __future__ import annotations

import mlflow
import pytest

import spark_tracking

from .conftest import write_aml_config


def _train(rows):
    import mlflow
    from pyspark import TaskContext

    p = TaskContext.get().partitionId()
    for step in range(50):
        mlflow.log_metric("loss", p * 100 + step, step=step)
    yield p


@pytest.mark.parametrize("source", ["config.json", "databricks link"])
def test_a_session_with_only_one_source_logs_through_aml(
    source, azure, principal, workspace, mlflow_server, spark, tmp_path, monkeypatch
):
    if source == "config.json":
        write_aml_config(tmp_path)
    else:
        dbx = azure.add_databricks_workspace(
            "0b1f6471-1bf0-4dda-aec3-111122223333", "rg-dbx", "dbx", aml_workspace_id=workspace
        )
        monkeypatch.setenv("DATABRICKS_AZURE_RESOURCE_ID", dbx)
    spark_tracking.configure(strict=True)
    mlflow.set_experiment(f"notebook via {source}")
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "0.01")
        assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(_train).collect() == [0, 1]
    spark_tracking.flush()
    store = mlflow.MlflowClient(mlflow_server.uri)
    stored = store.get_run(run.info.run_id)
    assert stored.data.params == {"lr": "0.01"}
    assert stored.info.status == "FINISHED"
    for p in (0, 1):
        points = sorted((m.step, m.value) for m in store.get_metric_history(run.info.run_id, f"loss/worker_{p}"))
        assert points == [(s, float(p * 100 + s)) for s in range(50)]
    mean = sorted((m.step, m.value) for m in store.get_metric_history(run.info.run_id, "loss"))
    assert mean == [(s, 50.0 + s) for s in range(50)]
    assert azure.rejected == []
    assert azure.log_batch_metrics >= 150  # the tasks' points went through the AML endpoint
    assert spark_tracking.stats()["dropped"] == {}
