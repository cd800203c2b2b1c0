"""Fixtures for the cluster tests: the wheel, a simulated Databricks node, a fake Databricks REST API.

The simulated node is a temporary root standing in for ``/``: ``<root>/databricks/python3`` is a
fresh venv (the cluster Python) whose "runtime" packages (pyspark, mlflow, databricks-sdk,
azure-identity, pip...) come from this test environment through a ``.pth`` file, the way a
Databricks Runtime ships them. They live outside that venv, so pip can neither replace nor
uninstall them; whatever pip installs lands in the venv's own site-packages, where the tests
look for anything it should not have installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INIT_SCRIPT = REPO / "init_scripts" / "spark-tracking-init.sh"
#: Entries of this environment's site-packages the simulated runtime must not see.
_NOT_IN_RUNTIME = ("spark_tracking", "__editable__", "_distutils_hack")


def build_wheel(out_dir: Path) -> Path:
    """Build the spark_tracking wheel offline from a copy of the sources (the tree stays clean)."""
    src = out_dir / "src"
    src.mkdir(parents=True)
    for name in ("setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "spark_tracking", src / "spark_tracking", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "init_scripts", src / "init_scripts", ignore=ignore)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            str(src),
            "-w",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:  # offline build: setuptools and `wheel` must be in this environment
        pytest.fail(f"building the wheel failed (pip install setuptools wheel?):\n{done.stderr[-3000:]}")
    (wheel,) = out_dir.glob("spark_tracking-*.whl")
    return wheel


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The spark_tracking wheel, built once per test session."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def make_runtime(folder: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """Fill ``folder`` with links to this environment's packages, minus spark_tracking and
    ``leave_out`` (name prefixes): the packages a Databricks Runtime would provide."""
    here = Path(sysconfig.get_paths()["purelib"])
    folder.mkdir(parents=True, exist_ok=True)
    for entry in here.iterdir():
        if entry.name.startswith(_NOT_IN_RUNTIME + leave_out) or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="session")
def runtime_site(tmp_path_factory) -> Path:
    """The simulated runtime's packages (shared by every simulated node of the session)."""
    return make_runtime(tmp_path_factory.mktemp("runtime-site"))


class Node:
    """A simulated Databricks node under ``root``; ``run_init`` runs the real init script."""

    def __init__(self, root: Path, runtime_site: Path, home: Path):
        self.root = root
        self.home = home
        self.python_home = root / "databricks" / "python3"
        self.python = self.python_home / "bin" / "python"
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(self.python_home)], check=True, timeout=60)
        self.site = Path(
            subprocess.run(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        (self.site / "_databricks_runtime.pth").write_text(f"{runtime_site}\n")
        self.config_file = root / "etc" / "spark_tracking" / "config.json"
        self.log_file = root / "var" / "log" / "spark_tracking" / "init.log"
        self.hook_file = self.site / "spark_tracking_hook.pth"

    def base_env(self) -> dict[str, str]:
        """What every process on this node sees: PATH, HOME, the config file of this root."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("SPARK_TRACKING_", "MLFLOW_", "AZURE_", "DATABRICKS_", "DB_", "PYTHON", "PYSPARK_", "JPY_")
            )
        }
        env.update(
            HOME=str(self.home),
            SPARK_TRACKING_CONFIG_FILE=str(self.config_file),
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
            SPARK_LOCAL_IP="127.0.0.1",
        )
        return env

    def run_init(
        self, driver: bool = True, script: Path = INIT_SCRIPT, standard_access: bool = False, **env: str
    ) -> subprocess.CompletedProcess:
        """Run the init script as Databricks would, with cluster environment variables ``env``.

        ``standard_access``: a standard-access node on DBR 19+, where only the predefined DB_*
        variables reach init scripts (docs/platform.md): ``env`` is dropped, and the script sees the
        DB_* variables, PATH/HOME/LANG and the test's stand-in for ``/`` (SPARK_TRACKING_INIT_ROOT)."""
        full = self.base_env()
        predefined = dict(
            DB_IS_DRIVER="TRUE" if driver else "FALSE",
            DB_CLUSTER_ID="0123-456789-abcdefgh",
            DB_CLUSTER_NAME="sim",
            DB_IS_JOB_CLUSTER="FALSE",
            DB_DRIVER_IP="127.0.0.1",
            DB_CONTAINER_IP="127.0.0.1",
            DB_INSTANCE_TYPE="Standard_DS3_v2",
        )
        full.update(SPARK_TRACKING_INIT_ROOT=str(self.root), **predefined)
        full.update(env)
        if standard_access:
            full = {
                k: v
                for k, v in full.items()
                if k.startswith("DB_") or k in ("PATH", "HOME", "LANG", "SPARK_TRACKING_INIT_ROOT")
            }
        return subprocess.run(["bash", str(script)], env=full, capture_output=True, text=True, timeout=300)

    def python_run(self, code: str, **env: str) -> subprocess.CompletedProcess:
        """A fresh Python process of the cluster Python, as a notebook or a worker would start."""
        full = self.base_env()
        full.update(env)
        return subprocess.run([str(self.python), "-c", code], env=full, capture_output=True, text=True, timeout=300)

    def own_site_entries(self) -> set[str]:
        """Top-level names pip put into the cluster Python's own site-packages."""
        return {p.name for p in self.site.iterdir()} - {"_databricks_runtime.pth"}

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file under the root except the log: what a rerun may not change."""
        out = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path != self.log_file:
                st = path.stat()
                out[str(path.relative_to(self.root))] = (st.st_size, st.st_mtime_ns)
        return out


@pytest.fixture
def node(tmp_path, runtime_site) -> Node:
    """A fresh simulated node (its own root and cluster Python; the runtime is shared)."""
    home = tmp_path / "node-home"
    home.mkdir()
    return Node(tmp_path / "node", runtime_site, home)


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """The command line's main() configures logging; leave the test process as it was."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def databricks_api(monkeypatch):
    """The fake Databricks REST API, with the SDK's environment pointing at it."""
    from fakes.databricks import FakeDatabricks

    with FakeDatabricks() as server:
        monkeypatch.setenv("DATABRICKS_HOST", server.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", server.token)
        yield server
