"""Per-worker series and their means, per (run, stage) (docs/forwarding.md, ``layout``).

When a stage has more than one task, worker ``w`` (the barrier rank or the partition id) logs
its own series (``layout.worker_metric_key``) and the sink adds the mean across workers at each
step as plain ``<key>``, emitted once every task of the stage reported that step (or, for what
is left, when the stage ends or on flush). A single-task stage logs plain ``<key>`` only, as a
local run would.

Retried and speculative task attempts: per (run, stage, partition, key) a point is kept only
when its step is above the highest step already kept from another attempt, so each step of a
worker's series is stored once — by the attempt that logged it first.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Callable

from ... import layout
from ..records import Worker
from .batches import new_pending
from .bounded import BoundedDict
from .tally import Tally

logger = logging.getLogger(__name__)

#: open (key, step) means a (run, stage) holds at most; past it the oldest are written
MAX_OPEN_STEPS = 10_000


def attempt_of(worker: Worker) -> tuple:
    """Which attempt of a task logged: (stage attempt, task attempt, task id). Spark restarts
    the task attempt at 0 in each stage attempt; the task id tells any two attempts apart."""
    return (worker.stage_attempt, worker.attempt, worker.task_id)


class StageState:
    """What the sink keeps per (run, stage): the high-water step per worker series and the
    attempt that owns it, the tasks that ended, the open means and how far means were written."""

    __slots__ = ("agg", "done", "high_water", "mean_through")

    def __init__(self):
        self.high_water: dict[tuple, tuple] = {}  # (worker id, key) -> (attempt, highest step)
        self.done: set[int] = set()  # partitions whose task ended
        self.agg: dict[tuple, dict] = {}  # (key, step) -> {worker id: (value, timestamp)}
        self.mean_through: dict[str, int] = {}  # key -> highest step whose mean was written


class Aggregator:
    """The sink's per-stage and per-run state: worker series, open means, params seen.

    ``stage_tasks(stage)`` gives a stage's number of tasks (None: unknown yet); ``tally`` is the
    sink's counters. State is kept for the ``max_stages`` most recent (run, stage)
    pairs and the ``max_runs`` most recent runs, and at most ``max_open_steps`` open means per
    (run, stage). A submission marked ``solo`` (a run the task created) keeps the user's keys."""

    def __init__(
        self,
        stage_tasks,
        aggregate: bool,
        tally: Tally,
        max_stages: int,
        max_runs: int,
        max_open_steps: int = MAX_OPEN_STEPS,
    ):
        self.stage_tasks = stage_tasks
        self.max_open_steps = max_open_steps
        self.aggregate = aggregate
        self.tally = tally
        self.counters = tally.counters
        self.stages: BoundedDict = BoundedDict(max_stages)  # (run, stage) -> StageState
        self.params: BoundedDict = BoundedDict(max_runs)  # run -> {param: value}

    def open_stages(self) -> set:
        """Stages with means not written yet."""
        return {stage for (_, stage), state in self.stages.items() if state.agg}

    def apply(self, sub, pending: dict) -> None:
        """Fold one submission (points, a task's end, a flush) into ``pending`` (run -> data)."""
        if sub.kind == "flush":
            self.close(pending, lambda run, stage: True)
        elif sub.kind == "done":
            self.task_done(sub, pending)
        elif sub.kind == "points":
            self.take(sub, pending)

    def _stage(self, run: str, stage: int) -> StageState:
        state = self.stages.get((run, stage))
        if state is None:
            state = self.stages[(run, stage)] = StageState()
        return state

    def take(self, sub, pending: dict) -> None:
        """A task's points: its worker series (first attempt wins), the mean once every task reported."""
        run, worker = sub.run_id, sub.worker
        stage = worker.stage
        state = self._stage(run, stage)
        wid, who = layout.worker_id(worker), attempt_of(worker)
        out = pending.setdefault(run, new_pending())
        expected = self.stage_tasks(stage)
        # a run one task created (a child run per model) is that task's alone: the user's keys
        multi = not sub.solo and (worker.rank is not None or expected is None or expected > 1)
        # the mean waits for one value per task; with ranks, how many there are is known only
        # when the stage ends (a task may start several ranks)
        mean_of = expected if worker.rank is None else None
        system_prefix = layout.SYSTEM_PREFIX
        high_water, metrics = state.high_water, out["metrics"]
        for point in sub.metrics:
            key, value, ts, step = point
            series = (wid, key)
            hw = high_water.get(series)
            if hw is not None and hw[0] != who and step <= hw[1]:
                self.tally.drop("duplicate_attempt", 1, run)
                continue
            if hw is None or step > hw[1]:  # else it stays (who, its step): another attempt's was dropped above
                high_water[series] = (who, step)
            # a worker's system metrics: always per worker, never a mean (plain system/<name> is
            # MLflow's own series of the driver's machine; layout.SYSTEM_PREFIX)
            system = key.startswith(system_prefix)
            if not multi and not system:
                metrics.append(point if type(point) is tuple else (key, value, ts, step))
                continue
            metrics.append((layout.worker_metric_key(key, wid), value, ts, step))
            if (
                self.aggregate
                and not system
                and ((key, step) in state.agg or step > state.mean_through.get(key, -1 << 63))
            ):
                values = state.agg.setdefault((key, step), {})
                values[wid] = (value, ts)
                if mean_of is not None and len(values) >= mean_of:
                    self._emit_mean(run, state, key, step, pending)
        if len(state.agg) > self.max_open_steps:
            self._emit_oldest(run, state, pending)
        seen = self.params.setdefault(run, {})
        for key, value in sub.params:
            if key in seen and seen[key] != value:
                self.tally.drop("param_conflict", 1, run)
                logger.warning(
                    "spark_tracking: param %r of run %s was logged as %r and a task "
                    "logged %r; MLflow keeps the first value, the second is dropped",
                    key,
                    run,
                    seen[key],
                    value,
                )
                continue
            seen[key] = value
            out["params"][key] = value
        for key, value in sub.tags:
            out["tags"][key] = value
        out["artifacts"].extend(sub.artifacts)

    def task_done(self, sub, pending: dict) -> None:
        """A task ended: once every task of its stage has, close the stage's open means."""
        run, stage = sub.run_id, sub.worker.stage
        state = self._stage(run, stage)
        state.done.add(sub.worker.partition)
        expected = self.stage_tasks(stage)
        if expected is not None and len(state.done) >= expected:
            self.close(pending, lambda r, s: r == run and s == stage)

    def _emit_oldest(self, run: str, state: StageState, pending: dict) -> None:
        """Past ``max_open_steps`` open means in a stage (ranks: how many there are is known at
        the stage's end), write the oldest with the values they have: a long barrier or
        TorchDistributor stage holds bounded memory and its means appear while it runs (ranks
        that log in step are complete by then)."""
        excess = len(state.agg) - self.max_open_steps
        for key, step in list(itertools.islice(state.agg, excess)):
            self._emit_mean(run, state, key, step, pending)

    def _emit_mean(self, run: str, state: StageState, key: str, step: int, pending: dict) -> None:
        values = state.agg.pop((key, step))
        nums = [v for v, _ in values.values()]
        ts = max(t for _, t in values.values())
        mean = sum(nums) / len(nums)
        if math.isinf(mean) and all(math.isfinite(v) for v in nums):  # the sum overflowed, not the mean
            mean = sum(v / len(nums) for v in nums)
        pending.setdefault(run, new_pending())["metrics"].append((key, mean, ts, step))
        state.mean_through[key] = max(step, state.mean_through.get(key, step))
        self.counters["aggregated"] += 1

    def close(self, pending: dict, select: Callable[[str, int], bool]) -> None:
        """Write the open means of the (run, stage) pairs ``select`` picks."""
        for (run, stage), state in list(self.stages.items()):
            if state.agg and select(run, stage):
                for key, step in sorted(state.agg):
                    self._emit_mean(run, state, key, step, pending)
