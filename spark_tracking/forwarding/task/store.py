"""An MLflow tracking store for Spark Python workers: MLflow calls made inside a bound task
are forwarded to the driver; everything else goes to the store the worker would have used.

Why a store: it is MLflow's own plugin point (``mlflow.tracking_store`` entry point, scheme
``spark-tracking-task``), so ``mlflow.log_metric``, ``MlflowClient().log_batch`` and
autologging inside a task all pass through it without patching MLflow. When MLflow is
imported inside a Spark Python worker, ``plugins.py`` (loaded by MLflow through its entry
points) sets ``MLFLOW_TRACKING_URI=spark-tracking-task:`` and keeps the worker's previous URI
in ``SPARK_TRACKING_TASK_DELEGATE_URI``. An explicit ``mlflow.set_tracking_uri()`` in the task
still wins (that is "direct" mode: the task writes to the store itself).

Inside a bound task, runs are the driver's: the driver holds the credentials, creates and
reads them, and the task never opens a store of its own.

- ``mlflow.start_run()`` with no arguments (and the first ``mlflow.log_metric`` without a run,
  which calls it) hands out the run the driver thread has active, as MLflow's own
  ``Run`` (real id, experiment and artifact URI), fetched from the driver once per task. When
  the driver cannot be reached the task gets a stand-in run at once: its points go to the
  buffer and spill, and reach the driver's run once the relay answers.
- ``start_run(run_name=...)``, ``start_run(nested=True)``, ``start_run(tags=...)``,
  ``start_run(parent_run_id=...)`` and ``MlflowClient().create_run(...)`` create a real run:
  the driver creates it on the task's request, a child of the driver's run (tag
  ``mlflow.parentRunId``) unless the code names another parent (an active run in the task, or
  ``parent_run_id``), in its parent's experiment unless the code names one. Its id is the real
  one: returned to the driver, ``MlflowClient().get_run(run_id)`` finds it.
- ``get_run`` of any other run (``start_run(run_id=<id from the driver>)``) is answered by the
  driver; runs the task created or was handed are answered from the task's copy (info as
  created; ``log_metric(run_id=...)`` reads it on every call).
- ``end_run()`` ends a run the task created with MLflow's status (FAILED when the task raises
  out of the ``with`` block); a task never ends a run it did not create (the driver's run, a
  run it resumed by id). Runs the task created and left open are ended FINISHED at task end.
- ``log_batch``/``log_metric``/``log_param``/``set_tag`` append to the worker's buffer, aimed
  at the handed-out run or at the explicit run id.
- Artifacts: runs and logged models carry an artifact URI of the scheme
  ``spark-tracking-artifacts`` (``task_artifacts``), whose repository sends files to the driver.
- MLflow 3 logged models, run inputs/outputs and metric history are calls on the driver's store
  (``protocol.STORE_CALLS``).
- Experiments too (``get_experiment_by_name``, ``get_experiment``, ``create_experiment``,
  ``search_experiments``, tags, renames): the code names them (``mlflow.set_experiment``,
  Lightning's ``MLFlowLogger(experiment_name=...)``); lookups are asked once per task. After
  ``mlflow.set_experiment(x)``, ``mlflow.start_run()`` creates a run in ``x``, a child of the
  driver's run, instead of handing out the driver's run (unless ``x`` is the driver's run's
  experiment).

Outside a bound task every call goes to the delegate store.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid

from mlflow.entities import Experiment, Run, RunStatus
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.store.tracking.abstract_store import AbstractStore

from ..._compat import mlflow as mlflow_compat
from ..._compat import pyspark as pyspark_compat
from ...context import in_spark_worker
from ...validation import InvalidInput
from .. import protocol
from ..records import encode
from . import executor
from .run_requests import DriverUnreachable, request, rewrite_artifact_uris

logger = logging.getLogger(__name__)

SCHEME = protocol.TASK_STORE_SCHEME
ENV_DELEGATE = protocol.ENV_DELEGATE_URI
#: how long the first log call of a task waits for the driver's run before going on without it
HANDOUT_TIMEOUT = 2.0
_PENDING_PREFIX = "sparktrackingpending"
_handed_out: dict[str, Run] = {}
#: every run id handed out in this worker: a fluent run MLflow kept active from an earlier task
#: (a reused worker) must log to the current task's run, never to the old one
_ever_handed_out: set[str] = set()
_created: dict[str, Run] = {}  # runs this task created (it ends them)
_resumed: dict[str, Run] = {}  # runs of others this task made active (start_run(run_id=...))
#: runs a task that is not bound created in the executor's store -> that store
_local: dict[str, AbstractStore] = {}
_warned: set[str] = set()
#: experiments this task looked up on the driver: ("name", name) / ("id", id) -> Experiment
_experiments: dict[tuple[str, str], Experiment] = {}
#: experiment calls a bound task answers from ``_experiments`` before asking the driver
_CACHED_LOOKUPS = frozenset({"get_experiment_by_name", "get_experiment"})


def activate_in_worker() -> bool:
    """Route this worker's MLflow calls through TaskStore (idempotent). No-op off workers."""
    if not in_spark_worker():
        return False
    if os.environ.get("SPARK_TRACKING_FORWARDING", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    executor.install_task_hooks()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(SCHEME):
        return True
    os.environ[ENV_DELEGATE] = uri
    os.environ["MLFLOW_TRACKING_URI"] = SCHEME + ":"
    return True


def end_task_runs() -> None:
    """End of a task, bound or not: end the runs it created and left open (FINISHED), and pop
    every run of this task from MLflow's active-run stack, so a reused worker starts its next
    task clean (MLflow refuses ``start_run()`` while a run is active, and would log to it)."""
    mine = set(_handed_out) | set(_created) | set(_resumed) | set(_local)
    left_open = []
    if mine and "mlflow.tracking.fluent" in sys.modules:
        stack = mlflow_compat.active_run_stack()
        while stack and stack[-1].info.run_id in mine:
            left_open.append(stack.pop().info.run_id)
    for run_id in left_open:
        store = _local.get(run_id)
        if store is not None:
            try:
                store.update_run_info(run_id, RunStatus.FINISHED, int(time.time() * 1000), None)
            except Exception:
                logger.warning("spark_tracking: could not end run %s at the end of its task", run_id, exc_info=True)
    for run_id, run in list(_created.items()):
        if run.info.status == "RUNNING":
            try:
                request("update_run", {"r": run_id, "s": "FINISHED", "e": int(time.time() * 1000)})
            except Exception:
                logger.warning("spark_tracking: could not end run %s at the end of its task", run_id, exc_info=True)
    _handed_out.clear()
    _created.clear()
    _resumed.clear()
    _local.clear()
    _experiments.clear()


def _target(run_id: str) -> str | None:
    """Where a write to ``run_id`` goes: None (the run the driver thread has active for this
    task) for the run handed out in this task, and for a run an earlier task of this worker was
    handed that MLflow still keeps active here (its end was missed); else ``run_id`` itself —
    an explicit id stays explicit even when an earlier task was handed that run."""
    if run_id in _handed_out:
        return None
    if run_id in _ever_handed_out and "mlflow.tracking.fluent" in sys.modules:
        stack = mlflow_compat.active_run_stack()
        if stack and stack[-1].info.run_id == run_id:
            return None
    return run_id


def _forward_metric(run_id: str, key: str, value, step: int, timestamp: int) -> bool:
    """One metric of a task's run, by its parts: :meth:`TaskStore.log_metric`'s path, and the
    fast path of a plain ``mlflow.log_metric`` in a task, taken before MLflow builds its clients
    (``_compat.mlflow.put_fast_path_before_log_metric``). False outside bound tasks (MLflow's
    path then reaches the delegate)."""
    # one lookup for the common run (not handed out by the driver, or the one it handed out)
    target = None if run_id in _handed_out else _target(run_id) if run_id in _ever_handed_out else run_id
    try:
        return executor.forward_value(target, key, value, step, timestamp)
    except InvalidInput as exc:
        raise _mlflow_error(exc) from None


def _mlflow_error(exc: InvalidInput):
    """A refused value as MLflow's own error (``MlflowException`` with its error code): what
    code calling MLflow inside a task catches, as it would without spark_tracking."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    return MlflowException(str(exc), error_code=ErrorCode.Value(exc.error_code))


def _warn_once(key: str, text: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(text, *args)


def _stand_in_run(experiment_id, start_time) -> Run:
    """The driver's run when the driver cannot be reached: points logged to it are buffered,
    spilled, and shipped to the driver thread's run once the relay answers."""
    from mlflow.protos.service_pb2 import RUNNING
    from mlflow.protos.service_pb2 import Run as ProtoRun

    message = ProtoRun()
    info = message.info
    info.run_id = info.run_uuid = _PENDING_PREFIX + uuid.uuid4().hex[: 32 - len(_PENDING_PREFIX)]
    info.experiment_id = str(experiment_id or "0")
    info.status = RUNNING
    info.lifecycle_stage = LifecycleStage.ACTIVE
    info.start_time = start_time or int(time.time() * 1000)
    rewrite_artifact_uris(message)
    return mlflow_compat.run_with_inputs(Run.from_proto(message))


def _creates_a_run(tags: dict) -> bool:
    """False for ``mlflow.start_run()`` with no arguments (the driver's run); True for a run
    the code asks for: a name, nesting, tags, a parent, an experiment, or the client API."""
    args = mlflow_compat.fluent_start_run_arguments()
    if args is None:
        return True
    return bool(
        args.get("nested")
        or args.get("run_name")
        or args.get("tags")
        or args.get("description")
        or args.get("parent_run_id")
        or args.get("experiment_id") is not None
        or protocol.PARENT_TAG in tags
    )


def _names_another_experiment(experiment_id, driver_run: Run) -> bool:
    """True when ``mlflow.start_run()`` runs in an experiment the task's code named
    (``mlflow.set_experiment``) other than the driver's run's: MLflow's default "0", the driver's
    own experiment (an inherited ``MLFLOW_EXPERIMENT_NAME``) and a stand-in run do not count."""
    if experiment_id is None or str(experiment_id) == "0":
        return False
    run_id = driver_run.info.run_id
    return not run_id.startswith(_PENDING_PREFIX) and str(experiment_id) != driver_run.info.experiment_id


def _delegating(name):
    def method(self, *args, **kwargs):
        return getattr(self.delegate, name)(*args, **kwargs)

    method.__name__ = name
    return method


def _on_driver(name):
    """A store call answered by the driver's store in a bound task (``protocol.STORE_CALLS``)."""

    def method(self, *args, **kwargs):
        if executor.current_binding() is None:
            return getattr(self.delegate, name)(*args, **kwargs)
        return request("store_call", {"m": name, "a": encode(list(args)), "k": encode(kwargs)["$d"]})

    method.__name__ = name
    return method


class TaskStore(AbstractStore):
    """The ``spark-tracking-task:`` tracking store (see the module docstring)."""

    def __init__(self, store_uri=None, artifact_uri=None):
        super().__init__()
        self._artifact_uri = artifact_uri
        self._delegate = None
        try:  # MLflow builds a store once per URI and process, after ``import mlflow`` finished
            mlflow_compat.put_fast_path_before_log_metric(SCHEME, _forward_metric)
        except Exception:  # MLflow's own path still forwards, only slower
            logger.debug("spark_tracking: no fast path for mlflow.log_metric", exc_info=True)

    @property
    def delegate(self) -> AbstractStore:
        """The store this one stands in front of, used outside bound tasks: the worker's own
        ``MLFLOW_TRACKING_URI`` from before it was routed here (kept in
        ``SPARK_TRACKING_TASK_DELEGATE_URI``), else MLflow's default."""
        if self._delegate is None:
            uri = os.environ.get(ENV_DELEGATE) or mlflow_compat.default_tracking_uri()
            if uri.startswith(SCHEME):
                raise RuntimeError("spark-tracking-task store cannot delegate to itself")
            self._delegate = mlflow_compat.cached_store(uri, self._artifact_uri)
        return self._delegate

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        """In a bound task: hand out the driver's run, or create a run through the driver (a nested
        or explicitly created run); elsewhere the delegate's."""
        if executor.current_binding() is None:
            if pyspark_compat.current_task_context() is not None:
                _warn_once(
                    "unbound",
                    "spark_tracking: this Spark task is not bound to a driver run (no "
                    "spark_tracking session on the driver); MLflow logs to %s on the executor",
                    os.environ.get(ENV_DELEGATE) or "MLflow's default store",
                )
            run = self.delegate.create_run(experiment_id, user_id, start_time, tags, run_name)
            _local[run.info.run_id] = self.delegate
            return run
        tag_map = {t.key: t.value for t in tags or []}
        if not _creates_a_run(tag_map):
            handed_out = self._hand_out(experiment_id, start_time)
            if not _names_another_experiment(experiment_id, handed_out):
                return handed_out
            # the code named an experiment (mlflow.set_experiment): a run there, the driver's child
        run = request(
            "create_run",
            {
                "x": None if experiment_id is None else str(experiment_id),
                "u": user_id,
                "s": start_time,
                "t": sorted(tag_map.items()),
                "n": run_name,
            },
        )
        run = _created[run.info.run_id] = mlflow_compat.run_with_inputs(run)
        return run

    def _hand_out(self, experiment_id, start_time) -> Run:
        try:
            run = request("get_run", {}, timeout=HANDOUT_TIMEOUT, attempts=1)
        except DriverUnreachable as exc:
            _warn_once(
                "handout",
                "spark_tracking: the driver's relay is unreachable at %s (%s); this task's points "
                "wait in its buffer and spill file and reach the driver's run once the relay answers",
                exc.address,
                exc.cause or exc,
            )
            run = _stand_in_run(experiment_id, start_time)
        run = mlflow_compat.run_with_inputs(run)
        _handed_out[run.info.run_id] = run
        _ever_handed_out.add(run.info.run_id)
        return run

    def get_run(self, run_id):
        """A run this task was handed or created, else the driver's answer (the delegate's outside
        bound tasks)."""
        run = _handed_out.get(run_id) or _created.get(run_id) or _resumed.get(run_id)
        if run is not None:
            return run
        if executor.current_binding() is None:
            return self.delegate.get_run(run_id)
        return mlflow_compat.run_with_inputs(request("get_run", {"r": run_id}))

    def update_run_info(self, run_id, run_status, end_time, run_name):
        """End or rename a run the task created (through the driver); a run it did not create is
        left as it is."""
        if executor.current_binding() is None:
            return self.delegate.update_run_info(run_id, run_status, end_time, run_name)
        created = _created.get(run_id)
        if created is None:  # a task never changes a run it did not create
            run = self.get_run(run_id)
            if run_id not in _handed_out:
                _resumed[run_id] = run
            return run.info
        status = RunStatus.to_string(run_status) if isinstance(run_status, int) else str(run_status)
        info = request("update_run", {"r": run_id, "s": status, "e": end_time, "n": run_name})
        _created[run_id] = mlflow_compat.run_with_inputs(Run(info, created.data, created.inputs))
        return info

    # -- writes ------------------------------------------------------------------------------

    def log_batch(self, run_id, metrics, params, tags):
        """Forward to the driver (buffered, shipped in the background); the delegate's outside bound tasks."""
        try:
            forwarded = executor.forward_batch(_target(run_id), metrics, params, tags)
        except InvalidInput as exc:
            raise _mlflow_error(exc) from None
        if not forwarded:
            self.delegate.log_batch(run_id, metrics, params, tags)

    def log_metric(self, run_id, metric):
        """:meth:`log_batch` of one metric, without building lists."""
        # a plain mlflow.log_metric of a task the fast path declined comes here: no lists
        if not _forward_metric(run_id, metric.key, metric.value, metric.step, metric.timestamp):
            self.delegate.log_metric(run_id, metric)

    def log_param(self, run_id, param):
        """:meth:`log_batch` of one param."""
        self.log_batch(run_id, [], [param], [])

    def set_tag(self, run_id, tag):
        """:meth:`log_batch` of one tag."""
        self.log_batch(run_id, [], [], [tag])

    def log_batch_async(self, run_id, metrics, params, tags):
        """:meth:`log_batch` (forwarding is asynchronous already); the operations are done at once."""
        from mlflow.utils.async_logging.run_operations import RunOperations

        self.log_batch(run_id, metrics, params, tags)  # the buffer is asynchronous already
        return RunOperations(operation_futures=[])

    def log_metric_async(self, run_id, metric):
        """:meth:`log_batch_async` of one metric."""
        return self.log_batch_async(run_id, [metric], [], [])

    def log_param_async(self, run_id, param):
        """:meth:`log_batch_async` of one param."""
        return self.log_batch_async(run_id, [], [param], [])

    def set_tag_async(self, run_id, tag):
        """:meth:`log_batch_async` of one tag."""
        return self.log_batch_async(run_id, [], [], [tag])

    def flush_async_logging(self):
        """Ship what this task buffered to the driver (up to 30 s)."""
        executor.flush(30.0)

    def end_async_logging(self):
        """Nothing to end: the task's shipper lives with the task."""
        pass

    def shut_down_async_logging(self):
        """Nothing to shut down: the task's shipper lives with the task."""
        pass

    # -- experiments: the central store's, through the driver (lookups cached per task) -------

    def get_experiment_by_name(self, experiment_name):
        """In a bound task, the driver's store's answer (cached for the task); else the delegate's."""
        if executor.current_binding() is None:
            return self.delegate.get_experiment_by_name(experiment_name)
        key = ("name", experiment_name)
        if key not in _experiments:
            found = _lookup("get_experiment_by_name", experiment_name)
            if found is None:
                return None  # not cached: the task may create it next
            _remember(found, key)
        return _experiments[key]

    def get_experiment(self, experiment_id):
        """In a bound task, the driver's store's answer (cached for the task); else the delegate's."""
        if executor.current_binding() is None:
            return self.delegate.get_experiment(experiment_id)
        key = ("id", str(experiment_id))
        if key not in _experiments:
            _remember(_lookup("get_experiment", str(experiment_id)), key)
        return _experiments[key]


def _lookup(method: str, value: str):
    """An experiment lookup on the driver's store (which may be slow: AML's backoff), asked once;
    when the driver cannot be reached, MLflow's default "0", so that ``mlflow.start_run()`` (which
    looks up ``MLFLOW_EXPERIMENT_NAME``) hands out the stand-in run as before, and the task's
    points reach the driver's run once the relay answers."""
    try:
        return request("store_call", {"m": method, "a": [value], "k": []}, attempts=1)
    except DriverUnreachable as exc:
        _warn_once(
            "experiment",
            "spark_tracking: the driver's relay is unreachable at %s (%s); experiment lookups in "
            "this task answer with the driver's run's experiment",
            exc.address,
            exc.cause or exc,
        )
        name = value if method == "get_experiment_by_name" else ""
        return Experiment(value if method == "get_experiment" else "0", name, "", LifecycleStage.ACTIVE)


def _remember(experiment, key) -> None:
    _experiments[key] = experiment
    if experiment is not None and experiment.experiment_id != "0":
        _experiments[("id", experiment.experiment_id)] = experiment
        _experiments[("name", experiment.name)] = experiment


def _on_driver_experiment(name):
    """An experiment call answered by the driver's store; it forgets the task's lookups (the
    call may rename, tag or delete what they found)."""
    call = _on_driver(name)

    def method(self, *args, **kwargs):
        if executor.current_binding() is not None:
            _experiments.clear()
        return call(self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in (
    "delete_run",
    "restore_run",
    "search_runs",
    "_search_runs",
    "delete_tag",
    "get_run_inputs",
):
    if hasattr(AbstractStore, _name):
        setattr(TaskStore, _name, _delegating(_name))
for _name in protocol.STORE_CALLS - _CACHED_LOOKUPS:
    if hasattr(AbstractStore, _name):
        setattr(TaskStore, _name, (_on_driver_experiment if "experiment" in _name else _on_driver)(_name))
