"""The Databricks Runtime's private Python modules, in one place, with what each was read from.

``dbruntime.databricks_repl_context.get_context()`` is the notebook REPL's context object; MLflow
reads notebook path, ids, job and host from it first, "to avoid calling JVM methods"
(mlflow/utils/databricks_utils.py ``_use_repl_context_if_available``, read in MLflow 2.9.2 and
3.17.2; mlflow#5132). Attributes used here, as MLflow names them: ``notebookPath``, ``clusterId``,
``jobId``, ``idInJob`` (the job run), ``browserHostName``; ``user`` is seen in public notebooks
(``get_context().user``), not in MLflow: likely, so a missing one is simply not used. On standard
access mode the JVM route (py4j, dbutils' command context) is refused (py4j allowlisting,
``Py4JSecurityException``), which makes this the only source there.
"""

from __future__ import annotations

import os

#: REPL context attribute -> RunContext-style key
_ATTRIBUTES = {
    "notebookPath": "notebook_path",
    "user": "user",
    "clusterId": "cluster_id",
    "jobId": "job_id",
    "idInJob": "job_run_id",
    "browserHostName": "host",
}


def repl_context() -> dict[str, str]:
    """What the Databricks REPL context knows (keys of ``_ATTRIBUTES``' values), or {} outside a
    Databricks notebook (only tried when ``DATABRICKS_RUNTIME_VERSION`` is set: an import attempt
    costs a scan of ``sys.path``). Never raises."""
    if not os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return {}
    try:
        from dbruntime.databricks_repl_context import get_context  # type: ignore[import-not-found]

        context = get_context()
    except Exception:  # noqa: BLE001 - not a notebook REPL, or a runtime without it
        return {}
    if context is None:
        return {}
    found = {}
    for attribute, key in _ATTRIBUTES.items():
        try:
            value = getattr(context, attribute, None)
        except Exception:  # noqa: BLE001 - a property that fails is a value we do not have
            value = None
        if value not in (None, ""):
            found[key] = str(value)
    return found
