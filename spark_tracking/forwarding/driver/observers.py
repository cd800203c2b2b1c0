"""Observers of what the driver relay receives from tasks: a tiny registry the sink notifies.

The sink calls :func:`notify` with each submission it takes into custody (the points of one
task frame: ``run_id``, ``worker``, ``metrics`` as ``(key, value, timestamp_ms, step)``), on
the relay's handler thread, before anything is sent to the store. So an observer sees points
the moment the driver has them, whatever the store does with them later.

The forwarder also calls it with a :class:`TaskFailed` when a task's "done" says its function
raised (``kind`` "task_failed"), after that task's "done" submissions: a task attempt that
failed is visible whether or not Spark retries it.

Cheap by construction: with no observer registered, :func:`notify` is a loop over an empty
tuple. An observer runs on the forwarding path and must be O(1) and never block (the live
view, ``spark_tracking.live``, appends the submission to a bounded queue and does its work on
its own thread). An observer that raises is removed with a warning: it can never break
forwarding.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..records import Worker

logger = logging.getLogger(__name__)

Observer = Callable[[object], None]


class TaskFailed:
    """A task attempt whose function raised, as its "done" told the driver.

    ``run_id``: a run it logged to (None when it logged nothing: an observer matches it by
    stage); ``worker``: the task's :class:`~spark_tracking.forwarding.records.Worker` (a worker
    list is read into one); ``error``: one line, ``<type>: <message's first line>``, at most
    ``protocol.MAX_ERROR_CHARS`` (never a traceback)."""

    __slots__ = ("error", "run_id", "worker")
    kind = "task_failed"
    metrics: tuple = ()  # shaped like a submission: no points

    def __init__(self, run_id: str | None, worker, error: str):
        self.run_id, self.worker, self.error = run_id, Worker.of(worker), error

    @property
    def attempt(self) -> int:
        """The failed attempt's number (0 for the first)."""
        return self.worker.attempt

    def __repr__(self) -> str:
        return f"TaskFailed(run_id={self.run_id!r}, worker={self.worker!r}, error={self.error!r})"


_observers: tuple[Observer, ...] = ()  # replaced, never mutated: notify() reads it without a lock
_lock = threading.Lock()


def add(observer: Observer) -> None:
    """Call ``observer(submission)`` for every submission the sink takes in from now on."""
    global _observers
    with _lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def remove(observer: Observer) -> None:
    """Stop calling ``observer``; a no-op when it is not registered."""
    global _observers
    with _lock:
        _observers = tuple(o for o in _observers if o != observer)  # ==: bound methods are new objects


def registered() -> tuple[Observer, ...]:
    """The observers called now, in registration order."""
    return _observers


def notify(submission) -> None:
    """Hand ``submission`` to every observer (the sink calls this as it takes points in)."""
    for observer in _observers:
        try:
            observer(submission)
        except Exception:
            remove(observer)
            logger.warning("spark_tracking: observer %r failed and was removed", observer, exc_info=True)
