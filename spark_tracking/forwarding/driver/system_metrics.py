"""Driver side of workers' system metrics: whether the tasks of a run sample them, and how often.

The driver decides when it binds a thread's jobs to a run (``Forwarder.bind``, at each run
start) and tells the tasks through the job property ``protocol.PROP_SYSTEM_METRICS`` (the
sampling interval in seconds; absent: off). The tasks sample (``forwarding.task.system_metrics``).

On when, first that says:

1. the ``log_system_metrics`` argument of the ``mlflow.start_run`` call starting the run
   (``start_run(log_system_metrics=False)`` turns them off for that run, as for MLflow's own);
2. the setting ``system_metrics`` (``SPARK_TRACKING_SYSTEM_METRICS``, Spark conf, config file);
3. MLflow's switch ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``, read at run start (what
   ``mlflow.enable_system_metrics_logging()`` sets, also after ``configure()``).

Interval: the setting ``system_metrics_interval`` when set anywhere, else MLflow's
``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` read at run start
(``mlflow.set_system_metrics_sampling_interval``), else 10 s.
"""

from __future__ import annotations

import logging
import os

from ..._compat import mlflow as mlflow_compat

logger = logging.getLogger(__name__)

_MLFLOW_SWITCH = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
_MLFLOW_INTERVAL = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"


def sampling_interval(cfg, environ=None) -> float | None:
    """The seconds between two samples of a worker for the run starting now; None: off."""
    environ = os.environ if environ is None else environ
    requested = mlflow_compat.start_run_log_system_metrics()
    if requested is None:
        requested = bool(cfg.system_metrics) or environ.get(_MLFLOW_SWITCH, "").strip().lower() in ("true", "1")
    if not requested:
        return None
    if cfg.sources.get("system_metrics_interval", "default") == "default":
        raw = environ.get(_MLFLOW_INTERVAL)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                value = 0.0
            if value > 0 and value != float("inf"):
                return value
            logger.warning(
                "spark_tracking: %s=%r is not a number of seconds > 0; workers sample every %gs",
                _MLFLOW_INTERVAL,
                raw,
                cfg.system_metrics_interval,
            )
    return float(cfg.system_metrics_interval)
