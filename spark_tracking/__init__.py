"""spark_tracking: one central MLflow store (Azure ML or any MLflow URI) for every Spark session.

Importing this package is cheap (it runs in the startup hook of every Python process); the
public names below load their modules on first use.

- ``configure()``: point MLflow at the central store and name the experiment (session.py);
  ``session_status(mlflow.get_tracking_uri())``: whether this session is configured (status.py)
- ``log_metric/log_metrics/log_param/log_params/set_tag/set_tags``: log to the active run,
  from the driver or from inside Spark tasks (forwarded to the driver's run)
- ``flush(timeout)``, ``stats()``: deliver what is in flight; counters of the forwarding path
- ``bind_current_thread()``: bind the Spark jobs of this driver thread to its run
- ``get_portal_url(run_id)``: where to look at a run (AML studio or the MLflow UI)
- ``Run``: the Azure ML run vocabulary (log, log_list, log_row, log_table, log_image, ...)
- ``RunDetails(run).show()``: a live view of a run while Spark tasks log to it (live/)
"""

from __future__ import annotations

from ._version import __version__

_LAZY = {
    "configure": "spark_tracking.session",
    "current_config": "spark_tracking.session",
    "session_status": "spark_tracking.status",
    "log_metric": "spark_tracking.api",
    "log_metrics": "spark_tracking.api",
    "log_param": "spark_tracking.api",
    "log_params": "spark_tracking.api",
    "set_tag": "spark_tracking.api",
    "set_tags": "spark_tracking.api",
    "flush": "spark_tracking.api",
    "stats": "spark_tracking.api",
    "bind_current_thread": "spark_tracking.api",
    "get_portal_url": "spark_tracking.portal",
    "Run": "spark_tracking.run",
    "RunDetails": "spark_tracking.live",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spark_tracking' has no attribute {name!r}")
    import importlib  # here, not at the top: importlib (and warnings) cost every interpreter start

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
