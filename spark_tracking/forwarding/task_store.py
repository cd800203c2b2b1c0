"""An MLflow tracking store for Spark Python workers: MLflow calls made inside a bound task
are forwarded to the driver; everything else goes to the store the worker would have used.

Why a store: it is MLflow's own plugin point (``mlflow.tracking_store`` entry point, scheme
``spark-tracking-task``), so ``mlflow.log_metric``, ``MlflowClient().log_batch`` and
autologging inside a task all pass through it without patching MLflow. When MLflow is
imported inside a Spark Python worker, ``plugins.py`` (loaded by MLflow through its entry
points) sets ``MLFLOW_TRACKING_URI=spark-tracking-task:`` and keeps the worker's previous URI
in ``SPARK_TRACKING_TASK_DELEGATE_URI``. An explicit ``mlflow.set_tracking_uri()`` in the task
still wins (that is "direct" mode: the task writes to the store itself).

Inside a bound task:
- ``create_run`` (what ``mlflow.start_run()`` or the first ``mlflow.log_metric`` calls) asks
  the relay once per task for the driver's run and hands that run out, RUNNING;
- ``log_batch``/``log_metric``/``log_param``/``set_tag`` append to the worker's buffer — to
  the handed-out run, or to the explicit run id a client passed;
- ``update_run_info`` (``mlflow.end_run()``) on a handed-out run does nothing: a task never
  ends the driver's run. At the end of the task the handed-out run is popped from MLflow's
  active-run stack, so a reused worker starts its next task clean.
Outside a bound task every call goes to the delegate store.
"""

from __future__ import annotations

import os
import sys

from mlflow.entities import Experiment, Run, RunData, RunInfo, RunStatus
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.store.tracking.abstract_store import AbstractStore

from ..context import in_spark_worker
from . import executor

SCHEME = "spark-tracking-task"
ENV_DELEGATE = "SPARK_TRACKING_TASK_DELEGATE_URI"
_handed_out: dict[str, Run] = {}
#: every run id handed out in this worker: a fluent run MLflow kept active from an earlier task
#: (a reused worker) must log to the current task's run, never to the old one
_ever_handed_out: set[str] = set()


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
    """Pop the runs this store handed out from MLflow's active-run stack (end of a task)."""
    if not _handed_out or "mlflow.tracking.fluent" not in sys.modules:
        _handed_out.clear()
        return
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    while stack and stack[-1].info.run_id in _handed_out:
        stack.pop()
    _handed_out.clear()


def _delegating(name):
    def method(self, *args, **kwargs):
        return getattr(self.delegate, name)(*args, **kwargs)

    method.__name__ = name
    return method


class TaskStore(AbstractStore):
    def __init__(self, store_uri=None, artifact_uri=None):
        super().__init__()
        self._artifact_uri = artifact_uri
        self._delegate = None

    @property
    def delegate(self) -> AbstractStore:
        if self._delegate is None:
            from mlflow.tracking._tracking_service import utils

            uri = os.environ.get(ENV_DELEGATE) or utils._get_default_tracking_uri()
            if uri.startswith(SCHEME):
                raise RuntimeError("spark-tracking-task store cannot delegate to itself")
            self._delegate = utils._get_store(uri, self._artifact_uri)
        return self._delegate

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        if executor.current_binding() is None:
            return self.delegate.create_run(experiment_id, user_id, start_time, tags, run_name)
        run_id = executor.resolve_run_id(timeout=10.0)
        info = RunInfo(run_id=run_id, experiment_id=str(experiment_id or "0"), user_id=user_id or "",
                       status=RunStatus.to_string(RunStatus.RUNNING), start_time=start_time,
                       end_time=None, lifecycle_stage=LifecycleStage.ACTIVE, run_name=run_name or "")
        run = Run(info, RunData())
        _handed_out[run_id] = run
        _ever_handed_out.add(run_id)
        return run

    def get_run(self, run_id):
        run = _handed_out.get(run_id)
        return run if run is not None else self.delegate.get_run(run_id)

    def update_run_info(self, run_id, run_status, end_time, run_name):
        run = _handed_out.get(run_id)
        if run is not None:
            return run.info  # a task never ends the driver's run
        return self.delegate.update_run_info(run_id, run_status, end_time, run_name)

    # -- writes ------------------------------------------------------------------------------

    def log_batch(self, run_id, metrics, params, tags):
        target = None if run_id in _handed_out or run_id in _ever_handed_out else run_id
        if not executor.forward_batch(target, metrics, params, tags):
            self.delegate.log_batch(run_id, metrics, params, tags)

    def log_metric(self, run_id, metric):
        self.log_batch(run_id, [metric], [], [])

    def log_param(self, run_id, param):
        self.log_batch(run_id, [], [param], [])

    def set_tag(self, run_id, tag):
        self.log_batch(run_id, [], [], [tag])

    def log_batch_async(self, run_id, metrics, params, tags):
        from mlflow.utils.async_logging.run_operations import RunOperations

        self.log_batch(run_id, metrics, params, tags)  # the buffer is asynchronous already
        return RunOperations(operation_futures=[])

    def log_metric_async(self, run_id, metric):
        return self.log_batch_async(run_id, [metric], [], [])

    def log_param_async(self, run_id, param):
        return self.log_batch_async(run_id, [], [param], [])

    def set_tag_async(self, run_id, tag):
        return self.log_batch_async(run_id, [], [], [tag])

    def flush_async_logging(self):
        executor.flush(30.0)

    def end_async_logging(self):
        pass

    def shut_down_async_logging(self):
        pass

    # -- experiments: in a bound task only the name matters (the driver's run decides) --------

    def get_experiment_by_name(self, experiment_name):
        if executor.current_binding() is None:
            return self.delegate.get_experiment_by_name(experiment_name)
        return Experiment("0", experiment_name, "", LifecycleStage.ACTIVE)

    def get_experiment(self, experiment_id):
        if executor.current_binding() is None:
            return self.delegate.get_experiment(experiment_id)
        return Experiment(str(experiment_id), "", "", LifecycleStage.ACTIVE)


for _name in ("search_experiments", "create_experiment", "delete_experiment", "restore_experiment",
              "rename_experiment", "set_experiment_tag", "delete_run", "restore_run", "get_metric_history",
              "search_runs", "_search_runs", "delete_tag", "log_inputs", "log_outputs", "get_run_inputs"):
    if hasattr(AbstractStore, _name):
        setattr(TaskStore, _name, _delegating(_name))
