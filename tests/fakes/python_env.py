"""A Python environment holding spark_tracking the way a wheel install on a cluster does, and
nothing else: a venv without pip whose site-packages links the package's source folder.

The project's own venv is no stand-in for interpreter start on a cluster: its editable install
adds a finder that imports ``re``, ``pathlib``, ``importlib.util`` and more in every process, so
whatever the startup hook imports of those looks free there. Here ``python -c pass`` imports
only what ``site`` needs, and the hook's ``.pth`` file can be added and removed without touching
the project's venv (``tests/test_hook.py``, ``benchmarks/hook_cost.py``).
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import sysconfig

import spark_tracking
from spark_tracking import hook

#: Variables that would name a store, a link or a credential to the hook: a bare process has none.
_FOREIGN_PREFIXES = ("SPARK_TRACKING_", "MLFLOW_", "AZURE_", "DATABRICKS_", "DB_")


class BareEnvironment:
    """``python`` of a fresh venv in ``folder`` with spark_tracking importable (no dependencies)."""

    def __init__(self, folder: str):
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", folder], check=True, capture_output=True, timeout=120
        )
        self.python = os.path.join(folder, "bin", "python")
        self.site_dir = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        source = os.path.dirname(spark_tracking.__file__)
        os.symlink(source, os.path.join(self.site_dir, "spark_tracking"))
        compileall.compile_dir(source, quiet=1)  # as pip does when it installs the wheel
        self.home = os.path.join(folder, "home")
        os.makedirs(self.home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
        self.env.update(HOME=self.home, PYTHONDONTWRITEBYTECODE="1")
        assert sysconfig.get_paths()["purelib"] != self.site_dir

    def hook(self, enabled: bool) -> None:
        """Install or remove the startup hook in this environment (the project's venv is left alone)."""
        (hook.enable if enabled else hook.disable)(self.site_dir)

    def run(self, code: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, "-c", code], capture_output=True, text=True, env={**self.env, **env}, timeout=120
        )

    def link_node(self, workspace_id: str, tracking_uri: str) -> None:
        """Make this a linked node as the installer leaves one: the config file names the AML
        workspace, and the link is in the node's cache (resolved once, by the init script or
        the first session)."""
        self.env["SPARK_TRACKING_CONFIG_FILE"] = os.path.join(self.home, "spark-tracking.json")
        code = (
            "import os\n"
            "from spark_tracking import config\n"
            "from spark_tracking.azure import link\n"
            f"config.write_config_file({{'aml_workspace_id': {workspace_id!r}}}, os.environ['SPARK_TRACKING_CONFIG_FILE'])\n"
            "cfg = config.Config.resolve({})\n"
            f"found = link.Link({workspace_id!r}, {tracking_uri!r}, 'westeurope', 'AzureCloud', 'benchmark')\n"
            "link._write_cache(os.path.join(cfg.home, link.CACHE_FILE), link.cache_key(cfg, link.find_source(cfg)), found)\n"
        )
        out = self.run(code)
        assert out.returncode == 0, out.stderr

    def embedded_store_uri(self) -> str:
        """The tracking URI the hook sets here when nothing else is configured."""
        return "sqlite:///" + os.path.join(self.home, ".spark_tracking", "mlflow.db")
