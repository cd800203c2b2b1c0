"""A fixed set of daemon threads for the relay's blocking work.

Unlike ``concurrent.futures.ThreadPoolExecutor`` (whose threads interpreter exit joins), a call
that hangs on a stalled store never holds up the driver's exit; and unlike asyncio's default
pool (``min(32, cores + 4)`` threads shared by everything), each kind of work gets its own:
the relay runs points and task ends apart from the run operations that call the store."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class DaemonPool:
    """``workers`` daemon threads named ``<name>-<n>`` running submitted calls in order."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args) -> Future:
        """Run ``fn(*args)`` on a free thread; the future is settled with its result. A future
        cancelled before a thread takes it is skipped."""
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Let each thread end once it has finished what it runs (never waits for it)."""
        for _ in self._threads:
            self._queue.put(None)
