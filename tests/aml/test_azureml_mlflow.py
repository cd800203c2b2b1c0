"""With the real azureml-mlflow installed (the 'azureml' extra; CI installs it beside the
DBR 17.3 LTS pair in .ci/matrix, as its mlflow-skinny <= 3.15 pin excludes the newest MLflow), a
linked session goes through azureml-mlflow's ``azureml://`` store, signed with spark_tracking's
credential, against the fake AML (tests/fakes/azure.py)."""

from __future__ import annotations

import os

import mlflow
import pytest

import spark_tracking
from spark_tracking.azure import store

pytest.importorskip("azureml.mlflow", reason="azureml-mlflow is not installed (pip install 'spark-tracking[azureml]')")

from .conftest import AML_ID, log_model_is_refused_before_sending  # noqa: E402


def _host(azure) -> str:
    return azure.aml.url.split("://", 1)[1]


def test_a_linked_session_logs_through_azureml_mlflows_store_with_our_token(linked, mlflow_server):
    spark_tracking.configure(strict=True)
    assert mlflow.get_tracking_uri() == f"{store.AZUREML_PREFIX}{_host(linked)}/mlflow/v2.0{AML_ID}"
    assert "MLFLOW_TRACKING_AUTH" not in os.environ  # azureml-mlflow signs its own requests
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "0.1")
        mlflow.log_metrics({"loss": 0.5}, step=3)
        mlflow.set_tag("team", "churn")
    stored = mlflow.MlflowClient(mlflow_server.uri).get_run(run.info.run_id).data
    assert (stored.params, stored.metrics, stored.tags["team"]) == ({"lr": "0.1"}, {"loss": 0.5}, "churn")
    assert linked.rejected == []  # every request carried a valid token of the fake Azure AD
    assert linked.tokens_issued == 1  # ours, cached: azureml-mlflow's own chain was never asked


def test_tasks_points_reach_the_run_through_the_sink(linked, mlflow_server, tmp_path):
    from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission

    spark_tracking.configure(strict=True)
    client = mlflow.MlflowClient()
    rid = client.create_run(client.create_experiment("sink")).info.run_id
    uri = mlflow.get_tracking_uri()
    limits = store.limits_for(uri)  # as the driver builds its sink
    assert limits == (250, 200)
    sink = Sink(
        client,
        uri,
        Spool(str(tmp_path / "spool"), 1 << 30),
        lambda stage: 1,
        max_values_per_key=limits.max_values_per_key,
        max_params_per_run=limits.max_params_per_run,
    )
    points = [("loss", float(i), 1_700_000_000_000 + i, i) for i in range(300)]
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], points, [("p", "1")]))
    assert sink.flush(60) is True
    sink.stop()
    history = mlflow.MlflowClient(mlflow_server.uri).get_metric_history(rid, "loss")
    assert sorted(m.step for m in history) == list(range(300))  # in batches of at most 250 values
    assert linked.rejected == []


def test_its_artifact_repository_serves_the_sessions_runs_with_our_credential(linked):
    """What can be checked here of artifacts: the run's artifact URI (AML's form) gets
    azureml-mlflow's repository, bound to the session's store and credential. Uploading and
    downloading are not: they go to AML's artifact service and then to Azure Blob Storage, whose
    blob host azureml-mlflow checks against the cloud's storage suffix (<account>.blob.core...),
    which no server on 127.0.0.1 can answer to."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from spark_tracking.azure.credentials import ProviderCredential

    spark_tracking.configure(strict=True)
    with mlflow.start_run() as run:
        uri = run.info.artifact_uri
    assert uri == (
        f"azureml://{_host(linked)}/mlflow/v2.0{AML_ID}/experiments/{run.info.experiment_id}/runs/"
        f"{run.info.run_id}/artifacts"
    )
    repo = get_artifact_repository(uri)
    assert type(repo).__name__ == "AzureMLflowArtifactRepository"
    assert isinstance(repo.artifacts._service_context.auth, ProviderCredential)
    assert repo.artifacts._run_id == run.info.run_id


# -- the AML workarounds of the https route apply on this route too ----------------------------------


def test_source_tags_are_set_after_aml_dropped_them_at_creation(linked, mlflow_server, monkeypatch):
    monkeypatch.setenv("SPARK_TRACKING_NOTEBOOK_PATH", "/Users/ana@contoso.com/churn/train")
    spark_tracking.configure(strict=True)
    assert mlflow.get_tracking_uri().startswith(store.AZUREML_PREFIX)
    with mlflow.start_run() as run:
        pass
    tags = mlflow.MlflowClient(mlflow_server.uri).get_run(run.info.run_id).data.tags
    assert (tags.get("mlflow.source.name"), tags.get("mlflow.source.type")) == (
        "/Users/ana@contoso.com/churn/train",
        "NOTEBOOK",
    )
    assert linked.rejected == [] and linked.tokens_issued == 1


def test_log_model_fails_at_once_naming_the_cause_and_the_fix(linked):
    from spark_tracking._compat.mlflow import installed_version

    if installed_version() < (2, 17):
        pytest.skip("log_model of MLflow < 2.17 creates no logged model")
    spark_tracking.configure(strict=True)
    assert mlflow.get_tracking_uri().startswith(store.AZUREML_PREFIX)
    with mlflow.start_run():
        log_model_is_refused_before_sending(linked)


# -- doctor probes this route ------------------------------------------------------------------------


def test_doctor_probes_the_store_through_azureml_mlflow_as_sessions_do(linked, mlflow_server):
    from spark_tracking.azure.doctor import doctor

    lines: list[str] = []
    assert doctor(emit=lambda text: lines.extend(text.splitlines())) is True
    uri = f"{store.AZUREML_PREFIX}{_host(linked)}/mlflow/v2.0{AML_ID}"
    assert f"[PASS] store: {uri} answers (through azureml-mlflow's azureml:// store, as sessions do)" in lines
    probe = next(line for line in lines if line.startswith("[PASS] probe run: created, wrote and deleted run "))
    run_id = probe.split(" deleted run ")[1].split()[0]
    stored = mlflow.MlflowClient(mlflow_server.uri).get_run(run_id)
    assert (stored.data.metrics, stored.info.lifecycle_stage) == ({"probe": 1.0}, "deleted")
    assert linked.rejected == [] and linked.tokens_issued == 1
