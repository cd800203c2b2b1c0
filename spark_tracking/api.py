"""Logging that works the same on the driver and inside Spark tasks.

On the driver these are MLflow's fluent calls on the active run. Inside a Spark task bound to
a driver run (see ``forwarding``), they validate and append to the worker's in-memory buffer
(microseconds, no network, no ``import mlflow``); a background thread ships the points to the
driver relay, which logs them to the run that was active when the job was submitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .forwarding import executor


def in_task() -> bool:
    """True inside a Spark task (or a process a task started) bound to a driver run."""
    return executor.current_binding() is not None


def log_metric(key: str, value: float, step: int | None = None, timestamp: int | None = None) -> None:
    """Log one metric point. ``timestamp`` in ms (default: now); ``step`` default 0."""
    if not executor.log_metric(key, value, step, timestamp):
        import mlflow

        mlflow.log_metric(key, value, step=step, timestamp=timestamp)


def log_metrics(metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None) -> None:
    """Log several metrics at one step."""
    if not executor.log_metrics(metrics, step, timestamp):
        import mlflow

        mlflow.log_metrics(dict(metrics), step=step, timestamp=timestamp)


def log_param(key: str, value: Any) -> None:
    if not executor.log_params({key: value}):
        import mlflow

        mlflow.log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    if not executor.log_params(params):
        import mlflow

        mlflow.log_params(dict(params))


def set_tag(key: str, value: Any) -> None:
    if not executor.set_tags({key: value}):
        import mlflow

        mlflow.set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    if not executor.set_tags(tags):
        import mlflow

        mlflow.set_tags(dict(tags))


def log_artifact_bytes(artifact_path: str, data: bytes) -> None:
    """Store ``data`` as the artifact ``artifact_path`` of the run (forwarded from tasks)."""
    if not executor.log_artifact_bytes(artifact_path, data):
        import mlflow

        run = mlflow.active_run() or mlflow.start_run()
        from .forwarding.sink import write_artifact_bytes

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
    """Deliver everything in flight (task buffers, relay, sink) to the store. True when done."""
    if executor.current_binding() is not None:
        return executor.flush(timeout)
    from .forwarding import driver

    return driver.flush(timeout)


def stats() -> dict[str, Any]:
    """Counters of the forwarding path in this process: received, sent, retried, spooled,
    dropped (by cause), ... — see docs/forwarding.md."""
    if executor.current_binding() is not None:
        return executor.stats()
    from .forwarding import driver

    return driver.stats()
