"""``RunDetails``: the live view's controller — what it watches, when it refreshes, when it stops.

Data path: an observer registered with ``spark_tracking.forwarding.driver.observers`` gets every
submission the driver relay takes in. On the relay's thread it only filters by run and appends
to a bounded queue (O(1)); the view's own daemon thread (``spark-tracking-live``) drains the
queue into a :class:`~spark_tracking.live.model.LiveRun`, reads ``spark_tracking.stats()`` and
redraws its frontend: woken by the observer soon after something arrives (at most every
``MIN_REFRESH_GAP`` seconds), and every ``refresh_interval`` seconds otherwise. Task points
come from the relay. The store is read once for the run's history (what it held when the view
opened: per-worker series through ``layout``, the driver's own metrics), then every
``status_interval`` seconds for the run's status and the driver's own new points (one small
request, plus one per driver key that moved).

In a kernel the view also checks the run after every cell (IPython's ``post_run_cell``): a
notebook executed in batch ends the run in a cell and the kernel exits right after, before the
view's thread would notice; the check finishes the view inside that cell, so the final state
is in the saved notebook.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque

from ..forwarding.driver import observers
from ..layout import group_metrics, is_system_metric
from .model import LiveRun, Snapshot

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
#: submissions waiting for the view thread; beyond, points are counted as not shown
QUEUE_LIMIT = 4096
#: seconds at least between two refreshes woken by arriving points: a flood of points redraws
#: about five times a second, not continuously (the chart's own share, ``notebook.CHART_SHARE``,
#: may space its draws further)
MIN_REFRESH_GAP = 0.2
#: the kind of the event that tells a task attempt failed (``observers.TaskFailed``: ``run_id``,
#: or None: matched by stage; ``worker``, the relay's worker list; ``error``, its first line)
TASK_FAILED = observers.TaskFailed.kind
#: where get_portal_url points for a store with no UI of its own (``spark-tracking ui``)
LOCAL_UI = "http://127.0.0.1:5000/"


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


def _counters(run_id: str | None) -> tuple[dict[str, int], dict[str, int]]:
    """The run's forwarding counters on this driver, and its drops by cause (zeros before the
    view knows its run)."""
    from .. import api

    stats = api.stats(run_id) if run_id is not None else {}
    dropped = {str(k): int(v) for k, v in (stats.get("dropped") or {}).items() if v}
    counters = {
        "received": int(stats.get("received", 0)),
        "stored": int(stats.get("sent", 0)),
        "spooled": int(stats.get("spooled", 0)),
        "dropped": int(sum(dropped.values())),
    }
    return counters, dropped


def _ui_answers(url: str, timeout: float = 0.3) -> bool:
    """True when something listens where a local MLflow UI link points (``127.0.0.1:5000``):
    a link to a UI nobody runs is a dead link."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def in_notebook() -> bool:
    """True in a Jupyter kernel (Jupyter, VS Code, Databricks notebooks): ipywidgets can draw."""
    shell = sys.modules.get("IPython")
    shell = shell.get_ipython() if shell is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


class RunDetails:
    """A live view of a run whose metrics come from Spark tasks — Azure ML's ``RunDetails``.

    ``RunDetails(run=None).show()`` in a notebook cell draws, in that cell's output, the run's
    properties (status, experiment, start, duration, link), one panel per metric with a curve
    per worker, their mean and the driver's own points of that metric, a metrics table, a
    workers table (state, attempt, step, latest values, points, last seen), the task failures
    and the forwarding counters. It first loads what the store already holds for the run (a
    run opened late or after it ended shows its history), then follows what the driver relay
    receives from the tasks, within a fraction of a second (at most five refreshes a second), while
    the next cells run the Spark job.

    When the run ends (FINISHED, FAILED, KILLED) the view stops and leaves the final state as
    static output (chart and tables), which a saved or exported notebook keeps. In a kernel it
    checks after every cell that runs, so a batch execution (``jupyter nbconvert --execute``,
    papermill) that ends the run in its last cell keeps the final state without ``wait()``.
    Without ipywidgets the notebook view is the text summary and the link, refreshed in place;
    outside a notebook ``show()`` prints the text summary, refreshed in place on a terminal and
    printed once otherwise.

    ``run``: a run id, an MLflow ``Run``/``ActiveRun`` or a ``spark_tracking.Run``; ``None``
    means the driver's active run, or, with none active, the first run tasks log to after
    ``show()``.

    ``refresh_interval`` (seconds, default 1: how often the view refreshes when nothing arrives;
    points wake it sooner), ``status_interval`` (how often the run's status
    and the driver's own metrics are read from the store, default 5), ``max_points`` per curve
    (default 500; older points are thinned), ``max_metrics`` panels (12) and ``max_workers``
    curves per panel (64) bound the memory a view takes, whatever the run logs.
    ``tracking_uri``: the store of the run (default: MLflow's current one). ``history``: load
    what the store holds first (default True). ``clock`` and ``wall`` are for tests.
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
        history: bool = True,
        clock=time.monotonic,
        wall=time.time,
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
        self.history = history
        self.clock, self.wall = clock, wall
        self.live = LiveRun(max_points, max_metrics, max_workers)
        self.status = "WAITING"
        self.run_name = ""
        self.experiment = ""
        self.start_ms: int | None = None
        self.end_ms: int | None = None
        self.url: str | None = None
        self.refreshes = 0
        self.not_shown = 0  # points that arrived while the queue was full
        self._driver_seen: dict[str, tuple] = {}  # the driver's own keys: (step, timestamp) last read
        self._history_loaded = False
        self._stages_due = False  # Spark's failed task counts are read at the next snapshot
        self._queue: deque = deque()
        self._frontend = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the observer: something arrived, refresh soon
        self._done = threading.Event()
        self._status_at = -float("inf")
        self._kernel = None  # the IPython shell whose cells the view checks after
        self._lock = threading.Lock()  # one refresh at a time (the thread, or refresh() called by hand)

    # -- the observer (relay thread: O(1), never blocks) ---------------------------------------

    def _observe(self, sub) -> None:
        kind = sub.kind
        if kind == "points":
            if not sub.metrics:
                return
            if self.run_id is None:
                self.run_id = sub.run_id  # follow the first run tasks log to
        elif kind not in ("done", TASK_FAILED):
            return
        if sub.run_id != self.run_id and not (kind == TASK_FAILED and sub.run_id is None):
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self.not_shown += len(sub.metrics or ())
            return
        self._queue.append(sub)
        if not self._wake.is_set():  # set() takes a lock (about 1 µs): once per refresh is enough
            self._wake.set()

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
        if in_notebook() and file is None:
            from .notebook import frontend_for_notebook

            frontend = frontend_for_notebook()
            self._kernel = _ipython()
        else:
            from .text import TextFrontend

            frontend = TextFrontend(file or sys.stdout)
        self._start(frontend)

    def _start(self, frontend) -> None:
        """Draw on ``frontend`` (``live``, ``open``, ``update``, ``finish``) from now on."""
        self._frontend = frontend
        observers.add(self._observe)  # first: what arrives while the history loads is queued
        self._read_run(force=True)
        self._load_history()
        frontend.open(self.refresh_snapshot())
        if not frontend.live or self.status in TERMINAL_STATUSES:  # not a terminal, or nothing more to come
            self._finish()
            return
        if self._kernel is not None:
            self._kernel.events.register("post_run_cell", self._after_cell)
        self._thread = threading.Thread(target=self._loop, name="spark-tracking-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing now and leave the last state drawn (the run's end does it by itself)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        elif self._thread is None:
            self._finish()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the view has stopped (the run ended, or stop()). True when it has."""
        return self._done.wait(timeout)

    def _after_cell(self, result=None) -> None:
        """After each cell the kernel ran (IPython's ``post_run_cell``): when the run has ended,
        finish now, while the cell's output is still open. A batch execution then keeps the
        final state even if the kernel exits right after the last cell."""
        if self._done.is_set():
            self._forget_kernel()
            return
        try:
            self._status_at = -float("inf")  # read the status now
            with self._lock:
                self._read_run()
            if self.status in TERMINAL_STATUSES:
                self.stop()
        except Exception:  # never break the user's cell
            logger.exception("spark_tracking live view: checking the run after a cell failed")

    def _forget_kernel(self) -> None:
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            with contextlib.suppress(ValueError):
                kernel.events.unregister("post_run_cell", self._after_cell)

    def _loop(self) -> None:
        """Refresh soon after points (or a task's end) arrive, at most every MIN_REFRESH_GAP
        seconds, and every ``refresh_interval`` seconds when nothing arrives (the run's status,
        "last seen", the driver's own metrics). Waiting for the next tick instead cost up to a
        whole interval between the driver receiving a point and the view showing it."""
        gap = min(MIN_REFRESH_GAP, self.refresh_interval)
        last = -float("inf")
        try:
            while True:
                self._wake.wait(self.refresh_interval)
                if self._stop.wait(max(0.0, gap - (time.monotonic() - last))):
                    break
                self._wake.clear()  # before the refresh: what arrives during it wakes the next one
                last = time.monotonic()
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
                self._forget_kernel()  # IPython triggers a copy of its callback list: safe from a callback too

    # -- one refresh -------------------------------------------------------------------------

    def refresh(self, final: bool = False) -> Snapshot:
        """Take in what the relay delivered, read the status when due, redraw. Returns what was drawn."""
        with self._lock:
            self._read_run(force=final)
            snapshot = self.refresh_snapshot()
            if self._frontend is not None:
                self._frontend.finish(snapshot) if final else self._frontend.update(snapshot)
            return snapshot

    def refresh_snapshot(self) -> Snapshot:
        """Take in what the relay delivered and count a refresh; the snapshot to draw."""
        now_ms = int(self.wall() * 1000)
        # Spark's word on the run's stages, read before the queue is taken in: a task tells the
        # driver it ended or failed (acknowledged) before Spark counts it, so its word is in by then
        failed, ended = self._read_stages() if self._stages_due else ({}, set())
        self._stages_due = False
        while self._queue:
            sub = self._queue.popleft()
            if sub.kind == "points":
                self.live.take(sub.worker, sub.metrics)
            elif sub.kind == "done":
                self.live.task_done(sub.worker, now_ms)
            elif sub.run_id is not None or int(sub.worker[0]) in self.live.stages:
                self.live.task_failed(sub.worker, getattr(sub, "error", ""), now_ms)
        for stage, count in failed.items():
            self.live.stage_failures(stage, count)
        for stage in ended:
            self.live.stage_ended(stage)
        self.refreshes += 1
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """What the view shows now (the run's state and points taken so far), without redrawing."""
        counters, dropped_by = _counters(self.run_id)
        snap = self.live.snapshot(
            run_id=self.run_id,
            run_name=self.run_name,
            status=self.status,
            url=self.url,
            experiment=self.experiment,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            now_ms=int(self.wall() * 1000),
            refresh=self.refreshes,
            counters=counters,
            dropped_by=dropped_by,
        )
        snap.hidden_points += self.not_shown
        return snap

    # -- the store ---------------------------------------------------------------------------

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def _read_run(self, force: bool = False) -> None:
        """The run's status and properties, and the driver's own new points (every
        status_interval, or now when ``force``); its link once."""
        now = self.clock()
        if self.run_id is None or (not force and now - self._status_at < self.status_interval):
            return
        self._status_at = now
        # Spark's failed task counts: with the next snapshot, once the relay's points named the stages
        self._stages_due = True
        try:
            client = self._client()
            run = client.get_run(self.run_id)
        except Exception as exc:  # noqa: BLE001 - the store is unreachable: keep drawing what the relay delivers
            logger.debug("spark_tracking live view: status of run %s unknown: %s", self.run_id, exc)
            return
        self.status = run.info.status
        self.run_name = run.info.run_name or ""
        self.start_ms, self.end_ms = run.info.start_time, run.info.end_time
        if not self.experiment:
            try:
                self.experiment = client.get_experiment(run.info.experiment_id).name
            except Exception as exc:  # noqa: BLE001 - a view without the experiment's name is still a view
                logger.debug("spark_tracking live view: no experiment for run %s: %s", self.run_id, exc)
                self.experiment = run.info.experiment_id
        if self.url is None:
            self.url = self._link()
        if self._history_loaded:
            self._read_driver_metrics(client, run)

    def _read_stages(self, newest: int = 16) -> tuple[dict[int, int], set[int]]:
        """Spark's status tracker on the run's ``newest`` stages (public API; on the driver of a
        classic SparkContext only: Spark Connect's client has none): each stage's failed task
        attempts (a task whose Python worker crashed never tells the driver it failed), and the
        stages that ended (a worker of one still "running" never told the driver it ended)."""
        from .._compat.pyspark import active_spark_context
        from ..forwarding.driver.stages import SparkStages

        sc = active_spark_context()
        if sc is None or not self.live.stages:
            return {}, set()
        stages, newest_stages = SparkStages(sc), sorted(self.live.stages)[-newest:]
        try:
            failed = {stage: n for stage in newest_stages if (n := stages.failed_tasks(stage)) is not None}
            return failed, stages.finished(set(newest_stages))
        except Exception as exc:  # noqa: BLE001 - a stopping SparkContext: the events the driver got still show
            logger.debug("spark_tracking live view: Spark's stage info unreadable: %s", exc)
            return {}, set()

    def _link(self) -> str:
        from ..portal import get_portal_url

        assert self.run_id is not None
        try:
            url = get_portal_url(self.run_id, self.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - a view without a link is still a view
            logger.debug("spark_tracking live view: no link for run %s: %s", self.run_id, exc)
            return ""
        if url.startswith(LOCAL_UI) and not _ui_answers(url):
            return ""  # a local store with no MLflow UI running: no dead link (the summary says how to start one)
        return url

    def _load_history(self) -> None:
        """What the store already holds for the run: every worker series (``layout``'s
        per-worker keys) and the driver's own metrics. Points the relay delivers later that
        repeat a step already loaded are taken once."""
        if not self.history or self.run_id is None or self._history_loaded:
            self._history_loaded = True
            return
        self._history_loaded = True
        try:
            client = self._client()
            run = client.get_run(self.run_id)
            groups = group_metrics(run.data.metrics)
            for base, (_, workers) in groups.items():
                for worker, key in workers[: self.live.max_workers]:
                    for m in _history(client, self.run_id, key):
                        self.live.add_point(base, worker, m.step, m.value, m.timestamp)
            self._read_driver_metrics(client, run)
        except Exception as exc:  # noqa: BLE001 - without history the view still follows the relay
            logger.warning(
                "spark_tracking live view: the run's history could not be read (%s); showing new points only", exc
            )

    def _read_driver_metrics(self, client, run) -> None:
        """New points of the keys the driver logs itself: plain keys with no worker series in
        the store or from the relay (the sink's per-step means are skipped: they are plain
        ``<key>`` beside ``<key>/worker_<n>``), and MLflow's own system metrics of the driver's
        machine (plain ``system/<name>``, also beside the workers' ``system/<name>/worker_<n>``)."""
        run_id = run.info.run_id
        groups = group_metrics(run.data.metrics)
        for base, (aggregate, workers) in groups.items():
            if aggregate is None or (workers and not is_system_metric(base)):
                continue  # (MLflow's own system metrics of the driver's machine sit beside the workers')
            metric = self.live.metrics.get(base)
            if metric is not None and metric.curves:
                continue  # forwarded from tasks (a single-task stage stores plain keys)
            latest = run.data.metrics[aggregate]
            mark = (latest, len(run.data.metrics))
            if self._driver_seen.get(base) == mark:
                continue
            self._driver_seen[base] = mark
            for m in _history(client, run_id, aggregate):
                self.live.add_point(base, None, m.step, m.value, m.timestamp)

    @property
    def figure(self):
        """The matplotlib Figure of the notebook view as last drawn (None elsewhere or before
        the first point): one axes per metric, a line per worker (``worker <n>``) and ``mean``."""
        return getattr(self._frontend, "figure", None)

    def summary(self) -> str:
        """The compact text summary of what the view shows now; on a view never shown, of what
        the store holds for the run (its status, properties and history)."""
        from .text import format_summary

        with self._lock:  # not while the view's thread changes what it reads
            if self._frontend is None and not self._history_loaded:
                self._read_run(force=True)
                self._load_history()
                return format_summary(self.refresh_snapshot())
            return format_summary(self.snapshot())

    def __repr__(self) -> str:
        state = "stopped" if self._done.is_set() else "refreshing" if self._thread is not None else "not shown"
        return f"<RunDetails run {self.run_id or '-'} {self.status}, {self.live.points:,} points, {state}>"


def _history(client, run_id: str, key: str):
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))


def _ipython():
    shell = sys.modules.get("IPython")
    return shell.get_ipython() if shell is not None else None
