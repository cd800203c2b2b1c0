"""Every use of an MLflow private name, in one place, with the versions it was checked on.

Each function says which MLflow releases it was read against. When MLflow moves a name, fix it
here (and in ``tests/test_compat_mlflow.py``, which exercises each function on the installed
MLflow); nothing else in the package reaches into MLflow's internals.
"""

from __future__ import annotations


def active_run_stack() -> list:
    """The calling thread's fluent run stack, the list MLflow pushes and pops in place.

    Checked on MLflow 3.17: ``mlflow.tracking.fluent._active_run_stack`` is a
    ``ThreadLocalVariable`` whose ``get()`` returns the thread's list (also 2.10 to 3.x); older
    releases (2.9) keep one module-level list, returned as it is.
    """
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack
    return stack.get() if hasattr(stack, "get") else stack


def default_experiment_id() -> str:
    """The experiment ``mlflow.start_run()`` would use now (set experiment, env, default).

    Checked on MLflow 3.17: ``mlflow.tracking.fluent._get_experiment_id()`` (same name since 1.x).
    """
    from mlflow.tracking import fluent

    return fluent._get_experiment_id()


def tracking_store(client):
    """The tracking store behind an ``MlflowClient`` (None when it has none we can see).

    Checked on MLflow 3.17: ``MlflowClient._tracking_client.store`` (same since 1.x).
    """
    return getattr(getattr(client, "_tracking_client", None), "store", None)


def rest_log_batch_route(store) -> tuple[str, str] | None:
    """(endpoint, HTTP method) of LogBatch for a REST tracking store, else None.

    Checked on MLflow 3.17: ``RestStore._METHOD_TO_INFO[LogBatch]`` and
    ``RestStore.get_host_creds()`` (same since 2.x); ``mlflow.utils.rest_utils.http_request``
    sends the request (``rest_request`` below).
    """
    info = getattr(type(store), "_METHOD_TO_INFO", None)
    if info is None or not hasattr(store, "get_host_creds"):
        return None
    from mlflow.protos.service_pb2 import LogBatch

    return info.get(LogBatch)


def rest_request(store, endpoint: str, method: str, timeout: float, json: dict):
    """One HTTP request to a REST store with MLflow's credentials and no retries; the response.

    Checked on MLflow 3.17: ``mlflow.utils.rest_utils.http_request(host_creds, endpoint, method,
    max_retries=, timeout=, raise_on_status=, json=)`` (these keywords since 2.x).
    """
    from mlflow.utils.rest_utils import http_request

    return http_request(store.get_host_creds(), endpoint, method, max_retries=0, timeout=timeout,
                        raise_on_status=False, json=json)
