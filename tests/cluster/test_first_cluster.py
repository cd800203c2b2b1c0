"""A first install on a real workspace (issue G): standard access mode on DBR 19+, system
packages that pip cannot parse, clusters changing state, and who resolves the secrets."""

from __future__ import annotations

import json

import pytest

from spark_tracking.cli import main
from spark_tracking.install import cli as install_cli

from .conftest import Node, make_runtime
from .test_init_script import _metadata_only_wheel

CLUSTER = "0123-456789-abcdefgh"
TARGET = "/Volumes/main/default/libs/spark_tracking"


@pytest.fixture
def fake(databricks_api):
    databricks_api.add_cluster(CLUSTER)
    return databricks_api


def _install(wheel, *extra: str) -> list[str]:
    return ["install", "--cluster-id", CLUSTER, "--wheel", str(wheel), "--target", TARGET, *extra]


# -- 4. standard access mode, DBR 19+ -----------------------------------------------------------------


def test_a_standard_access_node_is_configured_from_the_installed_script_alone(fake, wheel, tmp_path, runtime_site):
    central = f"sqlite:///{tmp_path / 'central.db'}"
    assert main(_install(wheel, "--set", f"tracking_uri={central}", "--set", "experiment_name=team")) == 0
    home = tmp_path / "node-home"
    home.mkdir()
    node = Node(tmp_path / "node", runtime_site, home)
    for path, data in fake.state.files.items():  # the node's view of /Volumes
        local = node.root / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    script = node.root / TARGET.lstrip("/") / "spark-tracking-init.sh"
    out = node.run_init(script=script, standard_access=True)  # no cluster variable reaches the script
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done: spark-tracking 0.1.0 ready on this driver" in out.stdout
    assert f"runs go to {central} (from env SPARK_TRACKING_TRACKING_URI)" in out.stdout
    assert json.loads(node.config_file.read_text()) == {"experiment_name": "team", "tracking_uri": central}
    fresh = node.python_run("import os; print(os.environ['MLFLOW_TRACKING_URI'], os.environ['MLFLOW_EXPERIMENT_NAME'])")
    assert fresh.stdout.split() == [central, "team"], fresh.stderr
    import re

    assert re.findall(r"then export (SPARK_TRACKING_\w+)=", script.read_text()) == [
        "SPARK_TRACKING_EXPERIMENT_NAME",
        "SPARK_TRACKING_TRACKING_URI",
        "SPARK_TRACKING_WHEEL",
    ]  # no secret


# -- 5. the constraints file ------------------------------------------------------------------------


def test_a_system_package_with_a_non_pep440_version_does_not_break_the_constraints(tmp_path, wheel):
    runtime = make_runtime(tmp_path / "runtime", leave_out=("azure_identity",))
    info = runtime / "distro_info-1.1build1.dist-info"  # as Ubuntu's python3-distro-info ships it
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distro-info\nVersion: 1.1build1\n")
    home = tmp_path / "h"
    home.mkdir()
    sim = Node(tmp_path / "node", runtime, home)
    index = tmp_path / "index"
    _metadata_only_wheel(index, "azure-identity", "1.27.0", ("azure-core>=1.31", "msal>=1.30"))
    out = sim.run_init(SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_INIT_PIP_ARGS=f"--no-index --find-links {index}")
    log = sim.log_file.read_text()
    assert out.returncode == 0 and "tracking is OFF" not in out.stdout, out.stdout + log
    assert "installing requirements the runtime lacks: azure-identity>=1.16" in out.stdout
    assert "not pinned (versions pip cannot parse): distro-info 1.1build1" in log
    assert "azure_identity-1.27.0.dist-info" in sim.own_site_entries()
    assert sim.hook_file.is_file()


# -- 8. the installer on a real workspace --------------------------------------------------------------


@pytest.mark.parametrize("state", ["PENDING", "RESTARTING", "RESIZING"])
def test_a_cluster_changing_state_is_not_edited_and_install_says_so(fake, wheel, capsys, state):
    fake.state.clusters[CLUSTER]["state"] = state
    assert main(_install(wheel)) == 2
    err = capsys.readouterr().err
    assert (
        f"cluster {CLUSTER} is {state}: Databricks accepts a spec change or restart only when a cluster is "
        "RUNNING or TERMINATED (INVALID_STATE otherwise). Fix: run install again with --wait, which waits until "
        "it is, or once it is."
    ) in err
    assert not [r for r in fake.mutations() if r.path.startswith("/api/2.1/clusters/")]


def test_wait_lets_a_pending_cluster_reach_running_then_installs(fake, wheel, monkeypatch, capsys):
    monkeypatch.setattr(install_cli, "WAIT_POLL_SECONDS", 0)
    fake.state.clusters[CLUSTER]["state"] = "PENDING"
    fake.transitions[CLUSTER] = ["PENDING", "PENDING", "RUNNING"]
    assert main(_install(wheel, "--wait", "--restart")) == 0, capsys.readouterr().err
    assert fake.cluster(CLUSTER)["spark_env_vars"]["SPARK_TRACKING_WHEEL"] == f"{TARGET}/{wheel.name}"
    assert fake.state.restarts.get(CLUSTER) == 1  # a RUNNING cluster restarts to apply the spec


def test_the_relay_secret_is_checked_by_listing_keys_and_the_resolving_principal_is_named(fake, wheel, capsys):
    assert main(_install(wheel)) == 0
    fake.clear_requests()
    assert main(_install(wheel)) == 0
    out = capsys.readouterr().out
    assert "install: already done, nothing changed" in out
    assert [r.query for r in fake.requests if r.path == "/api/2.0/secrets/list"] == [{"scope": "spark-tracking"}]
    assert not [r for r in fake.requests if r.path == "/api/2.0/secrets/get"]  # no secret value read
    assert (
        "note: the cluster's {{secrets/spark-tracking/...}} references are resolved when it starts, with the "
        "permissions of its owner or last editor (after this install: admin@contoso.com), who needs READ on "
        "secret scope spark-tracking; every user of the cluster can read the resolved values from code"
    ) in out
