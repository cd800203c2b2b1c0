"""The cluster init script, run for real against a simulated Databricks node (see conftest.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from spark_tracking.install import node as node_helpers

from .conftest import INIT_SCRIPT, Node, make_runtime

SECRET = "s3cr3t-value-that-must-never-leak"
AML_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
PRINT_CONFIG = (
    "import os, sys, mlflow; print(os.environ.get('MLFLOW_TRACKING_URI')); "
    "print(os.environ.get('MLFLOW_EXPERIMENT_NAME')); print(mlflow.get_tracking_uri()); "
    "print('spark_tracking.hook' in sys.modules)"
)
VERSIONS = (
    "import importlib.metadata as m, mlflow, pyspark; "
    "print(m.version('mlflow'), m.version('pyspark'), mlflow.__file__, pyspark.__file__)"
)


def _central(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'central.db'}"


def test_driver_install_configures_every_new_python_process(node: Node, wheel, tmp_path, runtime_site):
    before = node.python_run(VERSIONS)
    out = node.run_init(
        SPARK_TRACKING_WHEEL=str(wheel),
        SPARK_TRACKING_TRACKING_URI=_central(tmp_path),
        SPARK_TRACKING_EXPERIMENT_NAME="/Shared/team",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    log = node.log_file.read_text()
    assert "installed spark-tracking 0.1.0" in log
    assert f"runs go to {_central(tmp_path)} (from env SPARK_TRACKING_TRACKING_URI)" in log
    assert "done: spark-tracking 0.1.0 ready on this driver" in out.stdout
    assert json.loads(node.config_file.read_text()) == {
        "experiment_name": "/Shared/team",
        "tracking_uri": _central(tmp_path),
    }
    # only spark_tracking and its hook landed in the cluster Python; the runtime is untouched
    assert node.own_site_entries() == {"spark_tracking", "spark_tracking-0.1.0.dist-info", "spark_tracking_hook.pth"}
    after = node.python_run(VERSIONS)
    assert after.returncode == 0 and after.stdout == before.stdout
    assert str(runtime_site) in after.stdout
    # a fresh process (no cluster env vars: the config file alone) is configured at start
    fresh = node.python_run(PRINT_CONFIG)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == [_central(tmp_path), "/Shared/team", _central(tmp_path), "True"]


def test_a_second_run_changes_nothing(node: Node, wheel, tmp_path):
    env = dict(SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_TRACKING_URI=_central(tmp_path))
    assert node.run_init(**env).returncode == 0
    first = node.snapshot()
    second = node.run_init(**env)
    assert second.returncode == 0, second.stdout
    assert node.snapshot() == first
    assert "already installed from spark_tracking-0.1.0-py3-none-any.whl" in second.stdout
    assert "unchanged" in second.stdout and "(no change)" in second.stdout


def test_a_new_wheel_replaces_the_old_one(node: Node, wheel, tmp_path):
    assert node.run_init(SPARK_TRACKING_WHEEL=str(wheel)).returncode == 0
    rebuilt = tmp_path / "other" / wheel.name
    rebuilt.parent.mkdir()
    shutil.copy(wheel, rebuilt)
    with open(rebuilt, "ab") as fh:  # same version, other bytes: a rebuilt wheel
        fh.write(b"\0")
    out = node.run_init(SPARK_TRACKING_WHEEL=str(rebuilt))
    assert "installing spark-tracking 0.1.0" in out.stdout


def test_worker_gets_the_hook_and_config_without_the_driver_summary(node: Node, wheel, tmp_path):
    out = node.run_init(driver=False, SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_TRACKING_URI=_central(tmp_path))
    assert out.returncode == 0, out.stdout
    assert "[worker]" in out.stdout and "runs go to" not in out.stdout
    assert node.hook_file.is_file()
    assert json.loads(node.config_file.read_text()) == {"tracking_uri": _central(tmp_path)}


def test_executor_python_workers_of_the_cluster_python_are_configured(node: Node, wheel, tmp_path):
    assert (
        node.run_init(SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_TRACKING_URI=_central(tmp_path)).returncode == 0
    )
    code = """
import os
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[2]").config("spark.driver.host", "127.0.0.1")
         .config("spark.driver.bindAddress", "127.0.0.1").config("spark.ui.enabled", "false").getOrCreate())
def probe(_):
    import os, sys
    hook = sys.modules.get("spark_tracking.hook")
    from spark_tracking import session
    cfg = session.current_config()
    yield (os.getpid(), bool(hook and hook._started), cfg.effective_tracking_uri if cfg else None)
rows = spark.sparkContext.parallelize(range(2), 2).mapPartitions(probe).collect()
spark.stop()
assert all(r[0] != os.getpid() for r in rows), rows
print(sorted(set((r[1], r[2]) for r in rows)))
"""
    out = node.python_run(code, PYSPARK_PYTHON=str(node.python), SPARK_TRACKING_FORWARDING="false")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str([(True, _central(tmp_path))])


def test_secrets_never_reach_the_log_the_output_or_any_file(node: Node, wheel):
    out = node.run_init(
        SPARK_TRACKING_WHEEL=str(wheel),
        SPARK_TRACKING_AML_WORKSPACE_ID=AML_ID,
        AZURE_TENANT_ID="tenant",
        AZURE_CLIENT_ID="client",
        AZURE_CLIENT_SECRET=SECRET,
    )
    assert out.returncode == 0, out.stdout
    assert "credentials: service principal" in out.stdout
    assert SECRET not in out.stdout + out.stderr
    for path in node.root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("strict", [False, True])
def test_missing_wheel_is_reported_and_the_node_starts_unless_strict(node: Node, strict):
    out = node.run_init(SPARK_TRACKING_STRICT="1" if strict else "0")
    assert out.returncode == (1 if strict else 0)
    log = node.log_file.read_text()
    assert "ERROR: SPARK_TRACKING_WHEEL is not set. Fix: run 'spark-tracking install" in log
    assert ("failing this node's start" in log) == strict
    assert not node.hook_file.exists()


@pytest.mark.parametrize("strict", [False, True])
def test_a_bad_setting_leaves_tracking_off(node: Node, wheel, strict):
    out = node.run_init(
        SPARK_TRACKING_WHEEL=str(wheel),
        SPARK_TRACKING_RELAY_PORT="eighty",
        SPARK_TRACKING_STRICT="true" if strict else "",
    )
    assert out.returncode == (1 if strict else 0)
    assert "SPARK_TRACKING_RELAY_PORT='eighty' is not a valid int" in out.stdout
    assert "tracking is OFF on this node" in out.stdout or strict
    assert not node.hook_file.exists()


def test_half_a_service_principal_is_a_misconfiguration(node: Node, wheel):
    out = node.run_init(SPARK_TRACKING_WHEEL=str(wheel), AZURE_CLIENT_ID="client", AZURE_CLIENT_SECRET=SECRET)
    assert out.returncode == 0
    assert (
        "service principal half configured: AZURE_CLIENT_ID, AZURE_CLIENT_SECRET set, AZURE_TENANT_ID missing"
        in out.stdout
    )
    assert SECRET not in out.stdout + node.log_file.read_text()
    assert not node.hook_file.exists()


def test_a_runtime_with_mlflow_but_not_mlflow_skinny_keeps_its_mlflow(tmp_path, wheel):
    """DBR ML ships the full `mlflow` dist: `mlflow-skinny` must not be installed over it."""
    runtime = make_runtime(tmp_path / "runtime", leave_out=("mlflow_skinny",))
    home = tmp_path / "h"
    home.mkdir()
    sim = Node(tmp_path / "node", runtime, home)
    out = sim.run_init(SPARK_TRACKING_WHEEL=str(wheel))
    assert out.returncode == 0, out.stdout
    assert "every requirement is provided by the runtime" in out.stdout
    assert not any(name.startswith("mlflow") for name in sim.own_site_entries())


def test_missing_requirements_logic():
    installed = {"mlflow": "2.9.2", "requests": "2.31.0", "pyspark": "3.5.0"}
    reqs = ["mlflow-skinny>=2.16,<4", "requests>=2.28", "databricks-sdk>=0.30", 'pyspark>=3.5; extra == "local"']
    missing, warnings = node_helpers.missing_requirements(reqs, installed)
    assert missing == ["databricks-sdk>=0.30"]
    assert len(warnings) == 1 and warnings[0].startswith("mlflow 2.9.2 (from the runtime) is outside")


def test_the_init_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
    out = subprocess.run([shellcheck, "--severity=style", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_the_wheel_ships_the_init_script(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("spark_tracking/resources/spark-tracking-init.sh")
    assert shipped == INIT_SCRIPT.read_bytes()


def _metadata_only_wheel(folder, name: str, version: str, requires: tuple[str, ...] = ()):
    """A wheel with metadata and no code: stands in for a package an index would serve."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel_path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel_path, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel_path


def _node_without(tmp_path, leave_out: tuple[str, ...]) -> Node:
    home = tmp_path / "h"
    home.mkdir()
    return Node(tmp_path / "node", make_runtime(tmp_path / "runtime", leave_out=leave_out), home)


def test_only_what_the_runtime_lacks_is_installed_and_nothing_present_moves(tmp_path, wheel):
    sim = _node_without(tmp_path, ("azure_identity",))
    index = tmp_path / "index"
    _metadata_only_wheel(index, "azure-identity", "1.27.0", ("azure-core>=1.31", "msal>=1.30"))
    out = sim.run_init(SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_INIT_PIP_ARGS=f"--no-index --find-links {index}")
    assert out.returncode == 0, out.stdout + sim.log_file.read_text()
    assert "installing requirements the runtime lacks: azure-identity>=1.16" in out.stdout
    assert sim.own_site_entries() == {
        "spark_tracking",
        "spark_tracking-0.1.0.dist-info",
        "spark_tracking_hook.pth",
        "azure_identity-1.27.0.dist-info",
    }
    again = sim.run_init(
        SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_INIT_PIP_ARGS=f"--no-index --find-links {index}"
    )
    assert "every requirement is provided by the runtime" in again.stdout


def test_a_requirement_that_would_move_the_runtime_is_refused(tmp_path, wheel):
    sim = _node_without(tmp_path, ("azure_identity",))
    index = tmp_path / "index"
    # this azure-identity wants a newer mlflow-skinny than the runtime's: the constraints forbid it
    _metadata_only_wheel(index, "azure-identity", "1.27.0", ("mlflow-skinny>=99",))
    _metadata_only_wheel(index, "mlflow-skinny", "99.0")
    out = sim.run_init(SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_INIT_PIP_ARGS=f"--no-index --find-links {index}")
    assert out.returncode == 0
    assert "ERROR: pip could not install azure-identity>=1.16 without changing what the runtime provides" in out.stdout
    assert not any(name.startswith("mlflow") for name in sim.own_site_entries())
    assert not sim.hook_file.exists()
