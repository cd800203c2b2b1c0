"""``RunDetails``: the live view's controller — what it watches, when it refreshes, when it stops.

Data path: an observer registered with ``spark_tracking.forwarding.driver.observers`` gets every
submission the driver relay takes in. On the relay's thread it only filters by run and appends
to a bounded queue (O(1)); the view's own daemon thread (``spark-tracking-live``) drains the
queue into a :class:`~spark_tracking.live.model.LiveRun` about once a second, reads
``spark_tracking.stats()`` and redraws its frontend. Points come from the relay, never from the
store; the store is read only for the run's status (every ``status_interval`` seconds, one
small request), its name and its link (once).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque

from ..forwarding.driver import observers
from .model import LiveRun, Snapshot

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
#: submissions waiting for the view thread; beyond, points are counted as not shown
QUEUE_LIMIT = 4096


def _run_id_of(run) -> str | None:
    """A run id from what users hold: an id, MLflow's Run / ActiveRun, spark_tracking.Run."""
    if run is None or isinstance(run, str):
        return run
    info = getattr(run, "info", None)  # mlflow.entities.Run and mlflow.ActiveRun
    if info is not None and isinstance(getattr(info, "run_id", None), str):
        return info.run_id
    run_id = getattr(run, "id", None)  # spark_tracking.Run (the AML vocabulary)
    if isinstance(run_id, str):
        return run_id
    raise TypeError(
        f"RunDetails(run={run!r}): pass a run id (str), an MLflow Run or ActiveRun, "
        "a spark_tracking.Run, or None for the active run"
    )


def _counters() -> dict[str, int]:
    from .. import api

    stats = api.stats()
    dropped = stats.get("dropped") or {}
    return {
        "received": int(stats.get("received", 0)),
        "stored": int(stats.get("sent", 0)),
        "spooled": int(stats.get("spooled", 0)),
        "dropped": int(sum(dropped.values())),
    }


def in_notebook() -> bool:
    """True in a Jupyter kernel (Jupyter, VS Code, Databricks notebooks): ipywidgets can draw."""
    shell = sys.modules.get("IPython")
    shell = shell.get_ipython() if shell is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


class RunDetails:
    """A live view of a run whose metrics come from Spark tasks — Azure ML's ``RunDetails``.

    ``RunDetails(run=None).show()`` in a notebook cell draws, in that cell's output, one panel
    per metric with a curve per worker and their mean, the latest values, the forwarding
    counters of ``spark_tracking.stats()`` (received / stored / spooled / dropped), the run's
    status and its link (``get_portal_url``). A background thread refreshes it about once a
    second while the next cells run the Spark job; when the run ends (FINISHED, FAILED,
    KILLED) it stops and leaves the final chart (also as a static image, so a saved or
    exported notebook shows it). Outside a notebook ``show()`` prints a compact text summary,
    refreshed in place on a terminal and printed once otherwise.

    ``run``: a run id, an MLflow ``Run``/``ActiveRun`` or a ``spark_tracking.Run``; ``None``
    means the driver's active run, or, with none active, the first run tasks log to after
    ``show()``. Only points forwarded from tasks are drawn (the driver's own
    ``mlflow.log_metric`` calls go straight to the store, not through the relay).

    ``refresh_interval`` (seconds, default 1), ``status_interval`` (how often the run's status
    is read from the store, default 5), ``max_points`` per curve (default 500; older points
    are thinned), ``max_metrics`` panels (12) and ``max_workers`` curves per panel (64) bound
    the memory a view takes, whatever the run logs. ``tracking_uri``: the store of the run
    (default: MLflow's current one). ``clock`` is for tests.
    """

    def __init__(
        self,
        run=None,
        *,
        refresh_interval: float = 1.0,
        status_interval: float = 5.0,
        max_points: int = 500,
        max_metrics: int = 12,
        max_workers: int = 64,
        tracking_uri: str | None = None,
        clock=time.monotonic,
    ):
        if refresh_interval <= 0 or status_interval <= 0:
            raise ValueError(
                f"RunDetails: refresh_interval={refresh_interval!r} and status_interval="
                f"{status_interval!r} must be positive numbers of seconds"
            )
        if max_points < 4:
            raise ValueError(f"RunDetails: max_points={max_points!r} must be at least 4")
        self.run_id = _run_id_of(run)
        self.refresh_interval, self.status_interval = refresh_interval, status_interval
        self.tracking_uri = tracking_uri
        self.clock = clock
        self.live = LiveRun(max_points, max_metrics, max_workers)
        self.status = "WAITING"
        self.run_name = ""
        self.url: str | None = None
        self.refreshes = 0
        self.not_shown = 0  # points that arrived while the queue was full
        self._queue: deque = deque()
        self._frontend = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._status_at = -float("inf")
        self._lock = threading.Lock()  # one refresh at a time (the thread, or refresh() called by hand)

    # -- the observer (relay thread: O(1), never blocks) ---------------------------------------

    def _observe(self, sub) -> None:
        if sub.kind != "points" or not sub.metrics:
            return
        if self.run_id is None:
            self.run_id = sub.run_id  # follow the first run tasks log to
        elif sub.run_id != self.run_id:
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self.not_shown += len(sub.metrics)
            return
        self._queue.append(sub)

    # -- lifecycle -------------------------------------------------------------------------------

    def show(self, file=None) -> None:
        """Start the view: a live widget in a notebook, a text summary elsewhere (``file``:
        default stdout). Returns at once; the view refreshes from a background thread until
        the run ends (``stop()`` ends it sooner, ``wait()`` waits for it)."""
        if self._thread is not None or self._done.is_set():
            return
        import mlflow  # here, not first on the view's thread: concurrent first imports of mlflow fail

        if self.run_id is None:
            active = mlflow.active_run()
            self.run_id = active.info.run_id if active is not None else None
        self._read_run()
        if in_notebook() and file is None:
            from .notebook import NotebookFrontend

            self._start(NotebookFrontend())
        else:
            from .text import TextFrontend

            self._start(TextFrontend(file or sys.stdout))

    def _start(self, frontend) -> None:
        """Draw on ``frontend`` (``live``, ``open``, ``update``, ``finish``) from now on."""
        self._frontend = frontend
        observers.add(self._observe)
        frontend.open(self.snapshot())
        if not frontend.live:  # not a terminal: the summary once, no thread
            self._finish()
            return
        self._thread = threading.Thread(target=self._loop, name="spark-tracking-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing now and leave the last state drawn (the run's end does it by itself)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        elif self._thread is None:
            self._finish()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the view has stopped (the run ended, or stop()). True when it has."""
        return self._done.wait(timeout)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.refresh_interval):
                self.refresh()
                if self.status in TERMINAL_STATUSES:
                    break
        except Exception:
            logger.exception("spark_tracking live view: refreshing failed; the view stops")
        finally:
            self._finish()

    def _finish(self) -> None:
        observers.remove(self._observe)
        if not self._done.is_set():
            try:
                self.refresh(final=True)
            finally:
                self._done.set()

    # -- one refresh -------------------------------------------------------------------------

    def refresh(self, final: bool = False) -> Snapshot:
        """Take in what the relay delivered, read the status when due, redraw. Returns what was drawn."""
        with self._lock:
            while self._queue:
                sub = self._queue.popleft()
                self.live.take(sub.worker, sub.metrics)
            self._read_run()
            self.refreshes += 1
            snapshot = self.snapshot()
            if self._frontend is not None:
                self._frontend.finish(snapshot) if final else self._frontend.update(snapshot)
            return snapshot

    def snapshot(self) -> Snapshot:
        """What the view shows now (the run's state and points taken so far), without redrawing."""
        snap = self.live.snapshot(
            run_id=self.run_id,
            run_name=self.run_name,
            status=self.status,
            url=self.url,
            refresh=self.refreshes,
            counters=_counters(),
        )
        snap.hidden_points += self.not_shown
        return snap

    def _read_run(self) -> None:
        """The run's status (every status_interval), and its name and link (once)."""
        now = self.clock()
        if self.run_id is None or now - self._status_at < self.status_interval:
            return
        self._status_at = now
        from mlflow.tracking import MlflowClient

        try:
            run = MlflowClient(self.tracking_uri).get_run(self.run_id)
        except Exception as exc:  # noqa: BLE001 - the store is unreachable: keep drawing what the relay delivers
            logger.debug("spark_tracking live view: status of run %s unknown: %s", self.run_id, exc)
            return
        self.status = run.info.status
        self.run_name = run.info.run_name or ""
        if self.url is None:
            from ..portal import get_portal_url

            try:
                self.url = get_portal_url(self.run_id, self.tracking_uri)
            except Exception as exc:  # noqa: BLE001 - a view without a link is still a view
                logger.debug("spark_tracking live view: no link for run %s: %s", self.run_id, exc)
                self.url = ""

    @property
    def figure(self):
        """The matplotlib Figure of the notebook view as last drawn (None elsewhere or before
        the first point): one axes per metric, a line per worker (``worker <n>``) and ``mean``."""
        return getattr(self._frontend, "figure", None)

    def summary(self) -> str:
        """The compact text summary of what the view shows now."""
        from .text import format_summary

        return format_summary(self.snapshot())

    def __repr__(self) -> str:
        state = "stopped" if self._done.is_set() else "refreshing" if self._thread is not None else "not shown"
        return f"<RunDetails run {self.run_id or '-'} {self.status}, {self.live.points:,} points, {state}>"
