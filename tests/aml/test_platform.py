"""What a first day on a real Databricks cluster linked to Azure ML needs (issue G), against the
faithful fake AML (tests/fakes/azure.py) and the real azure-identity and MLflow clients."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

import spark_tracking
from spark_tracking import hook, session
from spark_tracking.azure import link, store

from .conftest import AML_ID, SUB, arm_calls, log_model_is_refused_before_sending


def aml_uri(azure) -> str:
    return f"{azure.aml.url}/mlflow/v2.0{AML_ID}"


@pytest.fixture
def databricks_driver(monkeypatch):
    """What the Databricks Runtime sets in a driver's environment (docs/platform.md)."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")


# -- 1. the runtime's default URI ----------------------------------------------------------------


def test_the_runtimes_databricks_uri_does_not_hide_the_aml_link(linked, databricks_driver, capsys):
    cfg = spark_tracking.configure(strict=True)
    assert mlflow.get_tracking_uri() == aml_uri(linked)
    from spark_tracking.settings_cli import where

    assert where(cfg) == (
        f"{aml_uri(linked)} (the Azure ML workspace {AML_ID} named by aml_workspace_id (env "
        "SPARK_TRACKING_AML_WORKSPACE_ID), over 'databricks', the platform default "
        "(MLFLOW_TRACKING_URI set by the Databricks Runtime) (link from the cache in "
        f"{cfg.home}))"
    )


def test_without_a_link_the_runtimes_default_stays_and_says_why(databricks_driver):
    cfg = spark_tracking.configure(strict=True)
    assert os.environ["MLFLOW_TRACKING_URI"] == "databricks"
    assert session.current_choice().why == (
        "platform default (MLFLOW_TRACKING_URI set by the Databricks Runtime): Databricks-managed MLflow, "
        "because no tracking_uri and no Azure ML link is configured"
    )
    from spark_tracking.azure.doctor import Doctor

    step = Doctor(cfg).source()
    assert (step.status, step.detail) == (
        "WARN",
        "runs go to Databricks-managed MLflow: platform default "
        "(MLFLOW_TRACKING_URI set by the Databricks Runtime) and no Azure "
        "ML link is configured",
    )


def test_a_databricks_uri_the_user_exported_off_databricks_is_the_users_choice(linked, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    cfg = spark_tracking.configure(strict=True)
    assert (cfg.tracking_uri, cfg.sources["tracking_uri"]) == ("databricks", "env MLFLOW_TRACKING_URI")
    assert mlflow.get_tracking_uri() == "databricks"


# -- 2. AML-safe experiment names ------------------------------------------------------------------


def test_a_notebook_path_becomes_its_last_segment_against_aml(linked, monkeypatch, mlflow_server):
    monkeypatch.setenv("SPARK_TRACKING_NOTEBOOK_PATH", "/Users/ana@contoso.com/churn/train")
    spark_tracking.configure(strict=True)
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == "train"
    runs = []
    for _ in range(2):  # the second run finds the experiment again (a "/" name would not be found)
        with mlflow.start_run() as run:
            runs.append(run.info.experiment_id)
    assert runs[0] == runs[1]
    assert mlflow.MlflowClient(mlflow_server.uri).get_experiment(runs[0]).name == "train"


# -- 3. artifacts and models without azureml-mlflow --------------------------------------------------


def test_log_model_against_aml_fails_at_once_naming_the_cause_and_the_fix(linked):
    spark_tracking.configure(strict=True)
    with mlflow.start_run():
        log_model_is_refused_before_sending(linked)


def test_log_artifact_against_aml_without_azureml_mlflow_names_the_fix(linked, tmp_path):
    spark_tracking.configure(strict=True)
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with mlflow.start_run() as run:
        assert run.info.artifact_uri.startswith("azureml://")  # as AML hands them out
        with pytest.raises(Exception) as info:
            mlflow.log_artifact(str(path))
    assert "live behind Azure ML's artifact service, which only azureml-mlflow speaks" in str(info.value)
    assert "pip install 'spark-tracking[azureml]'" in str(info.value)


def test_with_azureml_mlflow_installed_the_session_uses_its_store(monkeypatch):
    monkeypatch.setattr(store, "azureml_mlflow_installed", lambda: True)
    found = link.Link(
        AML_ID, f"https://westeurope.api.azureml.ms/mlflow/v2.0{AML_ID}", "westeurope", "AzureCloud", "test"
    )
    assert store.for_link(found) == store.Store(
        f"spark-tracking-aml://azureml/westeurope.api.azureml.ms/mlflow/v2.0{AML_ID}", None
    )
    assert store.for_uri(found.tracking_uri) == store.for_link(found)  # a configured https URI too
    assert store.for_uri("http://127.0.0.1:5000") == store.Store("http://127.0.0.1:5000", None)


# -- 6. MLflow without request-auth plugins --------------------------------------------------------


def test_an_mlflow_without_request_auth_plugins_is_refused_with_the_reason(linked, monkeypatch, capsys):
    from spark_tracking._compat import mlflow as compat

    monkeypatch.setattr(compat, "installed_version", lambda: (2, 7, 1))
    spark_tracking.configure()
    err = capsys.readouterr().err
    assert (
        "the Azure ML link failed: MLflow 2.7.1 has no request-auth plugins (mlflow.request_auth_provider, "
        "MLflow >= 2.8)"
    ) in err
    assert "MLflow does not tell those which server a request goes to" in err
    assert "MLFLOW_TRACKING_AUTH" not in os.environ


# -- 7. the token goes to the linked host only ------------------------------------------------------


def test_another_mlflow_server_gets_no_azure_token(linked):
    spark_tracking.configure(strict=True)
    assert os.environ["MLFLOW_TRACKING_AUTH"] == "spark-tracking-azure"
    mlflow.MlflowClient(linked.plain.url).search_experiments(max_results=1)
    mlflow.MlflowClient().search_experiments(max_results=1)  # the linked store: signed
    assert linked.plain_requests, "the other server was asked"
    assert all("Authorization" not in headers for _, headers in linked.plain_requests)
    assert linked.rejected == []


# -- 10. AML details -----------------------------------------------------------------------------


def test_source_tags_are_set_after_aml_dropped_them_at_creation(linked, monkeypatch, mlflow_server):
    monkeypatch.setenv("SPARK_TRACKING_NOTEBOOK_PATH", "/Users/ana@contoso.com/churn/train")
    spark_tracking.configure(strict=True)
    with mlflow.start_run() as run:
        pass
    tags = mlflow.MlflowClient(mlflow_server.uri).get_run(run.info.run_id).data.tags
    assert tags["mlflow.source.name"] == "/Users/ana@contoso.com/churn/train"
    assert tags["mlflow.source.type"] == "NOTEBOOK"


def test_store_limits_name_amls_caps():
    assert store.limits_for(f"https://westeurope.api.azureml.ms/mlflow/v2.0{AML_ID}") == (250, 200)
    assert store.limits_for(store.lazy_uri("key")) == (250, 200)
    assert store.limits_for("http://127.0.0.1:5000") == (None, None)


def _over_the_limit(field: str, limit: int, size: int) -> str:
    return (
        f"A field of the entity is over the size limit. FieldName={field}, Limit={limit}, Size={size}. "
        "See https://aka.ms/azure-machine-learning-limits for service limits documentation."
    )


def test_the_fake_refuses_what_aml_refuses_and_the_driver_sees_it_at_the_call(linked):
    """The driver's own log calls go to the store as they are made: past AML's caps the call
    raises AML's own message, which names the field and the limit."""
    spark_tracking.configure(strict=True)
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("caps"))
    from mlflow.entities import Metric, Param

    with pytest.raises(Exception) as info:
        client.log_batch(run.info.run_id, metrics=[Metric("m", 1.0, 1, s) for s in range(251)])
    assert _over_the_limit("MetricV2Dto.Value/Count", 250, 251) in str(info.value)
    for start in range(0, 200, 100):
        client.log_batch(run.info.run_id, params=[Param(f"p{i}", "1") for i in range(start, start + 100)])
    with pytest.raises(Exception) as info:
        client.log_param(run.info.run_id, "p200", "1")
    assert str(info.value).startswith("INVALID_PARAMETER_VALUE: Response: {'Error'")
    assert _over_the_limit("Parameters", 200, 201) in str(info.value)
    assert len(client.get_run(run.info.run_id).data.params) == 200


def test_params_tasks_log_beyond_amls_cap_are_dropped_with_a_warning_not_the_batch(linked, tmp_path, caplog):
    """The driver's run holds 150 params; tasks forward 60 more and metrics in the same batch: the
    sink keeps the run at AML's 200, names what it dropped, and AML refuses nothing."""
    from mlflow.entities import Param

    from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission

    spark_tracking.configure(strict=True)
    uri = mlflow.get_tracking_uri()
    client = mlflow.MlflowClient(uri)
    rid = client.create_run(client.create_experiment("cap")).info.run_id
    for start in (0, 100):
        client.log_batch(rid, params=[Param(f"driver{i}", "d") for i in range(start, min(start + 100, 150))])
    limits = store.limits_for(uri)
    sink = Sink(
        client,
        uri,
        Spool(str(tmp_path / "spool"), 1 << 30),
        lambda stage: 1,
        sleep=lambda s: None,
        max_values_per_key=limits.max_values_per_key,
        max_params_per_run=limits.max_params_per_run,
    )
    metrics = [("loss", float(i), 1_700_000_000_000 + i, i) for i in range(5)]
    params = [(f"task{i:02d}", str(i)) for i in range(60)]
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], metrics, params))
    assert sink.flush(60) is True
    sink.stop()
    data = client.get_run(rid).data
    assert sorted(data.params) == sorted([f"driver{i}" for i in range(150)] + [f"task{i:02d}" for i in range(50)])
    assert [m.value for m in client.get_metric_history(rid, "loss")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sink.stats()["dropped"] == {"param_cap": 10}
    assert linked.rejected == []  # kept within the cap, not learned from AML's refusal
    assert (
        f"spark_tracking sink: run {rid} has 200 params, the most its store keeps in a run; dropped 10 "
        "param(s) that tasks logged: 'task50', 'task51', 'task52', 'task53', 'task54' and 5 more (counted in "
        "stats()['dropped']['param_cap']). Log fewer params per run, or put related values into one param."
    ) in caplog.text


# -- 9. interpreter start never waits on the network -----------------------------------------------


def test_interpreter_start_reads_files_only_and_mlflows_first_request_resolves_the_link(linked):
    session.configure(strict=True, resolve_link=False)  # what the startup hook does
    assert arm_calls(linked) == [] and linked.tokens_issued == 0
    assert mlflow.get_tracking_uri().startswith(store.LAZY_SCHEME + "://")
    mlflow.search_experiments(max_results=1)  # MLflow's first request resolves the link, once
    assert mlflow.get_tracking_uri() == aml_uri(linked)
    assert len(arm_calls(linked)) == 1
    session.configure(strict=True, resolve_link=False)  # a later process on the node: the cache
    assert mlflow.get_tracking_uri() == aml_uri(linked)
    assert len(arm_calls(linked)) == 1


def test_a_databricks_driver_follows_the_workspace_link_once_spark_is_up(
    azure, principal, workspace, databricks_driver, monkeypatch
):
    azure.add_databricks_workspace(
        SUB, "rg-dbx", "dbx", aml_workspace_id=workspace, workspace_url="adb-1.2.azuredatabricks.net"
    )
    tags = {}
    monkeypatch.setattr(link, "_spark_conf", lambda: tags)
    session.configure(strict=True, resolve_link=False)  # interpreter start: no Spark session yet
    assert mlflow.get_tracking_uri().startswith(store.LAZY_SCHEME + "://")  # not the local embedded store
    tags.update(
        {
            "spark.databricks.clusterUsageTags.azureSubscriptionId": SUB,
            "spark.databricks.workspaceUrl": "adb-1.2.azuredatabricks.net",
        }
    )  # the notebook's Spark is up
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    assert mlflow.get_tracking_uri() == aml_uri(azure)
    assert azure.rejected == [] and run.info.run_id


def test_the_hook_in_a_fresh_process_calls_no_azure_endpoint(linked, tmp_path):
    hook.enable()
    try:
        code = "import os; print(os.environ.get('MLFLOW_TRACKING_URI'))"
        before = list(linked.requests)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ)
        )
        assert out.stdout.strip().startswith(store.LAZY_SCHEME + "://link/"), out.stderr
        assert linked.requests == before  # Azure AD, ARM and AML untouched at interpreter start
    finally:
        hook.disable()


def test_the_model_registry_works_on_a_link_resolved_at_the_first_request(linked, mlflow_server):
    """MLflow takes the registry URI from the tracking URI: the session's own scheme needs a
    model registry store (else UnsupportedModelRegistryStoreURIException), which resolves the
    link and registers through AML's endpoint, signed like every other request."""
    session.configure(strict=True, resolve_link=False)
    assert mlflow.get_tracking_uri().startswith(store.LAZY_SCHEME + "://")
    client = mlflow.MlflowClient()
    client.create_registered_model("churn-model")
    assert [m.name for m in client.search_registered_models()] == ["churn-model"]
    assert mlflow.MlflowClient(mlflow_server.uri).get_registered_model("churn-model").name == "churn-model"
    assert linked.rejected == []
    created = [path for kind, _method, path in linked.requests if kind == "aml" and path.endswith("/create")]
    assert any(path.endswith("/api/2.0/mlflow/registered-models/create") for path in created)
