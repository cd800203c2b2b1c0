"""Job clusters are strict: a link that fails makes the first run fail with the cause and the fix,
instead of logging to the embedded store on the driver's disk, which the job cluster deletes with
itself minutes later while the job reports success (docs/platform.md: DB_IS_JOB_CLUSTER, job clusters
end with their job). An interactive cluster keeps the loud fallback (tests/aml/test_link.py)."""

from __future__ import annotations

import os

import mlflow
import pytest

from spark_tracking import session
from spark_tracking.azure import AzureLinkError, session_link

FIX = (
    "its runs are not sent to the embedded store on the driver's local disk, which is deleted with the "
    "cluster, so the run fails instead. Fix the link (spark-tracking doctor checks each step; an expired "
    "service-principal secret: store a new one in the secret scope), or set SPARK_TRACKING_STRICT=false to "
    "log to the local store anyway"
)


@pytest.fixture
def expired_secret(azure, principal, workspace, monkeypatch, tmp_path):
    """A linked cluster whose service-principal secret no longer works."""
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "expired-secret")
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    return tmp_path / "home" / ".spark_tracking"


def _nothing_local(home) -> bool:
    return not os.path.exists(home / "mlflow.db") and not os.path.exists(home / session_link.FALLBACK_FILE)


def test_on_a_job_cluster_the_first_run_fails_with_the_cause_and_the_fix(expired_secret, monkeypatch):
    monkeypatch.setenv("DB_IS_JOB_CLUSTER", "TRUE")
    assert session.configure(resolve_link=False) is not None  # what the startup hook does
    with pytest.raises(AzureLinkError) as failed:
        mlflow.start_run()
    message = str(failed.value)
    assert message.startswith("the Azure ML link failed: no Azure AD token for https://management.azure.com/.default")
    assert "AADSTS7000215: Invalid client secret provided." in message
    assert f"\nThis session runs in a job cluster (DB_IS_JOB_CLUSTER=TRUE): {FIX}" in message
    assert "expired-secret" not in message
    assert mlflow.active_run() is None
    assert _nothing_local(expired_secret)


def test_an_explicit_configure_in_a_job_raises_too(expired_secret, monkeypatch):
    monkeypatch.setenv("DB_IS_JOB_CLUSTER", "TRUE")
    with pytest.raises(AzureLinkError, match="This session runs in a job cluster"):
        session.configure()
    assert _nothing_local(expired_secret)


def test_a_job_run_on_an_interactive_cluster_is_known_by_its_job_id(expired_secret, spark, monkeypatch):
    """The notebook thread of a job run carries the job id as a Spark local property."""
    monkeypatch.setenv("DB_IS_JOB_CLUSTER", "FALSE")
    spark.sparkContext.setLocalProperty("spark.databricks.job.id", "734")
    try:
        session.configure(resolve_link=False)
        with pytest.raises(AzureLinkError, match=r"This session runs in a Databricks job run \(job id 734\): "):
            mlflow.start_run()
    finally:
        spark.sparkContext.setLocalProperty("spark.databricks.job.id", None)
    assert _nothing_local(expired_secret)


def _assert_a_run_lands_in_the_embedded_store(home) -> None:
    with mlflow.start_run() as run:
        pass
    embedded = f"sqlite:///{home}/mlflow.db"
    assert mlflow.MlflowClient(embedded).get_run(run.info.run_id).info.status == "FINISHED"


def test_strict_false_set_explicitly_keeps_the_fallback_on_a_job_cluster(expired_secret, monkeypatch, capsys):
    monkeypatch.setenv("DB_IS_JOB_CLUSTER", "TRUE")
    monkeypatch.setenv("SPARK_TRACKING_STRICT", "false")
    session.configure(resolve_link=False)
    _assert_a_run_lands_in_the_embedded_store(expired_secret)
    assert "runs of this session go to the embedded store" in capsys.readouterr().err


def test_an_interactive_cluster_keeps_the_loud_fallback(expired_secret, monkeypatch, capsys):
    monkeypatch.setenv("DB_IS_JOB_CLUSTER", "FALSE")
    session.configure(resolve_link=False)
    _assert_a_run_lands_in_the_embedded_store(expired_secret)
    assert "(the driver's local disk: it is gone when the cluster stops)" in capsys.readouterr().err
