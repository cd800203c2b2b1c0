"""What the live view knows of one run: per metric, one bounded curve per worker and their mean.

Fed with the submissions the driver relay receives (``spark_tracking.forwarding.driver.observers``),
on the view's own thread. Pure data: no MLflow, no Spark, no plotting, so it is tested alone.

Workers are named as the sink names their series (``layout.worker_metric_key``): the barrier rank, or
else the partition id. A worker's curve keeps each step once: a step below the highest one it
already has (a retried attempt starting over) is skipped, as the sink keeps the first attempt's
points; the same step again replaces the value.

Bounded memory: a curve keeps at most ``max_points`` points. When one would exceed it, every
curve of that metric is thinned to every other kept step (the steps kept are those at
``origin + k * stride``, the same for every worker, so the mean stays aligned), and the latest
point of each worker is always known. At most ``max_metrics`` metrics and ``max_workers``
workers per metric are drawn; points beyond are counted in ``hidden_points``.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from ..layout import worker_id as worker_of  # the one home of the worker-id rule


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


class Metric:
    """One metric's curves (worker -> Curve) and the per-step sums behind their mean."""

    def __init__(self, max_points: int, max_workers: int):
        self.max_points, self.max_workers = max_points, max_workers
        self.curves: dict[int, Curve] = {}
        self.sums: dict[int, list] = {}  # kept step -> [sum, count] over the workers
        self.origin = 0  # the metric's first step: kept steps are origin + k * stride
        self.stride = 1
        self.count = 0  # points received (all workers, kept or not)
        self.hidden = 0

    def _kept(self, step: int) -> bool:
        return (step - self.origin) % self.stride == 0

    def add(self, worker: int, step: int, value: float) -> None:
        """Take one point of ``worker``; a step it already passed is ignored, the same step again
        replaces its value. Past ``max_points`` kept steps, every other step is dropped."""
        curve = self.curves.get(worker)
        if curve is None:
            if len(self.curves) >= self.max_workers:
                self.hidden += 1
                return
            curve = self.curves[worker] = Curve()
        last = curve.last_step
        if last is not None and step <= last:
            if step < last:
                return  # a later attempt repeating steps the worker already logged
            self.count += 1  # the same step again: the new value replaces the old
            if curve.steps and curve.steps[-1] == step:
                self.sums[step][0] += value - curve.values[-1]
                curve.values[-1] = value
            curve.last_value = value
            return
        self.count += 1
        if self.count == 1:
            self.origin = step
        curve.last_step, curve.last_value = step, value
        if (step - self.origin) % self.stride:
            return  # between the kept steps
        curve.steps.append(step)
        curve.values.append(value)
        total = self.sums.setdefault(step, [0.0, 0])
        total[0] += value
        total[1] += 1
        if len(curve.steps) > self.max_points or len(self.sums) > self.max_points:
            self._thin()

    def _thin(self) -> None:
        while len(self.sums) > self.max_points:
            self.stride *= 2
            self.sums = {s: v for s, v in self.sums.items() if self._kept(s)}
        for curve in self.curves.values():
            keep = [(s, v) for s, v in zip(curve.steps, curve.values) if self._kept(s)]
            curve.steps = array("q", [s for s, _ in keep])
            curve.values = array("d", [v for _, v in keep])

    def mean(self) -> list[tuple[int, float]]:
        """The mean over the workers at each kept step, as ``(step, mean)``."""
        return [(s, total / n) for s, (total, n) in sorted(self.sums.items())]


@dataclass
class Row:
    """One line of the latest-values table."""

    metric: str
    step: int
    mean: float  # of the workers' latest values
    low: float
    high: float
    workers: int
    points: int


@dataclass
class Snapshot:
    """Everything a frontend draws, as plain data (taken on the view's thread)."""

    run_id: str | None
    run_name: str = ""
    status: str = "WAITING"
    url: str | None = None
    #: points this view received for the run, and the refresh number
    points: int = 0
    refresh: int = 0
    #: the driver's forwarding counters (``spark_tracking.stats()``): received, stored, spooled, dropped
    counters: dict[str, int] = field(default_factory=dict)
    #: metric -> (worker -> [(step, value)], mean [(step, value)])
    curves: dict[str, tuple[dict[int, list[tuple[int, float]]], list[tuple[int, float]]]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    hidden_points: int = 0

    @property
    def finished(self) -> bool:
        """True once the run ended (FINISHED, FAILED or KILLED)."""
        return self.status in ("FINISHED", "FAILED", "KILLED")


class LiveRun:
    """The bounded state of one run as the relay delivers it."""

    def __init__(self, max_points: int = 500, max_metrics: int = 12, max_workers: int = 64):
        self.max_points, self.max_metrics, self.max_workers = max_points, max_metrics, max_workers
        self.metrics: dict[str, Metric] = {}
        self.points = 0
        self.hidden_points = 0
        self.version = 0  # bumped by every change; a frontend redraws only when it moved

    def take(self, worker_list, metrics) -> None:
        """Points of one task frame: ``metrics`` as ``(key, value, timestamp_ms, step)``."""
        worker = worker_of(worker_list)
        for key, value, _ts, step in metrics:
            metric = self.metrics.get(key)
            if metric is None:
                if len(self.metrics) >= self.max_metrics:
                    self.hidden_points += 1
                    continue
                metric = self.metrics[key] = Metric(self.max_points, self.max_workers)
            metric.add(worker, step, value)
        self.points += len(metrics)
        self.version += 1

    def snapshot(self, **fields) -> Snapshot:
        """The state as a :class:`Snapshot`; ``fields`` fill its run fields (id, name, status...)."""
        curves, rows = {}, []
        for key in sorted(self.metrics):
            metric = self.metrics[key]
            curves[key] = ({w: c.points() for w, c in sorted(metric.curves.items())}, metric.mean())
            latest = [c.last_value for c in metric.curves.values() if not math.isnan(c.last_value)]
            steps = [c.last_step for c in metric.curves.values() if c.last_step is not None]
            if steps:
                rows.append(
                    Row(
                        key,
                        max(steps),
                        sum(latest) / len(latest) if latest else math.nan,
                        min(latest, default=math.nan),
                        max(latest, default=math.nan),
                        len(metric.curves),
                        metric.count,
                    )
                )
        hidden = self.hidden_points + sum(m.hidden for m in self.metrics.values())
        return Snapshot(points=self.points, curves=curves, rows=rows, hidden_points=hidden, **fields)
