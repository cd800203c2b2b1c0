"""The driver sink: turns points received from tasks into ``log_batch`` calls on the store.

One daemon thread (``spark-tracking-sink``) works in rounds: it takes every submission that
arrived, names per-worker series and folds the aggregate (``aggregation``), cuts requests within
MLflow's limits (``batches``: ``batch_max_metrics`` ≤ 1000 metrics, 100 params+tags, 1 MB; AML:
≤ 250 values of one metric, and a run's params beyond 200 dropped with a warning), respects
``rate_limit`` and sends (``delivery``). A request the store refuses as invalid is split so one
bad value never rejects the rest. A request that fails in transport is retried with
exponential backoff and jitter; when retries are used up it goes to the durable spool
(``spool``) and is retried from there. When a round ends, every submission in it is settled
(delivered, or held for retry), which is when the relay acknowledges the task.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from ... import validation
from ..records import Worker
from . import observers
from .aggregation import MAX_OPEN_STEPS, Aggregator, StageState, attempt_of
from .batches import cut_requests
from .delivery import RUN_POINTS_CAP, RUN_POINTS_WARNING, Delivery
from .spool import Spool, strip_userinfo
from .writers import ClientWriter, RateLimiter, RestWriter, StoreError, is_invalid_request, writer_for

__all__ = [
    "RUN_POINTS_CAP",
    "RUN_POINTS_WARNING",
    "ClientWriter",
    "RateLimiter",
    "RestWriter",
    "Sink",
    "Spool",
    "StageState",
    "StoreError",
    "Submission",
    "attempt_of",
    "is_invalid_request",
    "strip_userinfo",
    "writer_for",
]

logger = logging.getLogger(__name__)


class Submission:
    """What one relay request hands the sink: points of one task, a task end, or a flush."""

    __slots__ = ("artifacts", "at", "future", "kind", "metrics", "params", "run_id", "solo", "tags", "worker")

    def __init__(self, kind: str, run_id=None, worker=None, metrics=(), params=(), tags=(), artifacts=()):
        self.kind = kind  # "points" | "done" | "flush"
        self.run_id = run_id
        #: who sent it (None for a flush)
        self.worker: Worker | None = None if worker is None else Worker.of(worker)
        self.metrics, self.params, self.tags, self.artifacts = metrics, params, tags, artifacts
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.at = 0.0  # when the sink queued it (its clock)
        self.solo = False  # a run the task created itself: its own series, the user's keys


class Sink:
    """Delivers what tasks forwarded to one tracking store (see the module docstring).

    ``stage_tasks(stage)`` gives a stage's number of tasks (None: unknown yet);
    ``stages_finished(stages)`` gives those of ``stages`` Spark no longer runs (their means are
    written then, whether or not each task reported its end). Per-(run, stage) state is kept for
    the ``max_stages`` most recent stages, per-run state for the ``max_runs`` most recent runs.
    At most ``max_queued`` values wait in memory for the sink thread, none longer than
    ``spool_after`` seconds: past either, what tasks send goes straight to the spool (with one
    warning) and is delivered from there once the store catches up.
    The driver makes one per store, from the settings named in ``Forwarder.sink_index``.
    """

    def __init__(
        self,
        client,
        tracking_uri: str,
        spool: Spool,
        stage_tasks: Callable[[int], int | None],
        batch_max_metrics: int = validation.MAX_METRICS_PER_BATCH,
        max_values_per_key: int | None = None,
        max_params_per_run: int | None = None,
        rate_limit: float = 0.0,
        aggregate: bool = True,
        max_attempts: int = 4,
        clock=time.monotonic,
        sleep=time.sleep,
        linger: float = 0.02,
        stages_finished: Callable[[set], set] | None = None,
        max_stages: int = 1024,
        max_runs: int = 1024,
        max_queued: int = 200_000,
        spool_after: float = 30.0,
        max_open_steps: int = MAX_OPEN_STEPS,
    ):
        self.delivery = Delivery(
            client,
            tracking_uri,
            spool,
            threading.Lock(),  # state and custody: the sink thread outside store calls, stop()
            max_params_per_run=max_params_per_run,
            rate_limit=rate_limit,
            max_attempts=max_attempts,
            clock=clock,
            sleep=sleep,
            max_runs=max_runs,
        )
        self.client = client
        self.tracking_uri = tracking_uri
        self.spool = spool
        self.lock = self.delivery.lock
        self.tally = self.delivery.tally  # the session's counters and each run's (stats())
        self.counters, self.dropped = self.tally.counters, self.tally.dropped
        self.stages_finished = stages_finished
        self.batch_max_metrics = min(batch_max_metrics, validation.MAX_METRICS_PER_BATCH)
        self.max_values_per_key = max_values_per_key
        self.aggregator = Aggregator(stage_tasks, aggregate, self.delivery.tally, max_stages, max_runs, max_open_steps)
        self.clock = clock
        self.linger = linger
        self.queue: deque[Submission] = deque()
        self.max_queued, self.spool_after = max_queued, spool_after
        self._queued = 0  # values in the queue
        self._queued_lock = threading.Lock()
        self._backlog_since: float | None = None  # since when submissions go to the spool
        self.wake = threading.Event()
        self._next_stage_check = 0.0
        self._thread = threading.Thread(target=self._loop, name="spark-tracking-sink", daemon=True)
        self._stopping = False
        self._thread.start()

    @property
    def writer(self):
        """The store writer (``writers``); tests put a recorder or a fault in front of it."""
        return self.delivery.writer

    @writer.setter
    def writer(self, writer) -> None:
        self.delivery.writer = writer

    # -- custody -----------------------------------------------------------------------------

    def submit(self, sub: Submission) -> concurrent.futures.Future:
        """Take custody of ``sub`` (queued for the sink thread, or spooled once the sink has stopped);
        the returned future is settled once its content is delivered or spooled."""
        n = len(sub.metrics) + len(sub.params) + len(sub.tags) + len(sub.artifacts)
        self.tally.count("received", n, sub.run_id)
        observers.notify(sub)  # the live view (spark_tracking.live); a no-op when none is registered
        if self.delivery.evacuated:  # stopped: straight to disk, custody is the same
            with self.lock:
                self._spool_submissions([sub])
            return sub.future
        if sub.kind == "points" and not sub.artifacts and self._backed_up(n):
            with self.lock:  # the store is slow or away: custody on disk, not in memory
                self._spool_points(sub)
            sub.future.set_result(True)
            return sub.future
        sub.at = self.clock()
        with self._queued_lock:
            self._queued += n
        self.queue.append(sub)
        self.wake.set()
        return sub.future

    def _backed_up(self, n: int) -> bool:
        """Whether points go to the spool instead of the queue: ``max_queued`` values wait
        already, or the oldest submission has waited ``spool_after`` seconds (the store hangs)."""
        try:
            oldest = self.queue[0].at
        except IndexError:
            oldest = None
        now = self.clock()
        full = self._queued + n > self.max_queued
        slow = oldest is not None and now - oldest > self.spool_after
        if not (full or slow):
            self._backlog_since = None
            return False
        if self._backlog_since is None:
            self._backlog_since = now
            logger.warning(
                "spark_tracking sink: the store at %s is %s (%d values wait for it); what tasks send "
                "now goes to the spool %s and is delivered once the store catches up",
                strip_userinfo(self.tracking_uri),
                "slow" if slow else "behind",
                self._queued,
                self.spool.directory,
            )
        return True

    def _spool_points(self, sub: Submission) -> None:
        """Spool one submission's points as requests (called with the lock); open means stay
        open: the other workers' values of a step may still come through the queue."""
        pending: dict[str, dict] = {}
        self.aggregator.apply(sub, pending)
        for run, data in pending.items():
            for request in self._requests(run, data):
                self.delivery.to_spool(request)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Emit open aggregates and deliver everything queued; True when all reached the store."""
        marker = Submission("flush")
        self.queue.append(marker)
        self.wake.set()
        try:
            return bool(marker.future.result(timeout))
        except concurrent.futures.TimeoutError:
            return False

    def stats(self) -> dict:
        """The sink's counters (received, stored, spooled...), dropped points by reason, the queue
        length and the number of spool files."""
        out: dict[str, Any] = dict(self.counters)
        out["dropped"] = dict(self.dropped)
        out["queued"] = len(self.queue)
        out["spool_files"] = len(self.spool.files())
        return out

    def stop(self, timeout: float = 10.0) -> bool:
        """Deliver what is held within ``timeout``; write what the store did not take to the
        spool (with one warning saying how much and where). True when all was delivered."""
        delivered = self.flush(timeout)
        self._stopping = True
        self.wake.set()
        if not delivered:
            self._evacuate()
        self._thread.join(0 if not delivered else timeout)
        return delivered

    def _evacuate(self) -> None:
        """The store did not take everything in time: move all custody to the spool, now."""
        with self.lock:
            self.delivery.evacuated = True
            before = self.counters["spooled"], self.dropped["spool_full"]
            subs = list(self.queue)
            self.queue.clear()
            with self._queued_lock:
                self._queued = 0
            unsent, self.delivery.unsent = list(self.delivery.unsent), deque()
            for request in unsent:
                self.delivery.to_spool(request)
            self._spool_submissions(subs)
            spooled = self.counters["spooled"] - before[0]
            lost = self.dropped["spool_full"] - before[1]
        store = strip_userinfo(self.tracking_uri)
        if spooled or lost:
            logger.warning(
                "spark_tracking sink: the store at %s did not take %d values in time; they are in "
                "the spool %s: run `spark-tracking replay` once the store answers%s",
                store,
                spooled,
                self.spool.directory,
                f" ({lost} more did not fit: spool_max_bytes, dropped)" if lost else "",
            )
        elif self.spool.files():
            logger.warning(
                "spark_tracking sink: the store at %s did not take what waits in the spool %s: run "
                "`spark-tracking replay` once the store answers",
                store,
                self.spool.directory,
            )

    def _spool_submissions(self, subs: list) -> None:
        """Spool submissions as requests, means of open steps included (called with the lock)."""
        pending: dict[str, dict] = {}
        for sub in subs:
            self.aggregator.apply(sub, pending)
        self.aggregator.close(pending, lambda run, stage: True)
        for run, data in pending.items():
            for request in self._requests(run, data):
                self.delivery.to_spool(request)
            if data["artifacts"]:
                self.tally.drop("artifact_failed", len(data["artifacts"]), run)
                logger.warning(
                    "spark_tracking sink: %d artifacts of run %s were not stored before exit",
                    len(data["artifacts"]),
                    run,
                )
        for sub in subs:
            if not sub.future.done():
                sub.future.set_result(sub.kind != "flush")

    # -- the sink thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self.wake.wait(1.0)
            self.wake.clear()
            if self.linger and self.queue:
                time.sleep(self.linger)  # let concurrent submissions coalesce into one round
            self._round()

    def _round(self) -> None:
        finished = self._finished_stages()  # asked before taking the queue: see _finished_stages
        with self.lock:
            if self.delivery.evacuated:
                return
            subs: list[Submission] = []
            while self.queue:
                subs.append(self.queue.popleft())
            taken = sum(len(s.metrics) + len(s.params) + len(s.tags) + len(s.artifacts) for s in subs)
            with self._queued_lock:
                self._queued -= taken
            pending: dict[str, dict] = {}
            flushing = False
            for sub in subs:
                flushing = sub.kind == "flush" or flushing
                self.aggregator.apply(sub, pending)
            if finished:
                self.aggregator.close(pending, lambda run, stage: stage in finished)
            self.delivery.unsent = deque(r for run, data in pending.items() for r in self._requests(run, data))
        ok = False
        try:
            ok = self.delivery.send_all(pending)
            if flushing or self.clock() >= self.delivery.spool_retry_at:
                ok = self.delivery.drain_spool() and ok
        except Exception:
            logger.exception("spark_tracking sink: round failed; its requests go to the spool")
            with self.lock:
                if not self.delivery.evacuated:
                    while self.delivery.unsent:
                        self.delivery.to_spool(self.delivery.unsent.popleft())
        finally:
            for sub in subs:
                if not sub.future.done():
                    sub.future.set_result(ok if sub.kind == "flush" else True)

    def _finished_stages(self) -> set:
        """Stages with open means that Spark no longer runs (at most once a second).

        Asked before the round takes the queue: a task's points are acknowledged before the
        task reports its end to Spark, so they are in the queue by the time the stage is over."""
        if self.stages_finished is None or self.clock() < self._next_stage_check:
            return set()
        with self.lock:
            open_stages = self.aggregator.open_stages()
        if not open_stages:
            return set()
        self._next_stage_check = self.clock() + 1.0
        try:
            return set(self.stages_finished(open_stages))
        except Exception:
            logger.debug("spark_tracking sink: stage status unavailable", exc_info=True)
            return set()

    def _requests(self, run: str, data: dict) -> list[dict]:
        return cut_requests(run, data, self.batch_max_metrics, self.max_values_per_key)
