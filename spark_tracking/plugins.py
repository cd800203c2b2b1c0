"""MLflow plugins, registered as entry points in setup.py and loaded by MLflow in every
process that imports it (driver, executor Python workers, subprocesses).

- ``mlflow.run_context_provider``: context tags on every new run (cluster, notebook, user,
  job, Spark application), and the binding that lets Spark tasks submitted from this thread
  forward to the run (see ``forwarding.driver.binder`` and ``forwarder``).
- ``mlflow.request_header_provider``: identifies spark_tracking in the User-Agent.
- ``mlflow.default_experiment_provider``: names the experiment of a Databricks notebook at its
  first run, once the notebook context (dbutils) exists, which is after interpreter start.
  MLflow asks its own Databricks notebook provider (a workspace notebook id, meaningless to an
  AML store) before any plugin, so this one puts itself first (``_compat.mlflow``); it answers
  only in sessions spark_tracking configured, and only when the user set no experiment.

Without azureml-mlflow, the ``azureml`` artifact scheme (AML runs' artifact URIs) gets a
repository that refuses at once with the fix, instead of MLflow's "no artifact repository".

Loading this module inside a Spark Python worker routes that worker's MLflow calls to the
forwarding store (``forwarding.task.store``). Loading it also runs the startup hook when the
interpreter did not run it (``hook.start_at_mlflow_import``: a Databricks notebook's
environment does not process the runtime's ``.pth`` files); MLflow loads it at ``import mlflow``.
"""

from __future__ import annotations

import logging
import os

from mlflow.tracking.context.abstract_context import RunContextProvider
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from ._version import __version__
from .forwarding.task import store as task_store

logger = logging.getLogger(__name__)


def _disabled() -> bool:
    return os.environ.get("SPARK_TRACKING_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")


class SparkTrackingRunContext(RunContextProvider):
    """Tags describing where the run was created, and the Spark task binding."""

    def in_context(self) -> bool:
        """True unless ``SPARK_TRACKING_DISABLED`` is set."""
        return not _disabled()

    def tags(self) -> dict[str, str]:
        """Where the run was created (cluster, notebook, job...) as MLflow tags; on the driver, binds
        the Spark tasks this thread starts to the new run. Nothing inside a Spark task."""
        from . import context

        if task_store.in_spark_worker():
            return {}
        _warn_if_unconfigured()
        tags = context.context_tags(context.detect())
        try:
            from .forwarding.driver import binder

            binder.bind_current_thread()
        except Exception:  # forwarding must never stop a run from starting
            logger.warning("spark_tracking: could not bind Spark tasks to this run", exc_info=True)
        return tags


def _warn_if_unconfigured() -> None:
    """Never silently elsewhere: the first run of a session that should be configured says so."""
    try:
        from mlflow.tracking import get_tracking_uri

        from .status import warn_at_first_run

        warn_at_first_run(get_tracking_uri())
    except Exception:  # a warning must never stop a run from starting
        logger.debug("spark_tracking: session check failed", exc_info=True)


class SparkTrackingHeaders(RequestHeaderProvider):
    """Adds ``User-Agent: spark-tracking/<version>`` to MLflow's REST requests."""

    def in_context(self) -> bool:
        """True unless ``SPARK_TRACKING_DISABLED`` is set."""
        return not _disabled()

    def request_headers(self) -> dict[str, str]:
        """The headers to add: the ``User-Agent``."""
        return {"User-Agent": f"spark-tracking/{__version__}"}


class SparkTrackingExperiment(DefaultExperimentProvider):
    """The session's experiment, named when MLflow first needs one (see the module docstring)."""

    def __init__(self):
        from ._compat.mlflow import put_default_experiment_provider_first

        self._name = None
        put_default_experiment_provider_first(self)

    def in_context(self) -> bool:
        """True when a configured session names a default experiment (not in Spark tasks, not when
        ``SPARK_TRACKING_DISABLED`` is set)."""
        from . import session

        if _disabled() or task_store.in_spark_worker() or session.current_config() is None:
            return False
        self._name = session.default_experiment_name()
        return bool(self._name)

    def get_experiment_id(self) -> str:
        """The id of the session's experiment, created when it does not exist yet."""
        from mlflow.tracking import MlflowClient

        from . import session

        name = self._name or session.default_experiment_name()
        assert name, "in_context() said there is a name"
        client = MlflowClient()
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        session.set_experiment_env(name)  # later runs and subprocesses: MLflow's own variable
        logger.info("spark_tracking: experiment %r (%s) for this notebook", name, experiment_id)
        return experiment_id


def _aml_artifacts_need_azureml_mlflow(artifact_uri, *args, **kwargs):
    from .azure.store import artifacts_need_azureml_mlflow

    raise artifacts_need_azureml_mlflow(artifact_uri)


if not _disabled():
    task_store.activate_in_worker()
    # an interpreter that reached the cluster's packages without processing their .pth files (a
    # Databricks notebook's environment): configure the session now, before any run exists
    from . import hook

    hook.start_at_mlflow_import()
    try:
        from ._compat.mlflow import register_artifact_repository_if_absent
        from .azure.store import azureml_mlflow_installed

        if not azureml_mlflow_installed():
            register_artifact_repository_if_absent("azureml", _aml_artifacts_need_azureml_mlflow)
    except Exception:  # a clearer error is a nicety: never break MLflow's import for it
        logger.debug("spark_tracking: azureml artifact scheme not registered", exc_info=True)
