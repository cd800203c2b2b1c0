"""Which AML workspace a session logs to, from each source, and the errors when it cannot."""

from __future__ import annotations

import os

import mlflow
import pytest

import spark_tracking
from spark_tracking.azure import AUTH_NAME, AzureLinkError, link
from spark_tracking.config import Config

from .conftest import GROUP, NAME, SECRET, SUB, arm_calls, write_aml_config

AML_ID = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{NAME}"
DBX_ID = f"/subscriptions/{SUB}/resourceGroups/rg-dbx/providers/Microsoft.Databricks/workspaces/dbx"


def aml_uri(azure) -> str:
    return f"{azure.aml.url}/mlflow/v2.0{AML_ID}"


def logs_a_run_through_aml(azure, mlflow_server, experiment: str) -> None:
    """The session logs to the AML endpoint, with valid tokens, and the points are in the store."""
    assert mlflow.get_tracking_uri() == aml_uri(azure)
    assert os.environ["MLFLOW_TRACKING_AUTH"] == AUTH_NAME
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    store = mlflow.MlflowClient(mlflow_server.uri)
    history = sorted((m.step, m.value) for m in store.get_metric_history(run.info.run_id, "loss"))
    assert history == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert azure.rejected == []
    assert azure.store_accepted >= 5


def test_workspace_id_from_the_environment(azure, principal, workspace, mlflow_server, monkeypatch):
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    assert spark_tracking.configure(strict=True) is not None
    logs_a_run_through_aml(azure, mlflow_server, "link-from-env")


def test_subscription_group_and_name_as_arguments(azure, principal, workspace, mlflow_server):
    spark_tracking.configure(strict=True, subscription_id=SUB, resource_group=GROUP, workspace_name=NAME)
    logs_a_run_through_aml(azure, mlflow_server, "link-from-arguments")


def test_aml_config_json_in_a_parent_folder(azure, principal, workspace, mlflow_server, tmp_path, monkeypatch):
    (tmp_path / ".azureml").mkdir()
    write_aml_config(tmp_path / ".azureml")
    notebook_dir = tmp_path / "project" / "notebooks"
    notebook_dir.mkdir(parents=True)
    monkeypatch.chdir(notebook_dir)
    spark_tracking.configure(strict=True)
    logs_a_run_through_aml(azure, mlflow_server, "link-from-config-json")


def test_the_databricks_workspace_link(azure, principal, workspace, mlflow_server, monkeypatch):
    azure.add_databricks_workspace(SUB, "rg-dbx", "dbx", aml_workspace_id=workspace)
    monkeypatch.setenv("DATABRICKS_AZURE_RESOURCE_ID", DBX_ID)  # databricks-sdk's variable
    spark_tracking.configure(strict=True)
    logs_a_run_through_aml(azure, mlflow_server, "link-from-databricks")
    assert arm_calls(azure)[:2] == [DBX_ID, AML_ID]


def test_the_databricks_workspace_found_from_cluster_tags(azure, principal, workspace):
    azure.add_databricks_workspace(
        SUB, "rg-dbx", "other", aml_workspace_id=None, workspace_url="adb-1.1.azuredatabricks.net"
    )
    azure.add_databricks_workspace(
        SUB, "rg-dbx", "dbx", aml_workspace_id=workspace, workspace_url="adb-2.2.azuredatabricks.net"
    )
    tags = {
        "spark.databricks.clusterUsageTags.azureSubscriptionId": SUB,
        "spark.databricks.workspaceUrl": "adb-2.2.azuredatabricks.net",
    }
    found = link.resolve(Config.resolve(), spark_conf=tags)
    assert (found.workspace_id, found.region, found.source) == (
        AML_ID,
        "westeurope",
        "the Databricks workspace's link (cluster tags)",
    )
    assert found.tracking_uri == aml_uri(azure)


def test_an_explicit_id_wins_over_config_json(azure, principal, workspace, tmp_path):
    other = azure.add_aml_workspace(SUB, GROUP, "other-ws")
    write_aml_config(tmp_path)
    found = link.resolve(Config.resolve({"aml_workspace_id": other}))
    assert found.workspace_id == other
    assert found.source == "aml_workspace_id (argument)"


def test_region_from_arm_when_it_reports_no_tracking_uri(azure, principal):
    rid = azure.add_aml_workspace(SUB, GROUP, "old-ws", location="North Europe", report_tracking_uri=False)
    found = link.resolve(Config.resolve({"aml_workspace_id": rid}))
    assert found.tracking_uri == f"https://northeurope.api.azureml.ms/mlflow/v2.0{rid}"


def test_a_resolved_link_is_reused_by_later_sessions_without_arm(azure, principal, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    spark_tracking.configure(strict=True)
    calls = len(arm_calls(azure))
    assert calls == 1
    spark_tracking.configure(strict=True)
    assert len(arm_calls(azure)) == calls
    assert mlflow.get_tracking_uri() == aml_uri(azure)
    cached = (tmp_path / "home" / ".spark_tracking" / "aml-link.json").read_text()
    assert workspace in cached
    assert SECRET not in cached and "eyJ" not in cached  # ids and URLs only: no secret, no token


def test_an_azureml_uri_is_spoken_as_https_without_azureml_mlflow(azure, principal, workspace, mlflow_server):
    host = azure.aml.url.removeprefix("https://")
    spark_tracking.configure(strict=True, tracking_uri=f"azureml://{host}/mlflow/v2.0{AML_ID}")
    logs_a_run_through_aml(azure, mlflow_server, "link-from-azureml-uri")
    assert arm_calls(azure) == []  # a given tracking URI needs no ARM


def test_a_plain_mlflow_server_gets_no_azure_auth(mlflow_server):
    spark_tracking.configure(strict=True, tracking_uri=mlflow_server.uri)
    assert "MLFLOW_TRACKING_AUTH" not in os.environ


# -- errors ------------------------------------------------------------------------------------


def resolve_error(**settings) -> str:
    with pytest.raises(AzureLinkError) as info:
        link.resolve(Config.resolve(settings), use_cache=False)
    return str(info.value)


def test_a_wrong_workspace_id(azure, principal, workspace):
    wrong = AML_ID.replace(NAME, "ws-typo")
    assert resolve_error(aml_workspace_id=wrong) == (
        f"Azure ML workspace {wrong} was not found (HTTP 404 ResourceNotFound: The Resource "
        "'Microsoft.MachineLearningServices/workspaces/ws-typo' was not found.). Check the workspace id from "
        "aml_workspace_id (argument): subscription, resource group and name must match the workspace's "
        "'Resource ID' in the Azure portal"
    )


def test_a_malformed_workspace_id():
    assert resolve_error(aml_workspace_id="ws-ml") == (
        "aml_workspace_id='ws-ml' is not an ARM id of a Microsoft.MachineLearningServices/workspaces resource; "
        "expected /subscriptions/<subscription id>/resourceGroups/<group>/providers/"
        "Microsoft.MachineLearningServices/workspaces/<name> (the 'Resource ID' on the resource's Properties "
        "page in the Azure portal)"
    )


def test_an_incomplete_set_of_parts():
    assert resolve_error(subscription_id=SUB, workspace_name=NAME) == (
        "subscription_id (argument), workspace_name (argument) set but resource_group not: set all three "
        "(SPARK_TRACKING_SUBSCRIPTION_ID, SPARK_TRACKING_RESOURCE_GROUP, SPARK_TRACKING_WORKSPACE_NAME) or "
        "aml_workspace_id"
    )


def test_a_databricks_workspace_without_a_link(azure, principal):
    azure.add_databricks_workspace(SUB, "rg-dbx", "dbx", aml_workspace_id=None)
    assert resolve_error(databricks_resource_id=DBX_ID) == (
        f"Databricks workspace {DBX_ID} has no linked Azure ML workspace (properties.parameters.amlWorkspaceId "
        "is empty). Link one on the Databricks workspace's overview page in the Azure portal ('Link Azure ML "
        "workspace'), or name the workspace with SPARK_TRACKING_AML_WORKSPACE_ID or 'spark-tracking link "
        "--workspace-id ID'"
    )


def test_no_source_at_all():
    assert resolve_error().startswith("no Azure ML workspace is named: set SPARK_TRACKING_AML_WORKSPACE_ID")


def test_a_principal_without_read_permission(azure, principal, workspace):
    azure.arm_grants.clear()
    message = resolve_error(aml_workspace_id=workspace)
    assert message == (
        f"ARM refused to let the identity appid={principal.client_id}, oid={principal.object_id}, "
        f"tid=72f988bf-0000-4000-8000-000000000001 read Azure ML workspace {workspace} (HTTP 403 "
        f"AuthorizationFailed: The client '{principal.client_id}' with object id '{principal.object_id}' does not "
        f"have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/read' over scope "
        f"'{workspace}' or the scope is invalid.). Grant it the Reader role on that resource (or a role with "
        "*/read on it), and check that AZURE_TENANT_ID is the tenant of the subscription"
    )


def test_a_wrong_client_secret_names_every_source_tried_and_the_fix(azure, principal, workspace, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    message = resolve_error(aml_workspace_id=workspace, azure_credential="service_principal")
    assert message.startswith(
        "no Azure AD token for https://management.azure.com/.default (azure_credential=service_principal): "
    )
    assert "AADSTS7000215: Invalid client secret provided." in message
    assert message.endswith(
        "Sources tried (only this one) and how to make each work:\n"
        "  - service principal from the environment: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET "
        "(or AZURE_CLIENT_CERTIFICATE_PATH); on a cluster as environment variables from a secret scope, e.g. "
        "AZURE_CLIENT_SECRET={{secrets/<scope>/azure-client-secret}} ('spark-tracking install' writes them)"
    )
    assert "not-the-secret" not in message


def test_a_missing_service_principal(azure, workspace):
    message = resolve_error(aml_workspace_id=workspace, azure_credential="service_principal")
    assert "EnvironmentCredential authentication unavailable" in message
    assert "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET" in message


def test_an_unreachable_arm(azure, principal, workspace, monkeypatch):
    from conftest import free_port

    closed = f"https://127.0.0.1:{free_port()}"
    message = resolve_error(aml_workspace_id=workspace, azure_arm_endpoint=closed)
    assert message.startswith(
        f"Azure Resource Manager at {closed} is unreachable while reading Azure ML "
        f"workspace {workspace}: ConnectionError: "
    )
    assert message.endswith(
        "Check this machine's network and proxy settings, and that azure_cloud "
        "(SPARK_TRACKING_AZURE_CLOUD) names the workspace's cloud"
    )


def test_a_failed_link_keeps_runs_in_the_embedded_store_and_says_so(
    azure, principal, workspace, capsys, monkeypatch, tmp_path
):
    """A wrong client secret: the session neither stops nor scatters runs into MLflow's default
    (./mlflow.db in the working directory); it logs to the embedded store at its known home,
    says so on stderr (the notebook cell's output) and doctor reports it with the fix."""
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    embedded = f"sqlite:///{tmp_path}/home/.spark_tracking/mlflow.db"
    assert spark_tracking.configure() is not None
    assert mlflow.get_tracking_uri() == embedded
    err = capsys.readouterr().err
    assert (
        "spark_tracking: the Azure ML link failed: no Azure AD token for https://management.azure.com/.default" in err
    )
    assert "AADSTS7000215: Invalid client secret provided." in err
    assert (
        f"spark_tracking: runs of this session go to the embedded store {embedded} (this machine's disk), not to "
        f"Azure ML. Fix the link (spark-tracking doctor checks each step), then move them: "
        f"spark-tracking move-runs --from {embedded}"
    ) in err
    assert "not-the-secret" not in err
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.5)
    assert mlflow.MlflowClient(embedded).get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    from spark_tracking.azure.doctor import doctor

    lines = []
    doctor(emit=lines.append)
    fallback = next(line for line in lines if line.startswith("[WARN] fallback:"))
    assert "could not use the Azure ML link (no Azure AD token" in fallback
    assert f"fix: fix the link (the steps below), then: spark-tracking move-runs --from {embedded}" in fallback


def test_the_init_script_check_names_the_link_source_without_network():
    from spark_tracking.install.node import check

    info, errors = check({"DATABRICKS_AZURE_RESOURCE_ID": DBX_ID})
    assert errors == []
    assert info[0] == (
        "runs go to the Azure ML workspace named by the Databricks workspace's link (databricks-sdk "
        "configuration); each driver session resolves it through ARM (check with: spark-tracking doctor)"
    )
    info, errors = check({"SPARK_TRACKING_AML_WORKSPACE_ID": "ws-ml"})
    assert errors == [
        "aml_workspace_id='ws-ml' is not an ARM id of a Microsoft.MachineLearningServices/workspaces resource; "
        "expected /subscriptions/<subscription id>/resourceGroups/<group>/providers/"
        "Microsoft.MachineLearningServices/workspaces/<name> (the 'Resource ID' on the resource's Properties "
        "page in the Azure portal)"
    ]


def test_portal_urls_for_each_kind_of_store(sqlite_uri, mlflow_server):
    from spark_tracking import get_portal_url

    for uri, base in ((sqlite_uri, "http://127.0.0.1:5000"), (mlflow_server.uri, mlflow_server.uri)):
        client = mlflow.MlflowClient(uri)
        experiment = client.create_experiment(f"portal-{len(base)}-{os.getpid()}") if uri == sqlite_uri else "0"
        run = client.create_run(experiment)
        assert get_portal_url(run.info.run_id, uri) == f"{base}/#/experiments/{experiment}/runs/{run.info.run_id}"
    wsid = f"?wsid=/subscriptions/{SUB}/resourcegroups/{GROUP}/workspaces/{NAME}"
    assert get_portal_url("r1", f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{AML_ID}") == (
        "https://ml.azure.com/runs/r1" + wsid
    )
    assert get_portal_url("r1", f"https://chinaeast2.api.ml.azure.cn/mlflow/v1.0{AML_ID}") == (
        "https://studio.ml.azure.cn/runs/r1" + wsid
    )


def test_a_service_principal_with_a_certificate(azure, workspace, mlflow_server, tmp_path, monkeypatch):
    import trustme

    rsa = trustme.CA(key_type=trustme.KeyType.RSA)  # azure-identity signs assertions with RS256
    issued = rsa.issue_cert("spark-tracking-cert-sp", key_type=trustme.KeyType.RSA)
    pem = tmp_path / "sp.pem"  # what a cluster mounts from a secret: the key and the certificate
    pem.write_bytes(issued.private_key_pem.bytes() + issued.cert_chain_pems[0].bytes())
    sp = azure.add_principal(client_id="cert-sp", secret=None, certificate=issued.cert_chain_pems[0].bytes())
    azure.grant(sp)
    monkeypatch.setenv("AZURE_TENANT_ID", "72f988bf-0000-4000-8000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "cert-sp")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(pem))
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    spark_tracking.configure(strict=True, azure_credential="service_principal")
    logs_a_run_through_aml(azure, mlflow_server, "link-with-certificate")
    other = rsa.issue_cert(
        "someone-else", key_type=trustme.KeyType.RSA
    )  # a key Azure AD does not know for this principal
    pem.write_bytes(other.private_key_pem.bytes() + other.cert_chain_pems[0].bytes())
    from spark_tracking.azure import credentials

    credentials.reset()
    assert "AADSTS700027: Client assertion contains an invalid signature." in resolve_error(
        aml_workspace_id=workspace, azure_credential="service_principal"
    )
    credentials.reset()
    pem.write_bytes(b"not a certificate")
    assert resolve_error(aml_workspace_id=workspace, azure_credential="service_principal").startswith(
        "no Azure AD token for https://management.azure.com/.default (azure_credential=service_principal): "
    )


def test_a_token_arm_does_not_accept(tmp_path, mlflow_server, principal, monkeypatch):
    from fakes.azure import FakeAzure

    # ARM of another cloud: the token (audience management.azure.com) is refused with 401
    with FakeAzure(tmp_path, mlflow_server.uri, audience="https://management.usgovcloudapi.net") as gov:
        sp = gov.add_principal(client_id=principal.client_id, secret=SECRET)
        gov.grant(sp)
        rid = gov.add_aml_workspace(SUB, GROUP, NAME)
        for key, value in gov.env().items():
            monkeypatch.setenv(key, value)
        message = resolve_error(aml_workspace_id=rid)
    assert message.startswith(f"ARM did not accept the token of the identity appid={principal.client_id}, ")
    assert message.endswith(
        f"reading Azure ML workspace {rid} (HTTP 401 InvalidAuthenticationToken: invalid token: "
        "Audience doesn't match). Check that azure_cloud (SPARK_TRACKING_AZURE_CLOUD) is the "
        "workspace's cloud and AZURE_TENANT_ID the tenant of the subscription"
    )


# -- sovereign clouds: the cloud follows the AML host / ARM endpoint ---------------------------------

SOVEREIGN = [
    ("usgovvirginia", "usgovvirginia.api.ml.azure.us", "AzureUSGovernment", "https://management.usgovcloudapi.net"),
    ("chinaeast2", "chinaeast2.api.ml.azure.cn", "AzureChinaCloud", "https://management.chinacloudapi.cn"),
]


@pytest.mark.parametrize("region, host, cloud, arm", SOVEREIGN)
def test_the_cloud_of_a_sovereign_workspace_is_the_cloud_of_its_aml_host(
    azure, principal, region, host, cloud, arm, tmp_path, capsys
):
    """ARM reports a US Government or China AML host: the link records that cloud, so sessions
    sign with its token scope, and `spark-tracking link` bakes it into the config file."""
    from spark_tracking.azure import mlflow_auth
    from spark_tracking.cli import main
    from spark_tracking.config import read_config_file

    rid = azure.add_aml_workspace(SUB, GROUP, f"ws-{region}", location=region, aml_host=host)
    found = link.resolve(Config.resolve({"aml_workspace_id": rid}), use_cache=False)
    assert (found.cloud, found.tracking_uri) == (cloud, f"https://{host}/mlflow/v2.0{rid}")
    config_file = tmp_path / "st-config.json"
    assert main(["link", "--workspace-id", rid, "--config-file", str(config_file)]) == 0
    assert read_config_file(str(config_file))["azure_cloud"] == cloud
    # a session linked to that host asks for that cloud's scope (no cloud named anywhere)
    chosen = mlflow_auth.session_cloud(Config.resolve({}), hosts=lambda: frozenset({host}))
    assert chosen.arm_scope == f"{arm}/.default"
    assert mlflow_auth.session_cloud(Config.resolve({"azure_cloud": "AzureCloud"}), hosts=lambda: {host}).name == (
        "AzureCloud"
    )  # a cloud a source names wins


@pytest.mark.parametrize("region, host, cloud, arm", SOVEREIGN)
def test_the_cloud_is_inferred_from_the_arm_endpoint_or_the_tracking_uri(region, host, cloud, arm):
    from spark_tracking.azure import clouds

    assert clouds.infer(Config.resolve({"azure_arm_endpoint": arm + "/"}))[0].name == cloud
    assert clouds.infer(Config.resolve({"tracking_uri": f"azureml://{host}/mlflow/v2.0{AML_ID}"}))[0].name == cloud
    assert clouds.infer(Config.resolve({}))[0].name == "AzureCloud"
    assert clouds.infer(Config.resolve({"azure_arm_endpoint": arm, "azure_cloud": "AzureCloud"}))[0].name == (
        "AzureCloud"
    )
    from spark_tracking.azure.credentials import provider_for_config

    assert provider_for_config(Config.resolve({"azure_arm_endpoint": arm})).scope == f"{arm}/.default"
