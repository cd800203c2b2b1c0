"""Where is this code running? Notebook path, script, Databricks cluster, job, Spark app.

Pure lookups with no side effects: every function returns None when it cannot tell.
Sources, in order: the Databricks REPL context (``dbruntime.databricks_repl_context``, as MLflow
reads it first; the only one on standard access mode, where py4j calls to the notebook context
are refused and there is no SparkContext: ``_compat.databricks_runtime``), the notebook context
through py4j (dbutils, when the notebook defines it), Spark local properties of the current
thread, the environment, IPython/Jupyter, sys.argv.
"""

from __future__ import annotations

import os
import sys

#: Spark local properties Databricks sets on the notebook's thread.
_DB_NOTEBOOK_PATH = "spark.databricks.notebook.path"
_DB_CLUSTER_ID = "spark.databricks.clusterUsageTags.clusterId"
_DB_JOB_ID = "spark.databricks.job.id"
_DB_JOB_RUN_ID = "spark.databricks.job.runId"
_DB_USER = "user"


class RunContext:
    """What detect() found; every field None when unknown."""

    __slots__ = (
        "cluster_id",
        "databricks_host",
        "job_id",
        "job_run_id",
        "notebook_path",
        "script",
        "spark_app_id",
        "user",
    )
    cluster_id: str | None
    databricks_host: str | None
    job_id: str | None
    job_run_id: str | None
    notebook_path: str | None
    script: str | None
    spark_app_id: str | None
    user: str | None

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    @property
    def on_databricks(self) -> bool:
        """True on a Databricks cluster: a cluster id was found or ``DATABRICKS_RUNTIME_VERSION`` is set."""
        return bool(self.cluster_id or os.environ.get("DATABRICKS_RUNTIME_VERSION"))


def _ipython_user_ns() -> dict:
    ip_mod = sys.modules.get("IPython")
    if ip_mod is None:
        return {}
    try:
        shell = ip_mod.get_ipython()
        return shell.user_ns if shell is not None else {}
    except Exception:  # noqa: BLE001 - a lookup returns None when it cannot tell, never raises into the caller
        return {}


def _dbutils_context() -> dict:
    """The Databricks notebook context as a flat dict (notebook_path + tags), or {}."""
    dbutils = _ipython_user_ns().get("dbutils")
    if dbutils is None:
        return {}
    import json

    try:
        raw = dbutils.notebook.entry_point.getDbutils().notebook().getContext().toJson()
        data = json.loads(raw)
    except Exception:  # noqa: BLE001 - a lookup returns None when it cannot tell, never raises into the caller
        return {}
    flat = dict(data.get("tags") or {})
    flat.update(data.get("extraContext") or {})
    return flat


def _spark_context():
    if "pyspark" not in sys.modules:  # at interpreter start (the hook): not even _compat's imports
        return None
    from ._compat import pyspark as compat

    return compat.active_spark_context()


def _local_property(sc, key: str) -> str | None:
    if sc is None:
        return None
    try:
        return sc.getLocalProperty(key)
    except Exception:  # noqa: BLE001 - a lookup returns None when it cannot tell, never raises into the caller
        return None


def _application_id(sc) -> str | None:
    if sc is None:
        return None
    try:
        return sc.applicationId
    except Exception:  # noqa: BLE001 - a lookup returns None when it cannot tell, never raises into the caller
        return None


def jupyter_notebook_path() -> str | None:
    """Path of the Jupyter notebook this kernel runs, when the kernel was told."""
    session = os.environ.get("JPY_SESSION_NAME") or _ipython_user_ns().get("__session__")
    if session and str(session).endswith(".ipynb"):
        return str(session)
    return None


def script_path() -> str | None:
    """Absolute path of the script this process runs (``__main__``'s file, else ``sys.argv[0]``);
    None for ``python -c``, ``python -m`` without a file and IPython kernels."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else None)
    if not path or path in ("-c", "-m") or path.endswith(("ipykernel_launcher.py", "ipykernel/__main__.py")):
        return None
    return os.path.abspath(path)


def detect() -> RunContext:
    """Everything this process can tell about where it runs.

    Each field takes the first source that knows it: the Databricks notebook context, the Spark
    local properties of this thread, then the environment: ``SPARK_TRACKING_NOTEBOOK_PATH`` (or
    Jupyter's ``JPY_SESSION_NAME``) for the notebook path, ``DB_CLUSTER_ID``, ``DB_JOB_ID`` and
    ``DATABRICKS_HOST``."""
    from ._compat.databricks_runtime import repl_context

    repl = repl_context()
    db = _dbutils_context()  # refused (Py4JSecurityException) on standard access: {}
    sc = _spark_context()
    ctx = RunContext()
    ctx.notebook_path = (
        repl.get("notebook_path")
        or db.get("notebook_path")
        or _local_property(sc, _DB_NOTEBOOK_PATH)
        or os.environ.get("SPARK_TRACKING_NOTEBOOK_PATH")
        or jupyter_notebook_path()
    )
    ctx.script = None if ctx.notebook_path else script_path()
    ctx.user = repl.get("user") or db.get("user") or _local_property(sc, _DB_USER)
    ctx.cluster_id = (
        repl.get("cluster_id")
        or db.get("clusterId")
        or _local_property(sc, _DB_CLUSTER_ID)
        or os.environ.get("DB_CLUSTER_ID")
    )
    ctx.job_id = repl.get("job_id") or db.get("jobId") or _local_property(sc, _DB_JOB_ID) or os.environ.get("DB_JOB_ID")
    ctx.job_run_id = (
        repl.get("job_run_id")
        or db.get("runId")
        or db.get("multitaskParentRunId")
        or _local_property(sc, _DB_JOB_RUN_ID)
    )
    host = repl.get("host") or db.get("browserHostName") or os.environ.get("DATABRICKS_HOST")
    if host and not host.startswith("http"):
        host = "https://" + host
    ctx.databricks_host = host
    ctx.spark_app_id = _application_id(sc)
    return ctx


def job_cluster_reason(ctx: RunContext | None = None) -> str | None:
    """Why this driver runs a Databricks job, or None: ``DB_IS_JOB_CLUSTER=TRUE`` (Databricks'
    predefined variable on job clusters), else a job id in the notebook context, the Spark local
    property ``spark.databricks.job.id`` or ``DB_JOB_ID``. A job cluster ends with its job, local
    disks included (docs/platform.md), and a job run has nobody reading its cell output."""
    if os.environ.get("DB_IS_JOB_CLUSTER", "").strip().upper() == "TRUE":
        return "a job cluster (DB_IS_JOB_CLUSTER=TRUE)"
    job_id = (ctx or detect()).job_id
    if job_id:
        return f"a Databricks job run (job id {job_id})"
    return None


def experiment_name_for(ctx: RunContext) -> str | None:
    """The experiment a session logs to by default.

    Databricks notebook: its workspace path, as Databricks-managed MLflow does
    (``/Users/me@corp.com/project/train``). Jupyter: the notebook path. Script: the file
    name without extension. Otherwise None (MLflow's default experiment).
    """
    if ctx.notebook_path:
        path = ctx.notebook_path
        if path.endswith(".ipynb") and not ctx.on_databricks:
            return os.path.splitext(os.path.basename(path))[0]
        return path
    if ctx.script:
        name = os.path.splitext(os.path.basename(ctx.script))[0]
        if name == "__main__":  # python -m package: name it after the package
            name = os.path.basename(os.path.dirname(ctx.script))
        return name
    return None


def context_tags(ctx: RunContext) -> dict[str, str]:
    """MLflow tags describing where a run was created (MLflow's own names where they exist)."""
    from ._version import __version__

    tags = {
        "mlflow.databricks.clusterID": ctx.cluster_id,
        "mlflow.databricks.notebookPath": ctx.notebook_path if ctx.on_databricks else None,
        "mlflow.databricks.jobID": ctx.job_id,
        "mlflow.databricks.jobRunID": ctx.job_run_id,
        "mlflow.databricks.webappURL": ctx.databricks_host,
        "mlflow.user": ctx.user,
        "mlflow.source.name": ctx.notebook_path,
        "mlflow.source.type": "NOTEBOOK" if ctx.notebook_path else None,
        "spark_tracking.spark_app_id": ctx.spark_app_id,
        "spark_tracking.version": __version__,
    }
    return {k: str(v) for k, v in tags.items() if v}


def in_spark_worker() -> bool:
    """True in a PySpark Python worker process (forked by the daemon or started directly), or
    in a process a Spark task started (torchrun ranks, subprocesses), which the task's worker
    bound through the environment (``SPARK_TRACKING_RELAY``, see ``forwarding.task.binding``)."""
    if "pyspark.worker" in sys.modules or "pyspark.daemon" in sys.modules or os.environ.get("SPARK_TRACKING_RELAY"):
        return True
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(spec, "name", None) in ("pyspark.worker", "pyspark.daemon"):
        return True
    # at interpreter start (the startup hook) __main__ is not set up yet: the command line tells
    argv = getattr(sys, "orig_argv", None) or []
    return "pyspark.daemon" in argv or "pyspark.worker" in argv
