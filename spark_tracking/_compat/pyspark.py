"""Every touch of a PySpark private, in one place, with the versions it was checked on.

Checked on PySpark 3.5.0, 4.0.0 and 4.3.0 (the sources of ``pyspark/taskcontext.py``,
``pyspark/worker.py`` and ``pyspark/daemon.py``). Each function degrades to "not available"
(returns None or False, logs at debug level) on a PySpark that differs, never raises into a
Spark worker. ``tests/test_compat_pyspark.py`` checks each against the installed PySpark.

Nothing here imports pyspark unless the process already did (a worker always has).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable

logger = logging.getLogger(__name__)

#: The daemon's per-worker entry and the worker's steps this module wraps (3.5.0-4.3.0).
_WORKER_STEPS = ("read_command", "read_udfs")


def task_context_reader() -> Callable[[], object] | None:
    """A cheap zero-argument callable giving the running task's TaskContext (or None), or
    None when ``pyspark.taskcontext`` is not loaded in this process.

    Reads the private class attribute ``TaskContext._taskContext`` (3.5.0-4.3.0):
    ``TaskContext.get()`` is public but costs a classmethod call per log call. On a PySpark
    without that attribute (renamed), the public ``TaskContext.get`` (slower, never raising
    here: outside a task it gives None)."""
    module = sys.modules.get("pyspark.taskcontext")
    if module is None:
        return None
    cls = module.TaskContext
    if "_taskContext" in vars(cls):
        return functools.partial(getattr, cls, "_taskContext")
    logger.debug("spark_tracking: TaskContext._taskContext is gone on this PySpark; using TaskContext.get()")
    return _quiet_get(cls.get)


def _quiet_get(get: Callable[[], object]) -> Callable[[], object]:
    def read():
        try:
            return get()
        except Exception:  # noqa: BLE001 - a log call must never raise for a PySpark that differs
            return None

    return read


def is_barrier(task_context) -> bool:
    """True in a barrier task (``BarrierTaskContext``, public since 2.4)."""
    module = sys.modules.get("pyspark.taskcontext")
    return module is not None and isinstance(task_context, module.BarrierTaskContext)


def stage_attempt_number(task_context) -> int:
    """The stage attempt of a task, or 0 where PySpark does not tell it.

    PySpark 3.5.0-4.3.0 give Python tasks no ``stageAttemptNumber()`` (the JVM does not send
    it to the worker); a PySpark that adds it is used as is."""
    method = getattr(task_context, "stageAttemptNumber", None)
    if method is None:
        return 0
    try:
        return int(method())
    except Exception:  # noqa: BLE001 - a worker must not fail on it
        return 0


def wrap_set_task_context(on_start: Callable[[object], None], on_end: Callable[[], None]) -> bool:
    """Call ``on_start(ctx)`` / ``on_end()`` when PySpark sets / resets the task context.

    Wraps the private classmethod ``TaskContext._setTaskContext`` (3.5.0-4.3.0). The worker
    resets it to None after a task's output is written and before it reports success. On
    4.3.0 the context is complete when set; on 3.5.0/4.0.0 a barrier task's is set before
    its local properties are read and a plain task's is not set at all (see
    :func:`wrap_worker_entry`). Returns False when it cannot be wrapped."""
    try:
        from pyspark.taskcontext import TaskContext

        original = TaskContext.__dict__["_setTaskContext"].__func__
        if getattr(original, "_spark_tracking", False):
            return True

        def _setTaskContext(cls, task_context):  # noqa: N802 - the name PySpark calls
            if cls is TaskContext:
                if task_context is None:
                    on_end()
                else:
                    on_start(task_context)
            original(cls, task_context)

        _setTaskContext._spark_tracking = True  # type: ignore[attr-defined]
        TaskContext._setTaskContext = classmethod(_setTaskContext)  # type: ignore[method-assign,assignment]
        return True
    except Exception:
        logger.debug("spark_tracking: TaskContext._setTaskContext cannot be wrapped", exc_info=True)
        return False


def current_task_context():
    """The running task's TaskContext, or None (no pyspark import; never raises)."""
    read = task_context_reader()
    return read() if read is not None else None


def _wrap(owner, name: str, make: Callable[[Callable], Callable]) -> bool:
    original = getattr(owner, name, None)
    if not callable(original) or getattr(original, "_spark_tracking", False):
        return False
    wrapper = functools.wraps(original)(make(original))
    wrapper._spark_tracking = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)
    return True


def wrap_worker_entry(
    on_task_ready: Callable[[], None],
    on_task_over: Callable[[], None],
    on_task_error: Callable[[BaseException], None] | None = None,
) -> list[str]:
    """In a PySpark Python worker: call ``on_task_ready()`` once the task context is complete
    (before the task's function runs) and ``on_task_over()`` when the task's function has
    returned or raised — before the worker tells the JVM, which may then kill it. When it
    raised, ``on_task_error(exception)`` is called first: on 4.0.0/4.3.0 with what
    ``handle_worker_exception(e, outfile)`` is handed; where only ``main`` is wrapped (3.5.0),
    with the exception ``main`` was handling when it called ``sys.exit(-1)`` (the
    ``SystemExit``'s ``__context__``), after the error went to the JVM.

    Wraps, where present, in the worker module (``pyspark.worker`` or the module the daemon
    was started with):
    - ``read_command`` / ``read_udfs`` (3.5.0, 4.0.0, 4.3.0): called after the task context
      is filled in and before the function runs — task start on 3.5/4.0;
    - ``handle_worker_exception`` (4.0.0, 4.3.0): a task that raised, before the error is
      written to the JVM;
    - the worker's ``main`` (all): the task returned or raised. The daemon of 3.5.0/4.0.0
      holds ``main`` as its own global ``worker_main`` (imported before forking); 4.3.0 looks
      it up on the worker module for each task. Wrapping ``main`` only helps tasks that
      start after this call: call it in a daemon child right after the fork.
    Returns the names wrapped (empty outside a worker)."""
    wrapped: list[str] = []
    try:
        name = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("pyspark") else "pyspark.worker"
        if name not in sys.modules and not _is_pyspark_daemon(sys.modules.get("__main__")):
            return wrapped
        import importlib

        module = importlib.import_module(name)
    except Exception:
        logger.debug("spark_tracking: no PySpark worker module to hook", exc_info=True)
        return wrapped

    def before(original):
        def call(*args, **kwargs):
            _quietly(on_task_ready)
            return original(*args, **kwargs)

        return call

    def report(error) -> None:
        if on_task_error is not None and isinstance(error, BaseException):
            _quietly(lambda: on_task_error(error))

    def on_error(original):
        def call(*args, **kwargs):
            report(args[0] if args else kwargs.get("e"))
            _quietly(on_task_over)
            return original(*args, **kwargs)

        return call

    def around(original):
        def call(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            except SystemExit as exc:
                if exc.code not in (None, 0):  # main's error exit: the task's error is its context
                    report(exc.__context__)
                raise
            except BaseException as exc:
                report(exc)
                raise
            finally:
                _quietly(on_task_over)

        return call

    for step in _WORKER_STEPS:
        if _wrap(module, step, before):
            wrapped.append(step)
    if _wrap(module, "handle_worker_exception", on_error):
        wrapped.append("handle_worker_exception")
    daemon = sys.modules.get("__main__")
    if _is_pyspark_daemon(daemon) and callable(getattr(daemon, "worker_main", None)):
        if _wrap(daemon, "worker_main", around):  # 3.5.0 / 4.0.0 daemon
            wrapped.append("daemon.worker_main")
    elif _wrap(module, "main", around):  # 4.3.0: the daemon looks it up for each task
        wrapped.append("main")
    return wrapped


def _is_pyspark_daemon(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return getattr(spec, "name", None) == "pyspark.daemon" and callable(getattr(module, "manager", None))


def is_daemon_process() -> bool:
    """True in PySpark's worker daemon (``python -m pyspark.daemon``) or a worker it forked."""
    argv = getattr(sys, "orig_argv", None) or sys.argv
    return "pyspark.daemon" in argv


def hook_forked_workers(install: Callable[[], None]) -> bool:
    """In PySpark's daemon: run ``install()`` in every worker it forks, right after the fork
    (before the worker's first task). The daemon ends its workers with ``os._exit`` (no
    ``atexit``), so this is the only way to act when a task function returns or raises."""
    if not is_daemon_process():
        return False

    def after_fork():
        if _is_pyspark_daemon(sys.modules.get("__main__")):
            _quietly(install)

    os.register_at_fork(after_in_child=after_fork)
    return True


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.warning("spark_tracking: a task hook failed", exc_info=True)


def connect_session(this_thread_only: bool = False):
    """The Spark Connect client session of this thread, else (unless ``this_thread_only``) the
    process's default one, else None.

    ``pyspark.sql.connect.session.SparkSession.getActiveSession()`` / ``.active()``; looked at
    only when the Connect client is already imported (it needs grpc). Checked on pyspark 4.0.0
    and 4.3.0."""
    module = sys.modules.get("pyspark.sql.connect.session")
    if module is None:
        return None
    try:
        cls = module.SparkSession
        session = cls.getActiveSession() if this_thread_only else cls.active()
    except Exception:  # noqa: BLE001 - no active or default session (PySparkRuntimeError)
        return None
    return None if getattr(session, "is_stopped", False) else session


def connect_server_host(session) -> str | None:
    """Host name of the Spark Connect server a client session talks to (``session.client.host``,
    undocumented). Checked on pyspark 4.0.0 and 4.3.0."""
    try:
        return session.client.host
    except Exception:  # noqa: BLE001 - an undocumented name: missing in some version
        return None


def active_spark_context():
    """The process's running classic SparkContext, or None: ``SparkContext._active_spark_context``
    (a class attribute, the same on 3.5.0-4.3.0). Never imports pyspark, never starts Spark,
    never raises (a Spark Connect client has no SparkContext: None)."""
    if "pyspark" not in sys.modules:
        return None
    try:
        from pyspark import SparkContext

        return SparkContext._active_spark_context
    except Exception:  # noqa: BLE001 - a lookup returns None when it cannot tell
        return None


def launched_server_env(name: str) -> str | None:
    """``name`` in the environment of a Spark Connect server this process launched, or None.

    ``SparkSession.builder.remote("local[2]")`` starts the server in this process's own JVM, as
    a classic ``SparkContext`` (``RemoteSparkSession._start_connect_server``), and sets
    ``SPARK_LOCAL_REMOTE=1``; the JVM's environment (``java.lang.System.getenv`` through the
    context's private ``_jvm``) is the one its Python workers start with. Checked on pyspark
    4.0.0 and 4.3.0 (4.3's opt-in reused server, ``SPARK_LOCAL_CONNECT_REUSE``, runs in a
    process of its own: None)."""
    if os.environ.get("SPARK_LOCAL_REMOTE") != "1":
        return None
    sc = active_spark_context()
    try:
        return None if sc is None else sc._jvm.java.lang.System.getenv(name)
    except Exception:  # noqa: BLE001 - a stopped context or a changed private: not launched here
        return None
