"""What the live view knows of one run: per metric, one bounded curve per worker and their mean,
per worker its state, and the run's task failures.

Fed on the view's own thread with what the driver relay receives
(``spark_tracking.forwarding.driver.observers``: the points of one task frame, a task's end, a
task's failure) and with what the store already holds (:meth:`LiveRun.add_point`, the
history). Pure data: no MLflow, no Spark, no plotting, so it is tested alone.

Workers are named as the sink names their series (``layout.worker_metric_key``): the barrier
rank, or else the partition id. A worker's curve keeps each step once: a step below the highest
one it already has (a retried attempt starting over) is skipped, as the sink keeps the first
attempt's points; the same step again replaces the value.

The mean of a step is *complete* once every worker of the metric has a value at that step;
until then it is *partial* (drawn apart, never mixed with complete ones): with more tasks than
cores the second wave starts later, and a mean over the first wave only would jump.

Bounded memory: a curve keeps at most ``max_points`` points. When one would exceed it, every
curve of that metric is thinned to every other kept step (the steps kept are those at
``origin + k * stride``, the same for every worker, so the mean stays aligned), and the latest
point of each worker is always known. At most ``max_metrics`` metrics and ``max_workers``
workers per metric are drawn; points beyond are counted in ``hidden_points``.

Workers' system metrics (``system/<name>``; the step is a Unix time) never enter the chart, the
metrics table or a worker's step: the view keeps what ``show_text.system_rows`` reads, one
:class:`~spark_tracking.show_text.SeriesSummary` per series as the store keys it
(``system/<name>/worker_<w>``; the driver's machine: ``system/<name>``), at most ``MAX_SYSTEM_SERIES``.
"""

from __future__ import annotations

import bisect
import math
from array import array
from dataclasses import dataclass, field

from ..layout import is_system_metric, worker_metric_key
from ..layout import worker_id as worker_of  # the one home of the worker-id rule
from ..show_text import SeriesSummary, system_rows

#: the curve key of a metric's points the driver logged itself (not from tasks)
DRIVER = "driver"
#: how many task failures a view keeps (the newest)
MAX_FAILURES = 20
#: how many system-metric series (one per worker and name) a view keeps; beyond, not shown
MAX_SYSTEM_SERIES = 1024


class Curve:
    """One worker's points of one metric: kept steps and values, plus the latest point."""

    __slots__ = ("last_step", "last_value", "steps", "values")

    def __init__(self):
        self.steps = array("q")
        self.values = array("d")
        self.last_step: int | None = None
        self.last_value = math.nan

    def points(self) -> list[tuple[int, float]]:
        """The kept points as ``(step, value)``, in step order."""
        return list(zip(self.steps, self.values))

    def value_at(self, step: int) -> float | None:
        """The kept value at ``step``, or None."""
        i = bisect.bisect_left(self.steps, step)
        return self.values[i] if i < len(self.steps) and self.steps[i] == step else None


class Metric:
    """One metric's curves (worker -> Curve), the per-step sums behind their mean, and the
    driver's own points of the same key (if it logs any)."""

    def __init__(self, max_points: int, max_workers: int):
        self.max_points, self.max_workers = max_points, max_workers
        self.curves: dict[int, Curve] = {}
        self.driver: Curve | None = None
        self.sums: dict[int, list] = {}  # kept step -> [sum, count] over the workers
        self.origin: int | None = None  # the metric's first step: kept steps are origin + k * stride
        self.stride = 1
        self.count = 0  # distinct points taken (all workers, kept or not)
        self.hidden = 0

    def _kept(self, step: int) -> bool:
        return (step - (self.origin or 0)) % self.stride == 0

    def add(self, worker: int, step: int, value: float) -> bool:
        """Take one point of ``worker``; a step it already passed is ignored, the same step again
        replaces its value. Past ``max_points`` kept steps, every other step is dropped.
        True when the point was new (not a repeat of a step the worker already had)."""
        curve = self.curves.get(worker)
        if curve is None:
            if len(self.curves) >= self.max_workers:
                self.hidden += 1
                return True  # taken, not drawn
            curve = self.curves[worker] = Curve()
        last = curve.last_step
        if last is not None and step <= last:
            if step < last:
                return False  # a later attempt (or the store's history) repeating steps the worker already has
            if curve.steps and curve.steps[-1] == step:
                self.sums[step][0] += value - curve.values[-1]
                curve.values[-1] = value
            curve.last_value = value
            return False
        self.count += 1
        if self.origin is None:
            self.origin = step
        curve.last_step, curve.last_value = step, value
        if not self._kept(step):
            return True  # between the kept steps
        curve.steps.append(step)
        curve.values.append(value)
        total = self.sums.setdefault(step, [0.0, 0])
        total[0] += value
        total[1] += 1
        if len(curve.steps) > self.max_points or len(self.sums) > self.max_points:
            self._thin()
        return True

    def add_driver(self, step: int, value: float) -> bool:
        """A point the driver logged itself under this key (read from the store)."""
        curve = self.driver = self.driver or Curve()
        if curve.last_step is not None and step <= curve.last_step:
            if step == curve.last_step and curve.steps and curve.steps[-1] == step:
                curve.values[-1] = curve.last_value = value
            return False
        curve.last_step, curve.last_value = step, value
        curve.steps.append(step)
        curve.values.append(value)
        if len(curve.steps) > self.max_points:  # the driver's own curve: every other point
            curve.steps, curve.values = curve.steps[::2], curve.values[::2]
        self.count += 1
        return True

    def _thin(self) -> None:
        while len(self.sums) > self.max_points:
            self.stride *= 2
            self.sums = {s: v for s, v in self.sums.items() if self._kept(s)}
        for curve in self.curves.values():
            keep = [(s, v) for s, v in zip(curve.steps, curve.values) if self._kept(s)]
            curve.steps = array("q", [s for s, _ in keep])
            curve.values = array("d", [v for _, v in keep])

    def mean(self) -> list[tuple[int, float]]:
        """The mean at each kept step every worker of the metric has reached, as ``(step, mean)``."""
        n = len(self.curves)
        return [(s, total / k) for s, (total, k) in sorted(self.sums.items()) if k == n]

    def partial_mean(self) -> list[tuple[int, float]]:
        """The mean at each kept step only some workers have reached yet (over those workers)."""
        n = len(self.curves)
        return [(s, total / k) for s, (total, k) in sorted(self.sums.items()) if k < n]

    def last_complete_step(self) -> int | None:
        """The highest kept step every worker of the metric has a value at."""
        n = len(self.curves)
        return max((s for s, (_, k) in self.sums.items() if k == n), default=None)


@dataclass
class Row:
    """One line of the metrics table: the metric at its latest complete step (every worker
    has a value there), and how far the workers are."""

    metric: str
    #: the latest step every worker reached (None: none yet), and the mean, min, max there
    step: int | None
    mean: float
    low: float
    high: float
    #: the highest step any worker reached
    latest: int | None
    workers: int
    points: int
    #: the driver's own latest value of this key (nan: it logs none)
    driver: float = math.nan


@dataclass
class WorkerRow:
    """One line of the workers table."""

    worker: int
    #: running | done | failed | retried (after a failed attempt) | unreported (its stage ended)
    state: str
    stage: int
    attempt: int
    step: int | None
    #: metric -> latest value
    last: dict[str, float]
    points: int
    #: wall-clock time (ms) of the worker's latest point or event
    last_seen_ms: int | None
    error: str = ""


@dataclass
class Failure:
    """A failed task attempt: from a failure event of the driver, or inferred from a new attempt."""

    worker: int
    stage: int
    attempt: int
    #: the error's first line ("" when only the retry told it)
    error: str


@dataclass
class Snapshot:
    """Everything a frontend draws, as plain data (taken on the view's thread)."""

    run_id: str | None
    run_name: str = ""
    status: str = "WAITING"
    url: str | None = None
    #: the run's properties from the store: experiment name, start and end (ms since epoch)
    experiment: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    #: now (ms since epoch), for the run's duration and the workers' "last seen"
    now_ms: int | None = None
    #: points of this run the view took: from the relay (tasks), and from the store (history)
    points: int = 0
    received: int = 0
    loaded: int = 0
    refresh: int = 0
    #: the run's forwarding counters on this driver (``spark_tracking.stats(run_id)``):
    #: received, stored, spooled, dropped, and the drops by cause
    counters: dict[str, int] = field(default_factory=dict)
    dropped_by: dict[str, int] = field(default_factory=dict)
    #: metric -> (worker -> [(step, value)], mean [(step, value)])
    curves: dict[str, tuple[dict[int, list[tuple[int, float]]], list[tuple[int, float]]]] = field(default_factory=dict)
    #: metric -> partial mean [(step, value)] (steps not every worker has reached yet)
    partial: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    #: metric -> the driver's own points [(step, value)]
    driver: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: task attempts of the run that failed (all of them; ``failures`` keeps the newest)
    failed_tasks: int = 0
    #: stage -> task attempts Spark counts as failed that never reported to the driver (a Python
    #: worker that crashed or was killed, a failure outside the task's Python code)
    unreported: dict[int, int] = field(default_factory=dict)
    hidden_points: int = 0
    #: the system-metrics table (``show_text.system_rows``), header first ([] without system metrics):
    #: a row per worker (CPU, memory, GPU), and the notes naming the outlying workers
    system: list[list[str]] = field(default_factory=list)
    system_notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True once the run ended (FINISHED, FAILED or KILLED)."""
        return self.status in ("FINISHED", "FAILED", "KILLED")


class _SystemSeries:
    """One worker's series of one system metric: its summary, and the last step taken (a
    repeat of a step already taken, from the store's history or a retry, is not counted)."""

    __slots__ = ("step", "summary")

    def __init__(self):
        self.step: int | None = None
        self.summary = SeriesSummary()


class _Worker:
    __slots__ = ("attempt", "error", "last", "last_seen_ms", "points", "stage", "state", "step")

    def __init__(self):
        self.stage, self.attempt = -1, 0
        self.state = "running"
        self.step: int | None = None
        self.last: dict[str, float] = {}
        self.points = 0
        self.last_seen_ms: int | None = None
        self.error = ""


class LiveRun:
    """The bounded state of one run as the relay delivers it and the store holds it."""

    def __init__(self, max_points: int = 500, max_metrics: int = 12, max_workers: int = 64):
        self.max_points, self.max_metrics, self.max_workers = max_points, max_metrics, max_workers
        self.metrics: dict[str, Metric] = {}
        self.workers: dict[int, _Worker] = {}
        self.failures: list[Failure] = []
        self.failed_attempts = 0
        self._failed_in: dict[int, int] = {}  # stage -> failed attempts the driver was told of
        self.spark_failed: dict[int, int] = {}  # stage -> failed attempts Spark's status tracker counts
        self.stages: set[int] = set()  # stages this run's tasks logged from
        self.points = 0
        self.received = 0
        self.loaded = 0
        self.hidden_points = 0
        self.system: dict[str, _SystemSeries] = {}  # stored key -> its running summary
        self.version = 0  # bumped by every change; a frontend redraws only when it moved

    def _metric(self, key: str) -> Metric | None:
        metric = self.metrics.get(key)
        if metric is None:
            if len(self.metrics) >= self.max_metrics:
                return None
            metric = self.metrics[key] = Metric(self.max_points, self.max_workers)
        return metric

    def _add_system(self, key: str, step: int, value: float) -> bool:
        """A system-metric point under its stored key; True when it was new."""
        series = self.system.get(key)
        if series is None:
            if len(self.system) >= MAX_SYSTEM_SERIES:
                self.hidden_points += 1
                return False
            series = self.system[key] = _SystemSeries()
        if series.step is not None and step <= series.step:
            return False
        series.step = step
        series.summary.add(value)
        return True

    def _worker(self, worker_list, seen_ms: int | None) -> tuple[int, _Worker]:
        """The worker of a relay worker list, its stage and attempt brought up to date."""
        wid = worker_of(worker_list)
        state = self.workers.get(wid)
        if state is None:
            state = self.workers[wid] = _Worker()
        stage, attempt = int(worker_list[0]), int(worker_list[2])
        self.stages.add(stage)
        if stage != state.stage:
            state.stage, state.attempt, state.error = stage, attempt, ""
            state.state = "retried" if attempt > 0 else "running"
        elif attempt > state.attempt:
            if state.state != "failed":  # a new attempt: the previous one failed, whatever told us
                self._failed(wid, stage, state.attempt, "")
            state.attempt, state.state, state.error = attempt, "retried", ""  # the error stays in failures
        if seen_ms is not None:
            state.last_seen_ms = max(seen_ms, state.last_seen_ms or seen_ms)
        return wid, state

    def _failed(self, wid: int, stage: int, attempt: int, error: str) -> None:
        self.failed_attempts += 1
        self._failed_in[stage] = self._failed_in.get(stage, 0) + 1
        self.failures.append(Failure(wid, stage, attempt, error))
        del self.failures[:-MAX_FAILURES]

    def take(self, worker_list, metrics) -> None:
        """Points of one task frame: ``metrics`` as ``(key, value, timestamp_ms, step)``."""
        wid, state = self._worker(worker_list, max((m[2] for m in metrics), default=None))
        training = any(not is_system_metric(m[0]) for m in metrics)
        if training and state.state in ("done", "failed"):  # a rank's sampler may outlive its task
            state.state = "running" if state.attempt == 0 else "retried"
        for key, value, _ts, step in metrics:
            if is_system_metric(key):
                if self._add_system(worker_metric_key(key, wid), step, value):
                    self.points += 1
                    self.received += 1
                continue
            metric = self._metric(key)
            if metric is None:
                self.hidden_points += 1
                self.points += 1
                self.received += 1
                continue
            if metric.add(wid, step, value):
                state.points += 1
                self.points += 1
                self.received += 1
            if state.step is None or step >= state.step:
                state.step = step
                state.last[key] = value
            elif key not in state.last:
                state.last[key] = value
        self.version += 1

    def task_done(self, worker_list, now_ms: int | None = None) -> None:
        """A task of the run ended (the relay's "done")."""
        _, state = self._worker(worker_list, now_ms)
        if int(worker_list[2]) >= state.attempt:
            state.state = "done"
        self.version += 1

    def stage_failures(self, stage: int, failed: int) -> None:
        """Spark's count of ``stage``'s failed task attempts (its status tracker): attempts that
        never told the driver (a crashed Python worker) are counted and shown from it."""
        if failed > self.spark_failed.get(stage, 0):
            self.spark_failed[stage] = failed
            self.version += 1

    def stage_ended(self, stage: int) -> None:
        """Spark ended ``stage``: its workers still running never said so (crashed, or a late "done")."""
        for state in self.workers.values():
            if state.stage == stage and state.state in ("running", "retried"):
                state.state = "unreported"
                self.version += 1

    def task_failed(self, worker_list, error: str, now_ms: int | None = None) -> None:
        """A task attempt of the run failed with ``error`` (its first line is kept)."""
        wid, state = self._worker(worker_list, now_ms)
        first = next((line.strip() for line in str(error or "").splitlines() if line.strip()), "")[:300]
        attempt = int(worker_list[2])
        known = next(
            (f for f in self.failures if (f.worker, f.stage, f.attempt) == (wid, state.stage, attempt)),
            None,
        )
        if known is not None:  # inferred from the retry already: now the error is known
            known.error = known.error or first
        else:
            self._failed(wid, state.stage, attempt, first)
        if attempt >= state.attempt:
            state.state, state.error = "failed", first
        self.version += 1

    def add_point(self, key: str, worker: int | None, step: int, value: float, timestamp_ms: int) -> None:
        """A point read from the store: a task's (``worker``) or the driver's own (None)."""
        if is_system_metric(key):
            if self._add_system(key if worker is None else worker_metric_key(key, worker), step, value):
                self.points += 1
                self.loaded += 1
                self.version += 1
            return
        metric = self._metric(key)
        if metric is None:
            self.hidden_points += 1
            return
        if worker is None:
            new = metric.add_driver(step, value)
        else:
            state = self.workers.get(worker)
            if state is None:
                state = self.workers[worker] = _Worker()
                state.state = "done"  # known from the store only: it logged before the view looked
            new = metric.add(worker, step, value)
            if new:
                state.points += 1
            if state.step is None or step >= state.step:
                state.step = step
                state.last[key] = value
            state.last_seen_ms = max(timestamp_ms, state.last_seen_ms or timestamp_ms)
        if new:
            self.points += 1
            self.loaded += 1
            self.version += 1

    def snapshot(self, **fields) -> Snapshot:
        """The state as a :class:`Snapshot`; ``fields`` fill its run fields (id, name, status...)."""
        curves, partial, driver, rows = {}, {}, {}, []
        for key in sorted(self.metrics):
            metric = self.metrics[key]
            curves[key] = ({w: c.points() for w, c in sorted(metric.curves.items())}, metric.mean())
            partial[key] = metric.partial_mean()
            if metric.driver is not None:
                driver[key] = metric.driver.points()
            step = metric.last_complete_step()
            at = [v for c in metric.curves.values() if step is not None and (v := c.value_at(step)) is not None]
            latest = max((c.last_step for c in metric.curves.values() if c.last_step is not None), default=None)
            rows.append(
                Row(
                    key,
                    step,
                    sum(at) / len(at) if at else math.nan,
                    min(at, default=math.nan),
                    max(at, default=math.nan),
                    latest,
                    len(metric.curves),
                    metric.count,
                    metric.driver.last_value if metric.driver is not None else math.nan,
                )
            )
        workers = [
            WorkerRow(
                w, s.state, s.stage, s.attempt, s.step, dict(sorted(s.last.items())), s.points, s.last_seen_ms, s.error
            )
            for w, s in sorted(self.workers.items())
        ]
        hidden = self.hidden_points + sum(m.hidden for m in self.metrics.values())
        unreported = {
            stage: n - self._failed_in.get(stage, 0)
            for stage, n in sorted(self.spark_failed.items())
            if n > self._failed_in.get(stage, 0)
        }
        system, notes = system_rows({key: series.summary for key, series in self.system.items()})
        return Snapshot(
            points=self.points,
            received=self.received,
            loaded=self.loaded,
            curves=curves,
            partial=partial,
            driver=driver,
            rows=rows,
            workers=workers,
            failures=list(self.failures),
            failed_tasks=self.failed_attempts + sum(unreported.values()),
            unreported=unreported,
            hidden_points=hidden,
            system=system,
            system_notes=notes,
            **fields,
        )
