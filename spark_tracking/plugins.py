"""MLflow plugins, registered as entry points in setup.py and loaded by MLflow in every
process that imports it (driver, executor Python workers, subprocesses).

- ``mlflow.run_context_provider``: context tags on every new run (cluster, notebook, user,
  job, Spark application), and the binding that lets Spark tasks submitted from this thread
  forward to the run (see ``forwarding.driver``).
- ``mlflow.request_header_provider``: identifies spark_tracking in the User-Agent.

Loading this module inside a Spark Python worker routes that worker's MLflow calls to the
forwarding store (``forwarding.task_store``); elsewhere loading it does nothing.
"""

from __future__ import annotations

import logging
import os

from mlflow.tracking.context.abstract_context import RunContextProvider
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from ._version import __version__
from .forwarding import task_store

logger = logging.getLogger(__name__)


def _disabled() -> bool:
    return os.environ.get("SPARK_TRACKING_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")


class SparkTrackingRunContext(RunContextProvider):
    """Tags describing where the run was created, and the Spark task binding."""

    def in_context(self) -> bool:
        return not _disabled()

    def tags(self) -> dict[str, str]:
        from . import context

        if task_store.in_spark_worker():
            return {}
        tags = context.context_tags(context.detect())
        try:
            from .forwarding import driver

            driver.bind_current_thread()
        except Exception:  # forwarding must never stop a run from starting
            logger.warning("spark_tracking: could not bind Spark tasks to this run", exc_info=True)
        return tags


class SparkTrackingHeaders(RequestHeaderProvider):
    def in_context(self) -> bool:
        return not _disabled()

    def request_headers(self) -> dict[str, str]:
        return {"User-Agent": f"spark-tracking/{__version__}"}


if not _disabled():
    task_store.activate_in_worker()
