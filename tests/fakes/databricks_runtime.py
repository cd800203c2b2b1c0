"""The Databricks Runtime's Python as a notebook sees it, for tests (docs/platform.md, "The notebook's
interpreter is not the init script's").

- :func:`cluster_site_packages`: ``/databricks/python3``'s site-packages after the init script:
  the runtime's packages (this test environment's, linked), spark_tracking laid out as its wheel
  installs it (the package and its ``.dist-info`` with the entry points), and the startup hook's
  ``.pth`` file the init script enabled.
- :class:`NotebookEnvironment`: the per-notebook interpreter (``/local_disk0/.ephemeral_nfs/envs/
  pythonEnv-*``): a venv of its own whose only link to the cluster's site-packages is a path line
  in one of its ``.pth`` files (``shape="pth"``) or ``PYTHONPATH`` (``shape="pythonpath"``). In
  both shapes Python puts the folder on ``sys.path`` without processing the ``.pth`` files in it
  (CPython ``site.addpackage`` processes only site directories), as Databricks' kernel start-up
  does (twsl/dbx-patch, "editable-install-analysis").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import spark_tracking
from spark_tracking import hook

#: Entries of this environment's site-packages that are not the runtime's: spark_tracking's own
#: editable install (its finder is a .pth file the notebook would never run anyway).
_NOT_RUNTIME = ("spark_tracking", "__editable__", "_distutils_hack")


def cluster_site_packages(folder: Path, hook_enabled: bool = True) -> Path:
    """``folder`` filled as the cluster Python's site-packages after the init script ran."""
    here = Path(sysconfig.get_paths()["purelib"])
    folder.mkdir(parents=True, exist_ok=True)
    for entry in here.iterdir():
        if entry.name.startswith(_NOT_RUNTIME) or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    # the wheel's layout: the package, and the distribution's metadata (entry points included)
    (folder / "spark_tracking").symlink_to(Path(spark_tracking.__file__).parent)
    (dist_info,) = here.glob("spark_tracking-*.dist-info")
    shutil.copytree(dist_info, folder / dist_info.name)
    if hook_enabled:
        hook.enable(str(folder))  # what the init script does with the cluster Python
    return folder


class NotebookEnvironment:
    """A notebook's own interpreter reaching ``cluster_site`` by a path line (``shape="pth"``)
    or by ``PYTHONPATH`` (``shape="pythonpath"``), never as a site directory."""

    def __init__(self, folder: Path, cluster_site: Path, shape: str):
        assert shape in ("pth", "pythonpath"), shape
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
        self.python = str(folder / "bin" / "python")
        self.site = Path(
            subprocess.run(
                [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
        )
        self.shape = shape
        self.cluster_site = cluster_site
        #: environment the notebook's kernel starts with, on top of the cluster's
        self.env: dict[str, str] = {}
        if shape == "pth":
            (self.site / "databricks_runtime_path.pth").write_text(f"{cluster_site}\n")
        else:
            self.env["PYTHONPATH"] = str(cluster_site)

    def run(self, code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``python -c code`` in this interpreter, with ``env`` (default: this process's) plus its own."""
        full = dict(os.environ if env is None else env, **self.env)
        return subprocess.run([self.python, "-c", code], capture_output=True, text=True, env=full, timeout=300)
