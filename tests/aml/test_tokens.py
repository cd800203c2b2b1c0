"""Tokens: one per process and scope, shared by threads, renewed before expiry: minutes of
(simulated) time across many token lifetimes without a refused write."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import mlflow
import pytest
import time_machine

import spark_tracking
from spark_tracking.azure import clouds, credentials

from .conftest import SECRET


def test_threads_share_one_token(azure, principal):
    provider = credentials.token_provider(clouds.cloud("AzureCloud"), "service_principal", azure.aad.url)
    barrier = threading.Barrier(8)
    tokens = []

    def fetch():
        barrier.wait()
        tokens.append(provider.token())

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert azure.tokens_issued == 1
    assert credentials.token_provider(clouds.cloud("azurecloud"), "service_principal", azure.aad.url) is provider


def test_minutes_of_logging_across_token_expiry_lose_nothing(
    azure, principal, workspace, mlflow_server, spark, monkeypatch
):
    """Tokens live two minutes; the session logs for twelve (simulated) minutes, from the driver
    and from Spark tasks (through the relay's sink): every request carries a valid token."""
    azure.token_lifetime = 120
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    start = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
    with time_machine.travel(start, tick=True) as clock:
        spark_tracking.configure(strict=True)
        mlflow.set_experiment("token-expiry")
        with mlflow.start_run() as run:
            for minute in range(12):
                mlflow.log_metric("driver_loss", 1.0 / (minute + 1), step=minute)
                spark.sparkContext.parallelize(range(2), 2).mapPartitions(_task_logs(minute)).collect()
                spark_tracking.flush()
                clock.shift(timedelta(seconds=60))
        spark_tracking.flush()
    assert azure.rejected == []
    assert azure.tokens_issued >= 12  # a new token at least every minute (renewed at half its life)
    store = mlflow.MlflowClient(mlflow_server.uri)
    rid = run.info.run_id
    assert [m.step for m in sorted(store.get_metric_history(rid, "driver_loss"), key=lambda m: m.step)] == list(
        range(12)
    )
    for worker in (0, 1):
        points = sorted((m.step, m.value) for m in store.get_metric_history(rid, f"task_loss/worker_{worker}"))
        assert points == [
            (minute * 10 + s, float(worker * 1000 + minute * 10 + s)) for minute in range(12) for s in range(10)
        ]


def _task_logs(minute):
    def run(rows):
        import mlflow
        from pyspark import TaskContext

        p = TaskContext.get().partitionId()
        for s in range(10):
            mlflow.log_metric("task_loss", p * 1000 + minute * 10 + s, step=minute * 10 + s)
        yield p

    return run


def test_a_renewal_failure_keeps_the_valid_token_until_it_expires(azure, principal, caplog):
    azure.token_lifetime = 600
    provider = credentials.token_provider(clouds.cloud("AzureCloud"), "service_principal", azure.aad.url)
    with time_machine.travel(datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc), tick=False) as clock:
        first = provider.token()
        clock.shift(timedelta(seconds=400))  # due for renewal (margin 300 s), still valid
        principal.secret = "rotated"  # Azure AD now refuses the old secret
        assert provider.token() == first
        assert (
            "renewing the Azure token failed (ClientAuthenticationError); the current one is valid for 200 s more"
            in caplog.text
        )
        clock.shift(timedelta(seconds=190))
        with pytest.raises(credentials.AzureLinkError, match="AADSTS7000215"):
            provider.token()
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "name, scope, authority, arm",
    [
        (
            "AzureCloud",
            "https://management.azure.com/.default",
            "https://login.microsoftonline.com",
            "https://management.azure.com",
        ),
        (
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn/.default",
            "https://login.chinacloudapi.cn",
            "https://management.chinacloudapi.cn",
        ),
        (
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net/.default",
            "https://login.microsoftonline.us",
            "https://management.usgovcloudapi.net",
        ),
    ],
)
def test_sovereign_clouds(name, scope, authority, arm):
    cloud = clouds.cloud(name.upper())
    assert (cloud.name, cloud.arm_scope, cloud.authority_host, cloud.arm_endpoint) == (name, scope, authority, arm)


def test_a_sovereign_cloud_asks_for_its_own_audience(tmp_path, mlflow_server, principal, monkeypatch):
    from fakes.azure import FakeAzure

    from spark_tracking.azure import link
    from spark_tracking.config import Config

    with FakeAzure(tmp_path, mlflow_server.uri, audience="https://management.usgovcloudapi.net") as gov:
        sp = gov.add_principal(client_id=principal.client_id, secret=SECRET)
        gov.grant(sp)
        rid = gov.add_aml_workspace("sub-gov", "rg", "ws", location="usgovvirginia", report_tracking_uri=False)
        for key, value in gov.env().items():
            monkeypatch.setenv(key, value)
        found = link.resolve(Config.resolve({"aml_workspace_id": rid, "azure_cloud": "azureusgovernment"}))
    assert gov.scopes_requested == ["https://management.usgovcloudapi.net/.default"]
    assert found.cloud == "AzureUSGovernment"
    assert found.tracking_uri == f"https://usgovvirginia.api.ml.azure.us/mlflow/v2.0{rid}"
    assert spark_tracking.get_portal_url("abc", found.tracking_uri) == (
        "https://ml.azure.us/runs/abc?wsid=/subscriptions/sub-gov/resourcegroups/rg/workspaces/ws"
    )


def test_an_unknown_cloud_is_refused_with_the_choices(monkeypatch):
    from spark_tracking.config import Config, ConfigError

    monkeypatch.setenv("SPARK_TRACKING_AZURE_CLOUD", "AzureGermanCloud")
    with pytest.raises(ConfigError) as info:
        Config.resolve()
    assert str(info.value).startswith(
        "azure_cloud='AzureGermanCloud' from env SPARK_TRACKING_AZURE_CLOUD is not a valid choice: "
        "'AzureGermanCloud' is not one of AzureCloud, AzureChinaCloud, AzureUSGovernment."
    )
