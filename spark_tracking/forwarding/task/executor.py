"""Executor side: the logging calls inside a Spark task, and the task's start and end.

A call validates its input at the call site (MLflow's rules, see :mod:`spark_tracking.validation`,
plus the room the per-worker suffix, ``layout.worker_key_suffix``, needs) and appends a record
(:class:`~.frames.Point`, :class:`~.frames.Entry`) to the shipper's deque: no network, no
lock, no disk, no ``import mlflow``. The :mod:`.shipper` thread sends it to the driver relay;
:mod:`.spill` keeps what the relay cannot take; :mod:`.binding` says where points go.

Task start and end (PySpark has no public hook; every private touched is in
:mod:`spark_tracking._compat.pyspark`):
- start: the task's binding is exported to the environment, for processes the task starts
  (torchrun ranks, subprocesses);
- end: PySpark resets the task context after the task's output is written and before the
  task reports success; there the task's points are handed to the driver, waiting at most
  ``task_flush_timeout`` in total (what is left is then in the spill file, its write waited for);
- a task that raises: in a worker forked by the daemon with the startup hook installed (the
  init script's setup), and on PySpark 4.x in any worker that logged, the points are handed
  over before the worker reports the error to the JVM (which may then kill the worker).

Fork safety: PySpark forks Python workers from a daemon; a forked process starts with an empty
buffer (the parent ships its own) and its own shipper thread. A ``multiprocessing`` child ships
what it logged when ``multiprocessing`` ends it (fork children never run ``atexit``).

Settings (environment > config file > default, via :mod:`spark_tracking.config`):
``SPARK_TRACKING_BUFFER_MAX_POINTS``, ``SPARK_TRACKING_SHIP_INTERVAL``,
``SPARK_TRACKING_TASK_FLUSH_TIMEOUT``, ``SPARK_TRACKING_RELAY_MAX_FRAME_BYTES`` (the driver's
value reaches tasks through the job property ``spark_tracking.max_frame``).
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import sys
import time

from ... import validation
from ..._compat import pyspark as compat
from ...validation import InvalidInput
from .. import protocol
from . import binding as _binding
from . import system_metrics as _system_metrics
from .binding import Binding, TaskSettings
from .frames import Entry, Point, new_id, new_point
from .shipper import Shipper
from .transport import open_connection as _open_connection

logger = logging.getLogger(__name__)

_MAX_ARTIFACT_BYTES = 4 * 1024 * 1024  # per artifact from a task, when the relay's frames allow it

shipper = Shipper()
_buf = shipper.queue  # the hot path appends here (the same deque for the process's life)
_good_keys: set = set()  # metric keys already checked against the current key suffix
_good_suffix = ""
_batch_trigger = 2000
_children = _binding.ChildExport()
current_binding = _binding.current


def max_task_artifact_bytes() -> int:
    """The largest artifact a task can forward: alone in a frame once base64 (4 bytes of 3)
    within three quarters of the relay's ``relay_max_frame_bytes``."""
    b = _binding.cached()
    frame_bytes = b.settings.max_frame_bytes if b is not None else TaskSettings.resolve().max_frame_bytes
    return min(_MAX_ARTIFACT_BYTES, frame_bytes * 3 // 4 * 3 // 4)


def _on_bind(b: Binding) -> None:
    global _batch_trigger, _good_suffix
    shipper.configure(b.relay, b.secret, b.settings)
    _batch_trigger = max(1, min(2000, b.settings.buffer_max_points))
    if b.key_suffix != _good_suffix:
        _good_keys.clear()
        _good_suffix = b.key_suffix
    if b.from_task:
        install_task_hooks()
    else:  # a process a task started (a rank): its system metrics, when the job has them on
        _system_metrics.process_bound(b, shipper)
    if _finalized_pid != os.getpid():
        _ship_when_multiprocessing_ends()


_binding.on_bind = _on_bind


# -- hot path --------------------------------------------------------------------------------


def _wake_shipper() -> None:
    wake = shipper.wake
    if not wake.is_set():  # set() takes a lock and notifies: once per batch, not per call
        wake.set()


def _metric_key(key, b: Binding) -> str:
    validation.check_key(key, suffix=b.key_suffix)
    if len(_good_keys) < 100_000:
        _good_keys.add(key)
    return key


def log_metric(key, value, step=None, timestamp=None) -> bool:
    """Append one point if this process is bound to a driver run; False otherwise.
    Raises :class:`~spark_tracking.validation.InvalidInput` for what MLflow would refuse."""
    b = current_binding()
    if b is None:
        return False
    if key not in _good_keys:
        _metric_key(key, b)
    if type(value) is not float:
        value = validation.metric_value(key, value)
    if step is None:
        step = 0
    elif type(step) is not int or not -0x8000000000000000 <= step <= 0x7FFFFFFFFFFFFFFF:  # int64: constants
        step = validation.step_value(step, key)
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    elif type(timestamp) is not int or not 0 <= timestamp <= 0x7FFFFFFFFFFFFFFF:
        timestamp = validation.timestamp_value(timestamp, key)
    _buf.append(new_point((b, key, value, timestamp, step)))
    if len(_buf) >= _batch_trigger:
        _wake_shipper()
    return True


def log_metrics(metrics, step=None, timestamp=None) -> bool:
    """Append several metrics of one step (checked like :func:`log_metric`); False when unbound."""
    b = current_binding()
    if b is None:
        return False
    timestamp = int(time.time() * 1000) if timestamp is None else validation.timestamp_value(timestamp)
    step = validation.step_value(step)
    checked = [(_metric_key(k, b), validation.metric_value(k, v)) for k, v in metrics.items()]
    _buf.extend(Point(b, k, v, timestamp, step) for k, v in checked)
    if len(_buf) >= _batch_trigger:
        _wake_shipper()
    return True


def _log_pairs(kind: str, pairs, value_rule) -> bool:
    b = current_binding()
    if b is None:
        return False
    name = "param" if kind == "p" else "tag"
    checked = [(validation.check_key(k, name), value_rule(k, v)) for k, v in pairs.items()]
    _buf.extend(Entry(b, kind, k, v) for k, v in checked)
    _wake_shipper()
    return True


def log_params(params) -> bool:
    """Append params (values as ``str``, MLflow's limits checked); False when unbound."""
    return _log_pairs("p", params, validation.param_value)


def set_tags(tags) -> bool:
    """Append tags (values as ``str``, MLflow's limits checked); False when unbound."""
    return _log_pairs("t", tags, validation.tag_value)


def log_artifact_bytes(artifact_path: str, data: bytes) -> bool:
    """Append an artifact (at most :func:`max_task_artifact_bytes`); False when unbound."""
    b = current_binding()
    if b is None:
        return False
    if (
        not isinstance(artifact_path, str)
        or not artifact_path
        or artifact_path.startswith("/")
        or ".." in artifact_path.split("/")
    ):
        raise InvalidInput(f"artifact path {artifact_path!r} must be a relative path like 'tables/rows.json'")
    data = bytes(data)
    limit = max_task_artifact_bytes()
    if len(data) > limit:
        raise InvalidInput(
            f"artifact {artifact_path!r} is {len(data)} bytes; a Spark task forwards at most "
            f"{limit} bytes ({limit / 2**20:g} MiB) per artifact through the driver. Write larger files to "
            f"shared storage (a Unity Catalog volume, /dbfs) and log them from the driver with "
            f"mlflow.log_artifact, or split them"
        )
    _buf.append(Entry(b, "a", artifact_path, base64.b64encode(data).decode("ascii")))
    _wake_shipper()
    return True


def forward_batch(run_id: str | None, metrics=(), params=(), tags=()) -> bool:
    """Forward MLflow entities to ``run_id`` (None: the run the driver thread had active),
    checked at the call like :func:`log_metric` (MLflow's client does not check a numpy step
    or a too-long key for us). False when this process is not bound."""
    b = current_binding()
    if b is None:
        return False
    b = b.for_run(run_id)
    rows: list = [_metric_row(b, m.key, m.value, m.step, m.timestamp) for m in metrics]
    rows.extend(
        Entry(b, "p", validation.check_key(p.key, "param"), validation.param_value(p.key, p.value)) for p in params
    )
    rows.extend(Entry(b, "t", validation.check_key(t.key, "tag"), validation.tag_value(t.key, t.value)) for t in tags)
    _buf.extend(rows)
    if len(_buf) >= _batch_trigger or params or tags:
        _wake_shipper()
    return True


def forward_value(run_id: str | None, key, value, step, timestamp) -> bool:
    """:func:`forward_batch` of one metric, by its parts: the path of every plain
    ``mlflow.log_metric`` in a task, so it builds no lists and no MLflow ``Metric``. False when
    this process is not bound."""
    b = current_binding()
    if b is None:
        return False
    if run_id is not None:
        b = b.for_run(run_id)
    _buf.append(_metric_row(b, key, value, step, timestamp))
    if len(_buf) >= _batch_trigger:
        _wake_shipper()
    return True


def _metric_row(b: Binding, key, value, step, ts) -> Point:
    """The queue entry of a metric, checked like :func:`log_metric`."""
    if key not in _good_keys:
        _metric_key(key, b)
    if type(value) is not float:
        value = validation.metric_value(key, value)
    if type(step) is not int or not -0x8000000000000000 <= step <= 0x7FFFFFFFFFFFFFFF:
        step = validation.step_value(step, key)
    if type(ts) is not int or not 0 <= ts <= 0x7FFFFFFFFFFFFFFF:
        ts = validation.timestamp_value(ts, key)
        if ts is None:
            ts = int(time.time() * 1000)
    return new_point((b, key, value, ts, step))


# -- flush, stats ----------------------------------------------------------------------------


def flush(timeout: float | None = 30.0, done: Binding | None = None, error: str = "") -> bool:
    """Wait until everything logged so far is in the driver's custody. True when it is; False
    when ``timeout`` passed (what is left is then in the spill file)."""
    return shipper.flush(timeout, done, error)


def stats() -> dict:
    """The task side's counters: shipped, spilled, dropped, refused, send_failures, flush_timeouts, buffered."""
    return dict(shipper.counters, buffered=shipper.buffered())


def resolve_run_id(timeout: float = 10.0) -> str | None:
    """Ask the relay which run this task logs to (a round trip; not for hot loops)."""
    b = current_binding()
    if b is None:
        return None
    conn = _open_connection(b.relay, b.secret, timeout)
    try:
        return conn.request({"id": new_id(), "op": "resolve", "b": b.binding, "w": b.worker}).get("run")
    finally:
        conn.close()


# -- task start and end ----------------------------------------------------------------------


def _on_task_start(task_context=None) -> None:
    """The task context is complete: hand the binding to processes the task starts."""
    ctx = task_context if task_context is not None else compat.current_task_context()
    if ctx is not None:
        _children.export(ctx)
        _system_metrics.task_started(ctx, shipper)


_task_error = ""  # the error line of the bound task's function, when it raised (sent with "done")


def _on_task_error(exc: BaseException) -> None:
    """The task's function raised ``exc`` (its end follows): its "done" says so, in one line."""
    global _task_error
    if _binding.cached() is not None:
        _task_error = protocol.error_line(exc)


def _on_task_end() -> None:
    """The task's function returned (or raised): hand its points to the driver within
    ``task_flush_timeout`` in total, then forget the task's binding."""
    global _task_error
    b = _binding.cached()
    error, _task_error = _task_error, ""
    _system_metrics.task_ended()  # no system-metrics point of this task after its flush
    try:
        if b is not None and b.from_task:
            timeout = b.settings.task_flush_timeout
            if not flush(timeout, done=b, error=error):
                _warn_left_over("task", timeout)
        # any task, bound or not, and only if MLflow ran in it: importing the task store imports
        # mlflow, and mlflow loading our plugins while the task store is half-imported leaves the
        # worker unrouted
        task_store = sys.modules.get(f"{__package__}.store")
        if task_store is not None:
            task_store.end_task_runs()
    except Exception:
        logger.warning("spark_tracking: end-of-task flush failed", exc_info=True)
    finally:
        _children.clear()
        _binding.forget()


def _warn_left_over(whose: str, timeout: float) -> None:
    logger.warning(
        "spark_tracking: the driver did not take this %s's points within task_flush_timeout (%gs); "
        "they are in the spill file %s and ship later",
        whose,
        timeout,
        shipper.spill.folder,
    )


_hooks_installed = False


def install_task_hooks() -> None:
    """Hook task start (export the binding to child processes) and task end (flush), and in
    PySpark's daemon the end of each forked worker's task function (return or raise).

    Installed by the startup hook when a PySpark daemon/worker starts, when MLflow loads our
    plugins in a worker, and at a task's first log call. Idempotent; never raises."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    try:
        forked = compat.hook_forked_workers(_install_in_worker)  # the daemon: each worker it forks
        if not forked or "pyspark.taskcontext" in sys.modules:
            _install_in_worker()
        current = compat.current_task_context()
        if current is not None:
            _on_task_start(current)
    except Exception:
        logger.info("spark_tracking: no task hooks on this PySpark; points ship within ship_interval", exc_info=True)


def _install_in_worker() -> None:
    if "pyspark.taskcontext" in sys.modules or compat.is_daemon_process():
        compat.wrap_set_task_context(_on_task_start, _on_task_end)
        compat.wrap_worker_entry(_on_task_start, _on_task_over, _on_task_error)


def _on_task_over() -> None:
    """The task's function returned or raised (the worker may be killed next). Also for a
    task that is not bound: the runs it left open must not pass to the worker's next task."""
    _on_task_end()


def _after_fork_in_child() -> None:
    shipper.after_fork_in_child()
    _binding.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


_finalized_pid = 0  # the process whose multiprocessing end already ships its points


def _ship_when_multiprocessing_ends() -> None:
    """In a ``multiprocessing`` child (a ``Process``, a ``Pool`` or ``ProcessPoolExecutor``
    worker): ship at its end. One started with fork (Linux's default start method up to Python
    3.13) or forkserver ends with ``os._exit``, so ``atexit`` never runs there; its
    ``BaseProcess._bootstrap`` runs ``multiprocessing.util._exit_function()`` first, which
    calls the ``Finalize`` callbacks (CPython 3.9-3.14, ``multiprocessing/process.py``). The
    registry of those is emptied in a forked child before its target runs, hence registered
    here, at the child's first log call. A child killed with a signal (``Pool.terminate()``,
    which a ``with Pool()`` block calls) runs nothing: what it logged within its last
    ``ship_interval`` is lost."""
    global _finalized_pid
    process = sys.modules.get("multiprocessing.process")
    if process is None or process.parent_process() is None:
        return
    _finalized_pid = os.getpid()
    from multiprocessing import util

    util.Finalize(None, _ship_at_exit, exitpriority=10)


@atexit.register
def _ship_at_exit() -> None:
    """The process ends (a torchrun rank, a subprocess or ``multiprocessing`` child a task
    started): what it logged goes to the driver within ``task_flush_timeout``, as at a task's
    end; what is left is spilled.

    Asked of the shipper thread whenever it runs, not only when ``buffered()``: a frame the
    thread is sending counts nowhere while in flight, and a rank that returns right after its
    last ``log_metric`` would otherwise end with it unsent and unspilled."""
    if not shipper.is_alive():
        return
    b = _binding.cached()
    timeout = b.settings.task_flush_timeout if b is not None else TaskSettings().task_flush_timeout
    if not shipper.shutdown(timeout):
        _warn_left_over("process", timeout)
