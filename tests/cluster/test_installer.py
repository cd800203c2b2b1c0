"""``spark-tracking install`` / ``uninstall`` with the real databricks-sdk against a fake
Databricks REST API on 127.0.0.1 that records every request and holds the cluster state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spark_tracking.cli import main
from spark_tracking.install import plan as p

from .conftest import INIT_SCRIPT, Node

SECRET = "sp-secret-value-never-printed"
CLUSTER = "0123-456789-abcdefgh"
TARGET = "/Volumes/main/default/libs/spark_tracking"
AML_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/central"
)
ORIGINAL = {
    "spark_env_vars": {"TEAM": "ml"},
    "init_scripts": [{"workspace": {"destination": "/Shared/other-init.sh"}}],
    "spark_conf": {"spark.speculation": "false"},
}


@pytest.fixture
def fake(databricks_api):
    databricks_api.add_cluster(CLUSTER, **json.loads(json.dumps(ORIGINAL)))
    return databricks_api


def _install(wheel, *extra: str, target: str | None = TARGET) -> list[str]:
    args = ["install", "--cluster-id", CLUSTER, "--wheel", str(wheel)]
    return args + (["--target", target] if target else []) + list(extra)


def _full(wheel) -> list[str]:
    return _install(
        wheel,
        "--aml-workspace-id",
        AML_ID,
        "--tenant-id",
        "tenant-guid",
        "--client-id",
        "client-guid",
        "--spark-conf",
        "rate_limit=40",
    )


def _expected_spec(wheel) -> dict:
    spec = json.loads(json.dumps(ORIGINAL))
    spec["init_scripts"].append({"volumes": {"destination": f"{TARGET}/spark-tracking-init.sh"}})
    spec["spark_env_vars"].update(
        {
            "SPARK_TRACKING_WHEEL": f"{TARGET}/{wheel.name}",
            "SPARK_TRACKING_AML_WORKSPACE_ID": AML_ID,
            "AZURE_TENANT_ID": "{{secrets/spark-tracking/azure-tenant-id}}",
            "AZURE_CLIENT_ID": "{{secrets/spark-tracking/azure-client-id}}",
            "AZURE_CLIENT_SECRET": "{{secrets/spark-tracking/azure-client-secret}}",
            "SPARK_TRACKING_RELAY_SECRET": "{{secrets/spark-tracking/relay-secret}}",
        }
    )
    spec["spark_conf"]["spark.sparktracking.rate_limit"] = "40"
    return spec


def test_install_uploads_stores_secrets_and_sets_the_spec(fake, wheel, capsys, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    assert main(_full(wheel)) == 0
    out = capsys.readouterr()
    assert p.managed(fake.cluster(CLUSTER)) == _expected_spec(wheel)
    assert fake.cluster(CLUSTER)["state"] == "TERMINATED"
    assert fake.state.files[f"{TARGET}/{wheel.name}"] == wheel.read_bytes()
    # the uploaded copy carries the non-secret settings (standard access mode passes no cluster variable)
    assert fake.state.files[f"{TARGET}/spark-tracking-init.sh"] == p.bake_init_script(
        INIT_SCRIPT.read_bytes(), _expected_spec(wheel)["spark_env_vars"]
    )
    relay_secret = fake.state.scopes["spark-tracking"].pop("relay-secret")
    assert re.fullmatch(rb"[0-9a-f]{64}", relay_secret)  # random, made by install, kept in the scope only
    assert fake.state.scopes["spark-tracking"] == {
        "azure-tenant-id": b"tenant-guid",
        "azure-client-id": b"client-guid",
        "azure-client-secret": SECRET.encode(),
    }
    assert relay_secret.decode() not in out.out + out.err
    assert f"uploading {wheel.name}: 100%" in out.err
    assert "install: done" in out.out
    assert SECRET not in out.out + out.err


def test_a_second_install_changes_nothing(fake, wheel, capsys, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    assert main(_full(wheel)) == 0
    spec = fake.cluster(CLUSTER)
    fake.clear_requests()
    assert main(_full(wheel)) == 0
    assert fake.mutations() == []
    assert fake.cluster(CLUSTER) == spec
    out = capsys.readouterr().out
    assert "install: already done, nothing changed" in out
    # the scope's keys are listed; no value is asked for (secrets/get is for notebooks only)
    assert [r.path for r in fake.requests if r.path.startswith("/api/2.0/secrets/get")] == []
    assert "already holds azure-tenant-id, azure-client-id, azure-client-secret: kept" in out
    assert "--replace-secrets" in out
    # the same without --target or settings: the earlier install is found and kept
    assert main(_install(wheel, target=None)) == 0
    assert fake.mutations() == []


def test_the_fake_refuses_to_read_secret_values_as_databricks_does(fake):
    """databricks-sdk ``SecretsAPI.get_secret``: BAD_REQUEST when called outside a notebook."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import BadRequest

    ws = WorkspaceClient(host=fake.host, token=fake.token)
    ws.secrets.create_scope("s")
    ws.secrets.put_secret("s", "k", string_value="v")
    with pytest.raises(BadRequest):
        ws.secrets.get_secret("s", "k")
    assert [s.key for s in ws.secrets.list_secrets("s")] == ["k"]


def _secret_puts(fake) -> list[str]:
    return [r.body["key"] for r in fake.mutations() if r.path == "/api/2.0/secrets/put"]


def test_replace_secrets_stores_a_new_service_principal(fake, wheel, capsys, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    assert main(_full(wheel)) == 0
    fake.clear_requests()
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "rotated-secret")
    assert main(_full(wheel)) == 0  # without --replace-secrets: kept, and the output says how to replace them
    assert _secret_puts(fake) == []
    assert fake.state.scopes["spark-tracking"]["azure-client-secret"] == SECRET.encode()
    assert main(_full(wheel) + ["--replace-secrets"]) == 0
    assert _secret_puts(fake) == ["azure-tenant-id", "azure-client-id", "azure-client-secret"]
    assert fake.state.scopes["spark-tracking"]["azure-client-secret"] == b"rotated-secret"
    assert "rotated-secret" not in "".join(capsys.readouterr())


def test_a_missing_key_writes_the_whole_service_principal(fake, wheel, monkeypatch):
    """The scope never mixes two service principals: one key missing, all three are written."""
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    assert main(_full(wheel)) == 0
    del fake.state.scopes["spark-tracking"]["azure-client-secret"]
    fake.clear_requests()
    assert main(_full(wheel)) == 0
    assert _secret_puts(fake) == ["azure-tenant-id", "azure-client-id", "azure-client-secret"]


def test_dry_run_prints_the_exact_change_and_mutates_nothing(fake, wheel, capsys, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    assert main(_full(wheel) + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert fake.mutations() == []
    assert p.managed(fake.cluster(CLUSTER)) == ORIGINAL
    diff = out[out.index("--- cluster") :]
    assert f'+    "SPARK_TRACKING_WHEEL": "{TARGET}/{wheel.name}",' in diff
    assert '+    "AZURE_CLIENT_SECRET": "{{secrets/spark-tracking/azure-client-secret}}",' in diff
    assert f'+        "destination": "{TARGET}/spark-tracking-init.sh"' in diff
    assert (
        '+    "spark.sparktracking.rate_limit": "40",' in diff or '+    "spark.sparktracking.rate_limit": "40"' in diff
    )
    assert "dry run: nothing changed (9 step(s) would run)" in out
    assert "spark-tracking/relay-secret (random, for SPARK_TRACKING_RELAY_SECRET; value not shown)" in out
    assert SECRET not in out


def test_uninstall_brings_back_the_original_spec(fake, wheel, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    assert main(_full(wheel)) == 0
    assert main(["uninstall", "--cluster-id", CLUSTER]) == 0
    assert p.managed(fake.cluster(CLUSTER)) == ORIGINAL
    fake.clear_requests()
    assert main(["uninstall", "--cluster-id", CLUSTER]) == 0
    assert fake.mutations() == []


def test_a_running_cluster_is_only_restarted_with_consent(fake, wheel, capsys):
    fake.state.clusters[CLUSTER]["state"] = "RUNNING"
    assert main(_install(wheel)) == 2
    err = capsys.readouterr().err
    assert f"cluster {CLUSTER} is RUNNING" in err and "--restart" in err
    assert [r.path for r in fake.mutations()] == []
    assert main(_install(wheel, "--restart")) == 0
    assert fake.state.restarts == {CLUSTER: 1}
    assert p.managed(fake.cluster(CLUSTER))["spark_env_vars"]["SPARK_TRACKING_WHEEL"] == f"{TARGET}/{wheel.name}"


def test_restart_starts_a_terminated_cluster(fake, wheel):
    assert main(_install(wheel, "--restart")) == 0
    assert fake.cluster(CLUSTER)["state"] == "RUNNING"


def test_a_workspace_folder_target(fake, wheel):
    assert main(_install(wheel, target="/Workspace/Shared/spark_tracking")) == 0
    spec = fake.cluster(CLUSTER)
    assert spec["init_scripts"][-1] == {"workspace": {"destination": "/Shared/spark_tracking/spark-tracking-init.sh"}}
    assert spec["spark_env_vars"]["SPARK_TRACKING_WHEEL"] == f"/Workspace/Shared/spark_tracking/{wheel.name}"
    assert fake.state.workspace[f"/Shared/spark_tracking/{wheel.name}"] == wheel.read_bytes()
    fake.clear_requests()
    assert main(_install(wheel, target="/Workspace/Shared/spark_tracking")) == 0
    assert fake.mutations() == []


def _print_policy(wheel, *extra: str) -> list[str]:
    return [
        "install",
        "--target",
        TARGET,
        "--wheel",
        str(wheel),
        "--aml-workspace-id",
        AML_ID,
        "--print-policy",
        *extra,
    ]


def test_print_policy_uploads_the_files_baked_with_the_policys_own_values(fake, wheel, capsys):
    """Job clusters (which install cannot edit) and policy-managed clusters get the init script
    the policy names, carrying the policy's settings; no cluster is touched."""
    assert main(_print_policy(wheel)) == 0
    out = capsys.readouterr().out
    policy = json.loads(out.split("# cluster JSON")[0].split("\n", 1)[1])
    assert policy["init_scripts.0.volumes.destination"] == {
        "type": "fixed",
        "value": f"{TARGET}/spark-tracking-init.sh",
    }
    assert policy["spark_env_vars.SPARK_TRACKING_AML_WORKSPACE_ID"] == {"type": "fixed", "value": AML_ID}
    env = {k.split(".", 1)[1]: v["value"] for k, v in policy.items() if k.startswith("spark_env_vars.")}
    assert env["SPARK_TRACKING_WHEEL"] == f"{TARGET}/{wheel.name}"
    assert fake.state.files[f"{TARGET}/spark-tracking-init.sh"] == p.bake_init_script(INIT_SCRIPT.read_bytes(), env)
    assert fake.state.files[f"{TARGET}/{wheel.name}"] == wheel.read_bytes()
    assert set(fake.state.scopes["spark-tracking"]) == {"relay-secret"}  # the policy refers to it
    assert p.managed(fake.cluster(CLUSTER)) == ORIGINAL
    fake.clear_requests()
    assert main(_print_policy(wheel)) == 0
    assert fake.mutations() == []
    assert "files: already in place, nothing changed" in capsys.readouterr().err


def test_print_policy_dry_run_uploads_nothing(fake, wheel, capsys):
    assert main(_print_policy(wheel, "--dry-run")) == 0
    captured = capsys.readouterr()
    assert fake.mutations() == []
    assert f"upload   {TARGET}/spark-tracking-init.sh" in captured.err
    assert json.loads(captured.out.split("# cluster JSON")[0].split("\n", 1)[1])


def test_an_unbaked_init_script_logs_what_is_missing(node):
    """A copy of the script nobody baked (uploaded by hand) on a standard-access node, where no
    cluster variable reaches it: the log names what is missing and the command that fixes it."""
    done = node.run_init(standard_access=True, SPARK_TRACKING_WHEEL="/Volumes/x/y/z/w.whl")
    assert done.returncode == 0, done.stderr
    log = node.log_file.read_text()
    assert "this copy of the init script has no settings baked in" in log
    assert "missing here: SPARK_TRACKING_WHEEL (the wheel to install); a store (SPARK_TRACKING_AML_WORKSPACE_ID" in log
    assert "spark-tracking install --print-policy --target <folder>" in log


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "colour=blue"], "--set 'colour': not a setting the cluster can carry"),
        (["--set", "relay_port=eighty"], "--set relay_port='eighty' is not a valid int"),
        (["--client-id", "c", "--tenant-id", "t"], "missing: $AZURE_CLIENT_SECRET"),
        (["--set", "tracking_uri=https://me:hunter2@mlflow.corp"], "the value holds credentials"),
    ],
)
def test_bad_options_are_refused_before_any_change(fake, wheel, capsys, extra, message):
    assert main(_install(wheel, *extra)) == 2
    assert message in capsys.readouterr().err
    assert fake.mutations() == []


def test_first_install_needs_a_target(fake, wheel, capsys):
    assert main(_install(wheel, target=None)) == 2
    assert "--target is required for a first install" in capsys.readouterr().err


def test_what_install_puts_on_the_cluster_configures_a_node(fake, wheel, tmp_path, runtime_site, monkeypatch):
    """End to end: the uploaded files and the cluster's env vars drive the init script on a node."""
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    central = f"sqlite:///{tmp_path / 'central.db'}"
    assert main(_install(wheel, "--set", f"tracking_uri={central}", "--tenant-id", "t", "--client-id", "c")) == 0
    volume = tmp_path / "Volumes"  # the node's view of /Volumes
    for path, data in fake.state.files.items():
        local = volume / path[len("/Volumes/") :]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    script = volume / TARGET[len("/Volumes/") :] / "spark-tracking-init.sh"
    env = {}
    for name, value in fake.cluster(CLUSTER)["spark_env_vars"].items():
        ref = re.fullmatch(r"\{\{secrets/([^/]+)/([^/]+)\}\}", value)  # Databricks resolves these
        env[name] = fake.state.scopes[ref.group(1)][ref.group(2)].decode() if ref else value
    env["SPARK_TRACKING_WHEEL"] = str(volume / env["SPARK_TRACKING_WHEEL"][len("/Volumes/") :])
    home = tmp_path / "node-home"
    home.mkdir()
    node = Node(tmp_path / "node", runtime_site, home)
    node_script = node.root / "init.sh"
    node_script.parent.mkdir(parents=True, exist_ok=True)
    node_script.write_bytes(script.read_bytes())
    import subprocess

    full = node.base_env()
    full.update(env, SPARK_TRACKING_INIT_ROOT=str(node.root), DB_IS_DRIVER="TRUE")
    out = subprocess.run(["bash", str(node_script)], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"runs go to {central}" in out.stdout and SECRET not in out.stdout + node.log_file.read_text()
    fresh = node.python_run("import os; print(os.environ['MLFLOW_TRACKING_URI'])")
    assert fresh.stdout.strip() == central


# -- the pure plan ---------------------------------------------------------------------------------


def _opts(**kw) -> p.InstallOptions:
    base = dict(target=p.parse_target(TARGET), wheel_name="spark_tracking-0.1.0-py3-none-any.whl")
    base.update(kw)
    return p.InstallOptions(**base)


@pytest.mark.parametrize("spec", [{}, ORIGINAL, {"spark_env_vars": {"AZURE_CLIENT_ID": "own-value"}}])
def test_uninstall_undoes_install(spec):
    opts = _opts(settings={"experiment_name": "/Shared/x"}, spark_conf={"aggregate": "false"}, service_principal=True)
    after = p.apply_install(spec, opts)
    assert p.apply_install({**spec, **after}, opts) == after  # idempotent
    if "AZURE_CLIENT_ID" not in spec.get("spark_env_vars", {}):
        assert p.apply_uninstall(after) == p.managed(spec)


def test_an_earlier_install_elsewhere_is_replaced_not_duplicated():
    old = p.apply_install({}, _opts(target=p.parse_target("/Workspace/Shared/old")))
    new = p.apply_install(old, _opts())
    assert new["init_scripts"] == [{"volumes": {"destination": f"{TARGET}/spark-tracking-init.sh"}}]


@pytest.mark.parametrize(
    "text, kind, node_path",
    [
        ("/Volumes/c/s/v", "volumes", "/Volumes/c/s/v/x.whl"),
        ("/Workspace/Shared/st/", "workspace", "/Workspace/Shared/st/x.whl"),
        ("/Users/me@corp.com/st", "workspace", "/Workspace/Users/me@corp.com/st/x.whl"),
    ],
)
def test_targets(text, kind, node_path):
    target = p.parse_target(text)
    assert (target.kind, target.node_path("x.whl")) == (kind, node_path)


@pytest.mark.parametrize("text", ["/Volumes/c/s", "dbfs:/FileStore/x", "/tmp/x", ""])
def test_bad_targets_name_the_fix(text):
    with pytest.raises(p.PlanError, match="/Volumes/<catalog>/<schema>/<volume>"):
        p.parse_target(text)


def test_a_databrickscfg_profile_authenticates(fake, wheel, monkeypatch, tmp_path):
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    cfg = tmp_path / "databrickscfg"
    cfg.write_text(f"[team]\nhost = {fake.host}\ntoken = {fake.token}\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    assert main(_install(wheel, "--profile", "team", "--dry-run")) == 0
    assert fake.requests and fake.mutations() == []


def test_databricks_errors_and_missing_credentials_are_one_clear_line(fake, wheel, capsys, monkeypatch):
    assert main(["uninstall", "--cluster-id", "no-such-cluster"]) == 2
    err = capsys.readouterr().err
    assert "Databricks refused the request" in err and "no-such-cluster" in err and "Traceback" not in err
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    assert main(["uninstall", "--cluster-id", CLUSTER]) == 2
    assert "cannot authenticate to Databricks" in capsys.readouterr().err


def test_without_a_store_the_nodes_follow_the_workspace_link():
    """The databricks-sdk configuration knows the workspace's ARM id only with Azure
    authentication (with a token it refuses the pair), so the SDK side is a stand-in here."""
    from spark_tracking.install.cli import _follow_the_workspace_link

    dbx = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Databricks/workspaces/dbx"

    class AzureAuthenticatedWorkspace:
        def azure_resource_id(self):
            return dbx

    def settings_after(settings: dict, env: dict, unset=()) -> dict:
        opts = p.InstallOptions(
            target=p.parse_target(TARGET), wheel_name="w.whl", settings=dict(settings), unset=tuple(unset)
        )
        _follow_the_workspace_link(opts, AzureAuthenticatedWorkspace(), {"spark_env_vars": env})
        return opts.settings

    assert settings_after({}, {}) == {"databricks_resource_id": dbx}
    assert settings_after({"aml_workspace_id": AML_ID}, {}) == {"aml_workspace_id": AML_ID}
    kept = {"SPARK_TRACKING_TRACKING_URI": "http://mlflow.internal"}  # named by an earlier install
    assert settings_after({}, kept) == {}
    assert settings_after({}, kept, unset=["tracking_uri"]) == {"databricks_resource_id": dbx}


# -- install routes never move the runtime's MLflow -------------------------------------------------


def test_installing_the_wheel_with_dependencies_never_puts_mlflow_skinny_over_mlflow(tmp_path, wheel):
    """A cluster library or %pip install of the wheel on DBR 14.3/15.4 ML, which ship the full
    `mlflow` 2.x and no `mlflow-skinny`: real pip (offline) must not want any mlflow-skinny, however
    new the index's is (a requirement on it installed the newest over `mlflow/`: docs/platform.md)."""
    import subprocess
    import sys
    import sysconfig

    from .test_init_script import _metadata_only_wheel

    venv = tmp_path / "dbr-14.3-ml"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert site and sysconfig.get_paths()["purelib"] != site
    runtime = {"mlflow": "2.9.2", "databricks-sdk": "0.30.0", "azure-identity": "1.16.0", "requests": "2.31.0"}
    for name, version in runtime.items():  # what the runtime ships, as pip sees installed distributions
        info = Path(site) / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    index = tmp_path / "index"
    _metadata_only_wheel(index, "mlflow-skinny", "3.18.0")
    _metadata_only_wheel(index, "mlflow", "3.18.0", ("mlflow-skinny==3.18.0",))
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--python", str(python), "install", "--dry-run", "--quiet"]
        + ["--no-index", "--find-links", str(index), "--report", str(report), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    would_install = {
        item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]
    }
    assert would_install == {"spark-tracking": wheel.name.split("-")[1]}


def test_equivalent_mlflow_distributions_pin_each_other():
    from spark_tracking.install import node

    assert node.equivalent_pins({"mlflow": "2.9.2", "pyspark": "3.5.0"}) == {"mlflow-skinny": "2.9.2"}
    assert node.equivalent_pins({"mlflow": "3.0.1", "mlflow-skinny": "3.0.1"}) == {}
    installed = {"mlflow": "2.9.2", "azure-core": "1.30.0"}
    assert node.unsatisfied(["azureml-mlflow", "mlflow-skinny<=3.15.0", "azure-core>=1.31"], installed) == [
        "azureml-mlflow",
        "azure-core>=1.31",
    ]
    report = {
        "install": [
            {"metadata": {"name": "azureml-mlflow", "version": "1.62.0.post6"}},
            {"metadata": {"name": "mlflow_skinny", "version": "2.9.2"}},  # the runtime's mlflow is it
        ]
    }
    assert node.to_install(report, installed) == ["azureml-mlflow==1.62.0.post6"]
    report["install"][1]["metadata"]["version"] = "3.15.0"  # cannot happen under the constraints; never hidden
    assert node.to_install(report, installed) == ["azureml-mlflow==1.62.0.post6", "mlflow-skinny==3.15.0"]


def test_an_mlflow_skinny_over_the_runtimes_mlflow_is_reported_with_the_fix():
    from spark_tracking.install import node

    assert node.mlflow_overwritten({"mlflow": "3.0.1", "mlflow-skinny": "3.0.1"}) is None
    assert node.mlflow_overwritten({"mlflow": "2.9.2"}) is None
    info, _ = node.check({}, installed={"mlflow": "2.9.2", "mlflow-skinny": "3.18.0"})
    assert info[0].startswith("WARNING: mlflow-skinny 3.18.0 is installed over the runtime's mlflow 2.9.2")
    assert "pip install --force-reinstall --no-deps mlflow==2.9.2" in info[0]


def _dbr_ml_node(tmp_path) -> Node:
    """A node of an ML runtime that ships the full `mlflow` and no `mlflow-skinny` (DBR 14.3/15.4 ML)."""
    from .conftest import make_runtime

    home = tmp_path / "h"
    home.mkdir()
    return Node(tmp_path / "node", make_runtime(tmp_path / "runtime", leave_out=("mlflow_skinny",)), home)


def _mlflow_version(node: Node) -> str:
    done = node.python_run("import mlflow; print(mlflow.__version__)", SPARK_TRACKING_DISABLED="1")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_init_script_installs_azureml_mlflow_without_moving_the_runtimes_mlflow(tmp_path, wheel):
    from importlib.metadata import version

    from .test_init_script import _metadata_only_wheel

    sim = _dbr_ml_node(tmp_path)
    runtime_mlflow = version("mlflow")
    index = tmp_path / "index"
    _metadata_only_wheel(index, "azureml-mlflow", "1.62.0.post6", ("mlflow-skinny", "azure-core"))
    _metadata_only_wheel(index, "mlflow-skinny", "99.0")  # what a free install would take
    _metadata_only_wheel(index, "mlflow-skinny", runtime_mlflow)
    env = dict(
        SPARK_TRACKING_WHEEL=str(wheel),
        SPARK_TRACKING_INIT_PACKAGES="azureml-mlflow",
        SPARK_TRACKING_INIT_PIP_ARGS=f"--no-index --find-links {index}",
    )
    out = sim.run_init(**env)
    assert out.returncode == 0, out.stdout + sim.log_file.read_text()
    assert "installed azureml-mlflow==1.62.0.post6 (for azureml-mlflow)" in out.stdout
    assert "azureml_mlflow-1.62.0.post6.dist-info" in sim.own_site_entries()
    assert not any(name.startswith("mlflow") for name in sim.own_site_entries())  # nothing over mlflow/
    assert _mlflow_version(sim) == runtime_mlflow
    again = sim.run_init(**env)
    assert "optional packages already installed: azureml-mlflow" in again.stdout


def test_an_azureml_mlflow_that_would_move_the_runtimes_mlflow_is_left_out(tmp_path, wheel):
    """azureml-mlflow 1.62.0.post6 pins mlflow-skinny <= 3.15.0; on a runtime with a newer MLflow it
    is refused under the constraints, with the reason, and tracking stays on (the https route)."""
    from .test_init_script import _metadata_only_wheel

    sim = _dbr_ml_node(tmp_path)
    runtime_mlflow = _mlflow_version(sim)
    pin = "3.15.0" if tuple(map(int, runtime_mlflow.split(".")[:2])) > (3, 15) else "2.8.0"
    index = tmp_path / "index"
    _metadata_only_wheel(index, "azureml-mlflow", "1.62.0.post6", (f"mlflow-skinny<={pin}",))
    _metadata_only_wheel(index, "mlflow-skinny", pin)
    out = sim.run_init(
        SPARK_TRACKING_WHEEL=str(wheel),
        SPARK_TRACKING_INIT_PACKAGES="azureml-mlflow",
        SPARK_TRACKING_INIT_PIP_ARGS=f"--no-index --find-links {index}",
    )
    assert out.returncode == 0, out.stdout
    assert "ERROR: azureml-mlflow cannot be installed without changing what the runtime provides" in out.stdout
    assert not any(name.startswith(("mlflow", "azureml")) for name in sim.own_site_entries())
    assert _mlflow_version(sim) == runtime_mlflow
    assert sim.hook_file.exists() and "ready on this driver" in out.stdout


def test_install_azureml_mlflow_goes_through_the_init_script(fake, wheel):
    assert main(_install(wheel, "--azureml-mlflow")) == 0
    env = fake.cluster(CLUSTER)["spark_env_vars"]
    assert env["SPARK_TRACKING_INIT_PACKAGES"] == "azureml-mlflow>=1.62"
    script = fake.state.files[f"{TARGET}/spark-tracking-init.sh"].decode()
    assert "export SPARK_TRACKING_INIT_PACKAGES='azureml-mlflow>=1.62'" in script
    assert main(["uninstall", "--cluster-id", CLUSTER]) == 0
    assert "SPARK_TRACKING_INIT_PACKAGES" not in fake.cluster(CLUSTER).get("spark_env_vars", {})


# -- sovereign clouds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, cloud",
    [
        (f"tracking_uri=https://usgovvirginia.api.ml.azure.us/mlflow/v2.0{AML_ID}", "AzureUSGovernment"),
        ("azure_arm_endpoint=https://management.chinacloudapi.cn", "AzureChinaCloud"),
    ],
)
def test_install_bakes_the_cloud_of_a_sovereign_host(fake, wheel, setting, cloud):
    assert main(_install(wheel, "--set", setting)) == 0
    assert fake.cluster(CLUSTER)["spark_env_vars"]["SPARK_TRACKING_AZURE_CLOUD"] == cloud
    script = fake.state.files[f"{TARGET}/spark-tracking-init.sh"].decode()
    assert f"export SPARK_TRACKING_AZURE_CLOUD={cloud}" in script


def test_the_cloud_of_the_databricks_workspace_host():
    from spark_tracking.azure.clouds import cloud_of_databricks_host
    from spark_tracking.install.cli import _bake_the_cloud

    assert cloud_of_databricks_host("https://adb-1.2.databricks.azure.us").name == "AzureUSGovernment"
    assert cloud_of_databricks_host("adb-1.2.databricks.azure.cn").name == "AzureChinaCloud"
    assert cloud_of_databricks_host("https://adb-1.2.azuredatabricks.net/").name == "AzureCloud"
    opts = _opts(settings={"aml_workspace_id": AML_ID})
    _bake_the_cloud(opts, "https://adb-1.2.databricks.azure.us", {})
    assert opts.settings["azure_cloud"] == "AzureUSGovernment"
    kept = {"spark_env_vars": {"SPARK_TRACKING_AZURE_CLOUD": "AzureCloud"}}  # named by an earlier install
    opts = _opts(settings={})
    _bake_the_cloud(opts, "https://adb-1.2.databricks.azure.us", kept)
    assert opts.settings == {}
