"""This process's one forwarder (``forwarder.Forwarder``): made on first need for the SparkContext
or Spark Connect session that binds a thread, replaced when that owner changes, flushed by
``spark_tracking.flush()``, counted by ``spark_tracking.stats()``, and stopped at interpreter
exit: the store gets ``EXIT_TIMEOUT`` seconds to take what the driver holds, the rest goes to
the spool (``<home>/spool``) with one warning, for ``spark-tracking replay``.
"""

from __future__ import annotations

import atexit
import logging
import threading

from .forwarder import Forwarder
from .tally import SESSION_COUNTERS, run_stats

logger = logging.getLogger(__name__)

#: seconds the store gets at interpreter exit before what is left goes to the spool
EXIT_TIMEOUT = 30.0

_lock = threading.RLock()
_forwarder: Forwarder | None = None


def config():
    """The session's settings (``state.active_config``), read where the driver needs them."""
    from ...state import active_config

    return active_config()


def spark_context():
    """The process's active SparkContext, or None (a Spark Connect client has none)."""
    from ..._compat import pyspark as compat

    return compat.active_spark_context()


def bind_spark_context(sc) -> bool:
    """Bind Spark jobs this thread submits through ``sc`` (a classic SparkContext) to this
    thread's active MLflow run (``binder.bind_current_thread`` chooses between this and Spark
    Connect). Honours ``forwarding`` and ``disabled``. Returns True when bound."""
    cfg = config()
    if cfg.disabled or not cfg.forwarding:
        return False
    with _lock:
        use_forwarder(sc, lambda: Forwarder(cfg, sc)).bind(sc)
    return True


def use_forwarder(owner, make) -> Forwarder:
    """The forwarder of ``owner`` (a SparkContext, or a Spark Connect session); a new owner
    replaces the previous forwarder (made by ``make()``)."""
    global _forwarder
    with _lock:
        if _forwarder is None or _forwarder.owner is not owner:
            if _forwarder is not None:
                _forwarder.stop(5.0)
            _forwarder = make()
            _forwarder.owner = owner
        return _forwarder


def forwarder() -> Forwarder | None:
    """The driver's forwarder of this process, or None before forwarding started."""
    return _forwarder


def flush(timeout: float | None = 30.0) -> bool:
    """Deliver everything the driver holds for the store; True when all of it arrived."""
    fw = _forwarder
    if fw is None:
        return True
    fw.collect_drops()
    return fw.flush(timeout)


def stats(run_id: str | None = None) -> dict:
    """The driver's forwarding counters (``spark_tracking.stats()``), zeros before forwarding
    started; with ``run_id``, that run's."""
    fw = _forwarder
    if fw is None:
        if run_id is not None:
            return run_stats(run_id, [])
        return {"relay": None, **dict.fromkeys(SESSION_COUNTERS, 0), "dropped": {}}
    return fw.stats(run_id)


def shutdown(timeout: float = 30.0) -> bool:
    """Stop forwarding: deliver what the driver holds within ``timeout`` (on Spark Connect
    without a reachable driver, the drop files tasks left first), spool the rest (with a
    warning). True when everything reached the store. Called at interpreter exit."""
    global _forwarder
    with _lock:
        fw, _forwarder = _forwarder, None
    if fw is None:
        return True
    try:
        fw.collect_drops()
    except Exception:  # never keeps the rest from being delivered or spooled
        logger.warning("spark_tracking: could not collect the drop files of Spark tasks", exc_info=True)
    return fw.stop(timeout)


@atexit.register
def _flush_at_exit() -> None:
    shutdown(EXIT_TIMEOUT)
