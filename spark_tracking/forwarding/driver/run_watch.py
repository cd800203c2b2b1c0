"""Which run each binding was made for, so points that reach the driver late keep their run.

A driver thread gets a new binding each time it starts a run (``Forwarder.bind_thread``), and
its jobs carry it. Points of a task normally find their run when the task first reaches the
relay (the run then at the top of the thread's stack). Points that reach it late — spilled
while the relay was unreachable, shipped after the notebook ended that run and started the
next — would find the next run. This watch remembers, per binding, the run it was made for,
and the forwarder sends a binding's late points there once the thread has made a newer one.

The run does not exist yet when its binding is made: MLflow asks run-context providers for
tags before it creates the run, and pushes the run on the thread's stack right after
(``mlflow.tracking.fluent.start_run``, 2.9.2 to 3.17.2). So the watch records the stack and
its depth, and takes the run found at that depth: at once when asked (``run_of``), and from
a daemon thread that looks every ``interval`` seconds while some binding's run has not
appeared (for at most ``patience`` seconds each: a run whose creation failed never appears),
so a run that ends before anything asked is still known.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .bounded import BoundedDict

_MAX_BINDINGS = 65_536


class RunWatch:
    """Binding -> the run it was made for (see the module docstring)."""

    def __init__(self, interval: float = 0.02, patience: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval, self.patience, self.clock = interval, patience, clock
        self._pending: dict[str, tuple[list, int, float]] = {}  # binding -> (stack, depth, give up at)
        self._runs: BoundedDict = BoundedDict(_MAX_BINDINGS)  # binding -> run id
        self._latest: BoundedDict = BoundedDict(_MAX_BINDINGS)  # thread token -> its newest binding
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def watch(self, token: str, binding: str, stack: list) -> None:
        """``binding`` of thread ``token`` was made now, for the run about to be pushed on ``stack``."""
        with self._lock:
            self._look()  # an enclosing run of this thread is on its stack now: keep it
            self._pending[binding] = (stack, len(stack), self.clock() + self.patience)
            self._latest[token] = binding
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="spark-tracking-run-watch", daemon=True)
                self._thread.start()
        self._wake.set()

    def superseded(self, token: str, binding: str) -> bool:
        """True when thread ``token`` has made a binding after ``binding``."""
        with self._lock:
            latest = self._latest.get(token)
        return latest is not None and latest != binding

    def run_of(self, binding: str) -> str | None:
        """The run ``binding`` was made for, or None when it never appeared (or was forgotten)."""
        with self._lock:
            self._look()
            return self._runs.get(binding)

    def stop(self) -> None:
        """End the watching thread (idempotent)."""
        with self._lock:
            self._stopped = True
        self._wake.set()

    def _look(self) -> None:
        """Take the runs that appeared; give up on those past their patience (lock held)."""
        now = self.clock()
        for binding, (stack, depth, give_up) in list(self._pending.items()):
            try:
                run = stack[depth]
            except IndexError:
                if now >= give_up:
                    del self._pending[binding]
                continue
            self._runs[binding] = run.info.run_id
            del self._pending[binding]

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                if self._stopped:
                    return
                self._look()
                if not self._pending:
                    self._wake.clear()
            if self._pending:
                time.sleep(self.interval)  # polling MLflow's stack: it has no event to wait on
