"""Every use of an MLflow private name, in one place, with the versions it was checked on.

Each function says which MLflow releases it was read against. When MLflow moves a name, fix it
here (and in ``tests/test_compat_mlflow.py``, which exercises each function on the installed
MLflow); nothing else in the package reaches into MLflow's internals.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs every interpreter start: the session imports this module
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

#: The variable ``mlflow server`` exports to its workers with its default artifact root. MLflow
#: 3.17.2's client SQL store takes its root from it when given none
#: (``tracking/_tracking_service/utils.py`` ``_get_sqlalchemy_store``; 2.9.2 and 3.0.1 read it
#: only in the server, ``server/handlers.py``), and its presence marks the process and its
#: subprocesses as a tracking server's (``store/artifact/host_policy.py``, GHSA-mr9f-g8qf-4w4j):
#: artifact URIs that name a host (http(s), abfss, hdfs, ftp...) other than the root's are refused
#: ("The tracking server does not connect to artifact location"). So spark_tracking never sets it:
#: the embedded store gets its root from ``embedded_store.sqlite_store``. Checked: 2.9.2, 3.0.1, 3.17.2.
SERVER_ARTIFACT_ROOT_ENV = "_MLFLOW_SERVER_ARTIFACT_ROOT"


def installed_version() -> tuple[int, ...]:
    """MLflow's version as a tuple, read from the installed distribution's metadata (no
    ``import mlflow``, which costs seconds): ``mlflow`` or ``mlflow-skinny``; () when neither."""
    import importlib.metadata as metadata

    for dist in ("mlflow", "mlflow-skinny"):
        try:
            text = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        parts = []
        for piece in text.split(".")[:3]:
            digits = "".join(c for c in piece if c.isdigit()) if not piece.isdigit() else piece
            if not digits:
                break
            parts.append(int(digits))
        return tuple(parts)
    return ()


def global_tracking_uri_module():
    """The module holding the URI ``mlflow.set_tracking_uri`` sets (``_tracking_uri``), or None
    when MLflow is not imported yet. Checked: 2.9.2, 2.13.1, 3.0.1, 3.17.2
    (``mlflow/tracking/_tracking_service/utils.py``)."""
    import sys

    return sys.modules.get("mlflow.tracking._tracking_service.utils")


def import_finished() -> bool:
    """False while ``import mlflow`` is still running. MLflow loads plugins' entry points from
    inside its own import (``mlflow.tracking.fluent`` imports the run-context and
    default-experiment registries, which load them at module import: 2.9.2, 3.0.1, 3.17.2), and
    its API then meets half-initialised modules (checked 3.17.2: ``set_tracking_uri`` resets
    tracing, which imports ``resolve_tags`` from the registry being imported: ImportError).
    Reads the ``__spec__._initializing`` marker CPython's importlib keeps on a module while it
    executes (``importlib._bootstrap._load_unlocked``, CPython 3.9-3.13)."""
    import sys

    module = sys.modules.get("mlflow")
    if module is None:
        return False
    return not getattr(getattr(module, "__spec__", None), "_initializing", False)


def global_tracking_uri() -> str | None:
    """What ``mlflow.set_tracking_uri`` set in this process (not the environment), or None."""
    module = global_tracking_uri_module()
    return getattr(module, "_tracking_uri", None) if module is not None else None


def default_tracking_uri() -> str:
    """The tracking URI MLflow uses when none is set (no ``set_tracking_uri``, no
    ``MLFLOW_TRACKING_URI``): its local default store.

    Checked on MLflow 3.17.2 (``_tracking_service.utils._get_default_tracking_uri``: ``mlruns``
    when it holds data, else ``sqlite:///mlflow.db``); 2.9.2 and 3.0.1 have no such function and
    default to ``./mlruns`` as a ``file:`` URI (the else branch of their ``get_tracking_uri``)."""
    import os

    from mlflow.tracking._tracking_service import utils

    default = getattr(utils, "_get_default_tracking_uri", None)
    if default is not None:
        return default()
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.utils.file_utils import path_to_local_file_uri

    return path_to_local_file_uri(os.path.abspath(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH))


def cached_store(uri: str, artifact_uri: str | None = None):
    """The tracking store MLflow itself uses for ``uri`` (built once per URI and process).

    Checked on MLflow 2.9.2, 3.0.1 and 3.17.2 (``_tracking_service.utils._get_store``)."""
    from mlflow.tracking._tracking_service import utils

    return utils._get_store(uri, artifact_uri)


def build_store(uri: str, artifact_uri: str | None = None):
    """A new tracking store for ``uri``, built by the builder MLflow's registry holds for its
    scheme (plugins included), for use from inside another store builder: MLflow 3 builds
    stores under a lock that is not re-entrant, so ``_get_store`` there would deadlock.
    Checked: ``_tracking_store_registry.get_store_builder`` in 2.9.2, 2.13.1, 3.0.1, 3.17.2."""
    from mlflow.tracking._tracking_service import utils

    builder = utils._tracking_store_registry.get_store_builder(uri)
    return builder(store_uri=uri, artifact_uri=artifact_uri)


def build_sqlalchemy_store(store_uri: str | None, artifact_uri: str | None):
    """MLflow's own SQL tracking store (what its registry builds for ``sqlite://``, ``mysql://``...;
    ``artifact_uri`` None: MLflow's default root). Checked: ``_get_sqlalchemy_store(store_uri,
    artifact_uri)`` in 2.9.2, 3.0.1, 3.17.2 (``tracking/_tracking_service/utils.py``)."""
    from mlflow.tracking._tracking_service import utils

    return utils._get_sqlalchemy_store(store_uri, artifact_uri)


def build_registry_store(uri: str, tracking_uri: str | None = None):
    """A new model registry store for ``uri``, built by the builder MLflow's registry-store
    registry holds for its scheme (``mlflow.model_registry_store`` plugins included), for use from
    inside another registry-store builder (MLflow 3 builds them under a lock that is not
    re-entrant). Builders take ``store_uri`` and, in newer MLflow, ``tracking_uri``.
    Checked: ``_get_store_registry().get_store_builder`` in 2.9.2 and 3.17.2."""
    import inspect

    from mlflow.tracking._model_registry import utils

    builder = utils._get_store_registry().get_store_builder(uri)
    if "tracking_uri" in inspect.signature(builder).parameters:
        return builder(store_uri=uri, tracking_uri=tracking_uri or uri)
    return builder(store_uri=uri)


def put_default_experiment_provider_first(provider) -> None:
    """Make ``provider`` the first default-experiment provider MLflow asks.

    MLflow asks its built-in Databricks notebook provider before any plugin
    (``mlflow/tracking/default_experiment/registry.py``: ``_default_experiment_provider_registry``
    and its ``_registry`` list). Checked: 2.9.2, 2.13.1, 3.0.1, 3.17.2."""
    import sys

    # during MLflow's own import of the registry module (which loads this plugin) it is in
    # sys.modules but not yet an attribute of its package
    module = sys.modules.get("mlflow.tracking.default_experiment.registry")
    if module is None:
        import importlib

        module = importlib.import_module("mlflow.tracking.default_experiment.registry")
    registry = module._default_experiment_provider_registry._registry
    if not registry or registry[0] is not provider:
        registry.insert(0, provider)


def register_artifact_repository_if_absent(scheme: str, factory) -> bool:
    """Register ``factory`` for artifact URIs of ``scheme`` unless a repository (e.g. a plugin's
    entry point) has it already. Checked: ``_artifact_repository_registry._registry`` in
    ``mlflow/store/artifact/artifact_repository_registry.py`` of 2.9.2, 2.13.1, 3.0.1, 3.17.2."""
    from mlflow.store.artifact import artifact_repository_registry as module

    registry = module._artifact_repository_registry
    if scheme in registry._registry:
        return False
    registry.register(scheme, factory)
    return True


def active_run_stack() -> list:
    """The calling thread's fluent run stack, the list MLflow pushes and pops in place.

    Checked on MLflow 3.0.1 and 3.17.2: ``mlflow.tracking.fluent._active_run_stack`` is a
    ``ThreadLocalVariable`` whose ``get()`` returns the thread's list; 2.9.2 keeps one
    module-level list, returned as it is.
    """
    from mlflow.tracking import fluent

    stack: Any = fluent._active_run_stack  # its type differs by MLflow version
    return stack.get() if hasattr(stack, "get") else stack


def default_experiment_id() -> str | None:
    """The experiment ``mlflow.start_run()`` would use now (set experiment, env, default), or
    None when MLflow names none.

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

    return http_request(
        store.get_host_creds(), endpoint, method, max_retries=0, timeout=timeout, raise_on_status=False, json=json
    )


def fluent_start_run_arguments() -> dict | None:
    """The arguments of the ``mlflow.start_run`` call that is creating a run right now (its
    frame's locals: ``nested``, ``run_name``, ``tags``, ``experiment_id``, ``parent_run_id``,
    ``description``), or None when the run is not created by ``mlflow.start_run`` (an
    ``MlflowClient().create_run`` call). MLflow passes none of them to the store, and
    ``start_run(nested=True)`` with no active run reaches the store exactly as
    ``start_run()`` does.

    Checked on MLflow 2.9.2, 3.0.1 and 3.17.2 (``mlflow.tracking.fluent.start_run``)."""
    import sys

    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "start_run" and frame.f_globals.get("__name__") == "mlflow.tracking.fluent":
            return dict(frame.f_locals)
        frame = frame.f_back
    return None


def run_with_inputs(run):
    """``run`` with empty inputs (and outputs, where MLflow has them) instead of None: MLflow
    3.0.x's fluent ``log_metric`` reads ``run.inputs.dataset_inputs`` unguarded.

    Checked on MLflow 2.9.2 (``Run(info, data, inputs)``), 3.0.1 and 3.17.2
    (``Run(info, data, inputs, outputs)``)."""
    from mlflow.entities import Run, RunInputs

    if run.inputs is not None:
        return run
    inputs = RunInputs(dataset_inputs=[])
    try:
        from mlflow.entities import RunOutputs
    except ImportError:  # MLflow 2
        return Run(run.info, run.data, inputs)
    return Run(run.info, run.data, inputs, run.outputs if run.outputs is not None else RunOutputs(model_outputs=[]))


#: the parameters of ``mlflow.log_metric`` its fast path was checked against (MLflow 3.0.1, 3.17.2)
_LOG_METRIC_PARAMETERS = ("key", "value", "step", "synchronous", "timestamp", "run_id", "model_id", "dataset")


def put_fast_path_before_log_metric(scheme: str, forward) -> bool:
    """Put a fast path in front of the fluent ``mlflow.log_metric`` for runs of the tracking store
    of ``scheme``: ``forward(run_id, key, value, step, timestamp)`` takes the metric (False: it
    did not, and MLflow's own path runs). True when the fast path is in place (idempotent).

    Why: per call, MLflow's fluent ``log_metric`` builds two ``MlflowClient`` (each resolving the
    tracking and registry URIs, the registry's through the active Spark session) and records a
    telemetry event before it reaches the store: 96% of the call in a task, 30 µs of 32
    (benchmarks/run.py, (d') against (c), MLflow 3.17.2). The fast path does what
    ``fluent.log_metric`` then does for the store, for the common call only: no ``run_id``,
    ``model_id`` or ``dataset`` argument, a run active in this thread, the tracking URI of
    ``scheme`` (``set_tracking_uri`` elsewhere wins), no active model (``set_active_model``)
    and no model output of the run (MLflow links metrics to those); every other call, and
    every call ``forward`` declines, is MLflow's own. The value is converted as MLflow's
    client converts it, step and timestamp default as MLflow defaults them, and the return
    value is MLflow's (``RunOperations`` when asynchronous, else None). Skipped: MLflow's
    usage telemetry for these calls.

    Checked on MLflow 3.0.1 and 3.17.2 (``fluent.log_metric``, ``active_run``,
    ``get_active_model_id``, ``_tracking_service.utils._tracking_uri``,
    ``MLFLOW_ENABLE_ASYNC_LOGGING``); another signature (MLflow 2.x: no ``run_id``,
    ``synchronous=True`` by default) keeps MLflow's path.
    """
    import inspect
    import os

    import mlflow
    from mlflow.environment_variables import MLFLOW_ENABLE_ASYNC_LOGGING
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils
    from mlflow.tracking.metric_value_conversion_utils import convert_metric_value_to_float_if_possible
    from mlflow.utils.async_logging.run_operations import RunOperations
    from mlflow.utils.time import get_current_time_millis

    original = fluent.log_metric
    if getattr(original, "__spark_tracking_fast_path__", False):
        return True
    if tuple(inspect.signature(original).parameters) != _LOG_METRIC_PARAMETERS:
        return False
    active_run, active_model_id, environ, prefix = (
        fluent.active_run,
        fluent.get_active_model_id,
        os.environ,
        scheme + ":",
    )

    def log_metric(key, value, step=None, synchronous=None, timestamp=None, run_id=None, model_id=None, dataset=None):
        if run_id is None and model_id is None and dataset is None:
            run = active_run()
            uri = utils._tracking_uri
            if uri is None:
                uri = environ.get("MLFLOW_TRACKING_URI", "")
            if (
                run is not None
                and uri.startswith(prefix)
                and active_model_id() is None
                and not (run.outputs is not None and run.outputs.model_outputs)
            ):
                if type(value) is not float:
                    value = convert_metric_value_to_float_if_possible(value)
                if forward(run.info.run_id, key, value, step or 0, timestamp or get_current_time_millis()):
                    if synchronous is False or (synchronous is None and MLFLOW_ENABLE_ASYNC_LOGGING.get()):
                        return RunOperations(operation_futures=[])
                    return None
        return original(key, value, step, synchronous, timestamp, run_id, model_id, dataset)

    log_metric.__doc__, log_metric.__wrapped__ = original.__doc__, original  # type: ignore[attr-defined]
    log_metric.__name__ = log_metric.__qualname__ = "log_metric"
    log_metric.__module__ = original.__module__
    log_metric.__spark_tracking_fast_path__ = True  # type: ignore[attr-defined]
    fluent.log_metric = log_metric
    if getattr(mlflow, "log_metric", None) is original:
        mlflow.log_metric = log_metric
    return True


def register_tracking_store(scheme: str, builder) -> None:
    """Register a tracking store for a URI scheme in this process (what the
    ``mlflow.tracking_store`` entry points do at import), e.g. a do-nothing store to measure
    MLflow's own cost.

    Checked on MLflow 2.9.2, 3.0.1 and 3.17.2 (``_tracking_service.utils._tracking_store_registry``)."""
    from mlflow.tracking._tracking_service import utils

    utils._tracking_store_registry.register(scheme, builder)


def start_run_log_system_metrics() -> bool | None:
    """The ``log_system_metrics`` argument of the ``mlflow.start_run`` call creating a run right
    now (None: not given, or the run is not created by ``start_run``). ``start_run`` passes it
    neither to the store nor to the run-context providers; given, it wins over MLflow's switch
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``.

    Checked on MLflow 2.9.2 and 3.17.2 (``mlflow.tracking.fluent.start_run``; system metrics
    exist since MLflow 2.8)."""
    args = fluent_start_run_arguments()
    value = None if args is None else args.get("log_system_metrics")
    return None if value is None else bool(value)
