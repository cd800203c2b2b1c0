"""The startup hook: every new Python (and IPython/Jupyter) process of an environment calls
``configure()`` with zero lines of user code.

It is a one-line ``spark_tracking_hook.pth`` file in the environment's site-packages. Python
executes lines of ``.pth`` files that start with ``import`` at interpreter start. The line
calls :func:`startup`, which must stay cheap (no mlflow, no pyspark, no ``typing``,
``threading`` or network: files and environment only; ``benchmarks/hook_cost.py`` measures it)
and must never break the process: any error is logged at debug level and
swallowed. ``SPARK_TRACKING_DISABLED=1`` makes it return at once.

A second trigger covers interpreters that reach the environment without processing its ``.pth``
files. Python executes a ``.pth`` file only in a folder ``site`` adds as a site directory, not
in one that is merely on ``sys.path`` (a path line in another ``.pth``, ``PYTHONPATH``: CPython
``site.addpackage``/``addsitedir``). A Databricks notebook runs in such an interpreter: a
per-notebook environment (``/local_disk0/.ephemeral_nfs/envs/pythonEnv-*``; public tracebacks,
mlflow#12755, fugue-project/fugue#517) whose kernel start-up adds ``/databricks/python3``'s
site-packages by path composition without processing ``.pth`` files (twsl/dbx-patch,
"editable-install-analysis"; likely, not run here). So the hook also fires when MLflow loads
spark_tracking's plugins, which it does at ``import mlflow`` in every interpreter that can see
the distribution's entry points: ``mlflow.tracking.fluent`` imports the run-context and
default-experiment registries, which load their entry points at module import (MLflow 2.9.2,
3.0.1, 3.17.2). :func:`start_at_mlflow_import` runs :func:`startup` there, before any run can
be created, when a folder on ``sys.path`` holds the hook's ``.pth`` file (the init script
enabled it in the runtime's site-packages) and the ``.pth`` did not run already.

``spark-tracking hook enable|disable|status [--site-packages DIR]``; the init script calls
:func:`enable` / :func:`disable` with the cluster Python (not the CLI, so that no other
subcommand's import can keep the hook from being installed).
"""

from __future__ import annotations

import os
import sys

PTH_NAME = "spark_tracking_hook.pth"
PTH_LINE = "import spark_tracking.hook as _sth; _sth.startup()\n"

_started = False


def startup() -> None:
    """Called from the .pth file at interpreter start. Never raises."""
    global _started
    if _started:
        return
    _started = True
    try:
        if os.environ.get("SPARK_TRACKING_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
            return
        if os.environ.get("SPARK_TRACKING_RELAY") and os.environ.get("MLFLOW_TRACKING_URI", "").startswith(
            "spark-tracking-task"
        ):
            # a process a bound Spark task started (a torchrun rank): the task named its forwarding
            # store in MLflow's variable (forwarding.task.binding.ChildExport), which must stay
            # there from the first instruction on; nothing to configure, no store to open
            return
        from .session import configure

        # files and environment only: never the network; errors are logged, not raised (strict is
        # left to the settings: it decides what a link failure does at MLflow's first request)
        configure(resolve_link=False)
        if not _starting_pyspark_worker():
            # a Spark Connect server this process may start (remote("local[2]")) inherits this
            # environment, and so do its Python workers: the relay secret for that case
            # (forwarding.protocol.ENV_LOCAL_SECRET; kept when inherited)
            os.environ.setdefault("SPARK_TRACKING_LOCAL_RELAY_SECRET", os.urandom(32).hex())
        if _starting_pyspark_worker():
            from .forwarding.task import executor

            executor.install_task_hooks()  # so processes a task starts (torchrun) are bound
    except BaseException:  # noqa: BLE001 - a startup hook must never break its host
        try:
            import logging

            logging.getLogger(__name__).debug("spark_tracking startup hook failed", exc_info=True)
        except BaseException:  # noqa: BLE001 - not even logging may break the host
            pass


def start_at_mlflow_import() -> None:
    """Called when MLflow loads spark_tracking's plugins (at ``import mlflow``): runs
    :func:`startup` in an interpreter whose ``.pth`` files were not processed, when the hook is
    enabled in a folder on ``sys.path``. Once per process, cheap (a file check per ``sys.path``
    entry, then what :func:`startup` costs), never the network, never raises."""
    if _started:
        return
    try:
        if not enabled_on_path():
            return
    except BaseException:  # noqa: BLE001 - never break MLflow's import
        return
    startup()


def enabled_on_path(path: list[str] | None = None) -> bool:
    """True when a folder on ``path`` (default ``sys.path``) holds the hook's ``.pth`` file,
    whether or not Python processed it."""
    for entry in sys.path if path is None else path:
        if entry and os.path.isfile(os.path.join(entry, PTH_NAME)):
            return True
    return False


def _starting_pyspark_worker() -> bool:
    argv = getattr(sys, "orig_argv", None) or []
    return "pyspark.daemon" in argv or "pyspark.worker" in argv


def site_packages() -> str:
    """The site-packages of the running interpreter (where pip installs)."""
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def pth_path(site_dir: str | None = None) -> str:
    """The hook's ``.pth`` file in ``site_dir`` (default: this interpreter's site-packages)."""
    return os.path.join(site_dir or site_packages(), PTH_NAME)


def enable(site_dir: str | None = None) -> tuple[str, bool]:
    """Install the hook; returns (path, changed). Idempotent."""
    path = pth_path(site_dir)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            if fh.read() == PTH_LINE:
                return path, False
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(PTH_LINE)
    os.replace(tmp, path)
    return path, True


def disable(site_dir: str | None = None) -> tuple[str, bool]:
    """Remove the hook; returns (path, changed). Idempotent."""
    path = pth_path(site_dir)
    try:
        os.remove(path)
        return path, True
    except FileNotFoundError:
        return path, False


def is_enabled(site_dir: str | None = None) -> bool:
    """True when the hook's ``.pth`` file is in ``site_dir`` (default: this interpreter's site-packages)."""
    return os.path.isfile(pth_path(site_dir))


def register(subparsers) -> None:
    """Add ``hook enable|disable|status`` to the ``spark-tracking`` command."""
    p = subparsers.add_parser("hook", help="make every new Python session of this environment auto-configure")
    p.add_argument("action", choices=("enable", "disable", "status"))
    p.add_argument(
        "--site-packages",
        dest="site_dir",
        default=None,
        help="site-packages folder to act on (default: this interpreter's)",
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.action == "status":
        path = pth_path(args.site_dir)
        print(f"hook {'enabled' if os.path.isfile(path) else 'disabled'}: {path}")
        return 0
    path, changed = (enable if args.action == "enable" else disable)(args.site_dir)
    state = "enabled" if args.action == "enable" else "disabled"
    print(f"hook {state}: {path}" + ("" if changed else " (no change)"))
    return 0
