"""Logging that works the same on the driver and inside Spark tasks.

On the driver these are MLflow's fluent calls on the active run (started when there is none,
as MLflow does), in the store MLflow is configured for: ``spark_tracking.configure()`` sets
``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` from the settings ``tracking_uri`` and
``experiment_name`` (docs/configuration.md).

Inside a Spark task bound to a driver run (docs/forwarding.md) they validate at the call
(``InvalidInput`` names the value and the rule) and append to the worker's in-memory buffer
(microseconds, no network, no ``import mlflow``); a background thread ships the points to the
driver relay, which logs them to the run that was active when the job was submitted. Settings
that shape this: ``forwarding`` (``SPARK_TRACKING_FORWARDING``; off: tasks are never bound and
log as plain MLflow would), ``buffer_max_points`` (``SPARK_TRACKING_BUFFER_MAX_POINTS``: beyond
it points spill to local disk), ``ship_interval`` (``SPARK_TRACKING_SHIP_INTERVAL``) and
``task_flush_timeout`` (``SPARK_TRACKING_TASK_FLUSH_TIMEOUT``: how long a task's end waits to
hand its points over). ``SPARK_TRACKING_DISABLED=1`` turns all of it off. A task that is not
bound (no driver run, forwarding off) logs as plain MLflow would on the executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .forwarding.task import executor


def in_task() -> bool:
    """True inside a Spark task (or a process a task started) bound to a driver run."""
    return executor.current_binding() is not None


def log_metric(key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
    """Log one metric point to the active run (in a task: the driver's run, see the module
    docstring). ``timestamp`` in ms (default: now); ``step`` default 0. From a stage of several
    tasks the point is stored per worker plus the mean across workers
    (:mod:`spark_tracking.layout`)."""
    if not executor.log_metric(key, value, step, timestamp):
        import mlflow

        mlflow.log_metric(key, value, step=step, timestamp=timestamp)


def log_metrics(metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None) -> None:
    """Log several metrics at one step (see :func:`log_metric`)."""
    if not executor.log_metrics(metrics, step, timestamp):
        import mlflow

        mlflow.log_metrics(dict(metrics), step=step, timestamp=timestamp)


def log_param(key: str, value: Any) -> None:
    """Log a parameter of the active run (in a task: of the driver's run). The value is stored
    as text (at most 6000 characters). A task that logs a param the run already has with
    another value does not change it: MLflow keeps the first value, the second is dropped with
    a warning and counted in ``stats()["dropped"]``."""
    if not executor.log_params({key: value}):
        import mlflow

        mlflow.log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    """Log several parameters (see :func:`log_param`)."""
    if not executor.log_params(params):
        import mlflow

        mlflow.log_params(dict(params))


def set_tag(key: str, value: Any) -> None:
    """Set a tag of the active run (in a task: of the driver's run). The value is stored as
    text (at most 8000 characters); the last value set wins."""
    if not executor.set_tags({key: value}):
        import mlflow

        mlflow.set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set several tags (see :func:`set_tag`)."""
    if not executor.set_tags(tags):
        import mlflow

        mlflow.set_tags(dict(tags))


def log_artifact_bytes(artifact_path: str, data: bytes) -> None:
    """Store ``data`` as the artifact ``artifact_path`` (run-relative) of the active run. From
    a task it is forwarded through the driver, at most 4 MiB per file (less when
    ``relay_max_frame_bytes`` is lowered); a larger one is refused at the call."""
    if not executor.log_artifact_bytes(artifact_path, data):
        import mlflow

        run = mlflow.active_run() or mlflow.start_run()
        from .store import write_artifact_bytes

        write_artifact_bytes(mlflow.MlflowClient(), run.info.run_id, artifact_path, data)


def current_run_id(timeout: float = 10.0) -> str | None:
    """The run this code logs to: the driver's active run, or, in a task, the bound run."""
    binding = executor.current_binding()
    if binding is not None:
        return executor.resolve_run_id(timeout)
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None


def flush(timeout: float | None = 30.0) -> bool:
    """Deliver everything in flight (task buffers, relay, sink) to the store; True when done
    within ``timeout`` seconds (None: wait as long as it takes). The driver also flushes at
    interpreter exit."""
    if executor.current_binding() is not None:
        return executor.flush(timeout)
    from .forwarding.driver import current

    return current.flush(timeout)


def stats(run_id: str | None = None) -> dict[str, Any]:
    """Counters of the forwarding path in this process: on the driver ``received``, ``sent``,
    ``requests``, ``retried``, ``spooled``, ``aggregated``, ``queued``, ``dropped`` (by cause)
    and the relay's connection counters, for the whole driver session; in a task the buffer's.

    With ``run_id`` (on the driver): that run's ``received``, ``sent``, ``spooled`` and
    ``dropped`` (by cause), for the 1,024 runs the driver took points for most recently."""
    if executor.current_binding() is not None:
        if run_id is not None:
            raise ValueError(
                f"spark_tracking.stats(run_id={run_id!r}) in a Spark task: a run's counters are the "
                "driver's; call it on the driver (in a task, stats() gives this task's buffer)"
            )
        return executor.stats()
    from .forwarding.driver import current

    return current.stats(run_id)


def bind_current_thread() -> bool:
    """Bind the Spark jobs this driver thread submits to this thread's active MLflow run.

    MLflow does it at each run start; call it yourself if you started the run before creating
    the SparkSession. Honours ``SPARK_TRACKING_FORWARDING`` / ``spark.sparktracking.forwarding``
    and ``SPARK_TRACKING_DISABLED``. True when bound."""
    from .forwarding.driver import binder

    return binder.bind_current_thread()
