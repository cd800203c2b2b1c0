"""What Spark's status tracker says about a classic SparkContext's stages: the sink needs each
stage's task count to write a step's mean once every worker reported it, and to know when a
stage ended (its open means are then written with the workers that reported); the live view
needs how many of a stage's task attempts failed. ``connect.ConnectStages`` answers the first
two for a Spark Connect session (its client has no status tracker)."""

from __future__ import annotations

from .bounded import BoundedDict


class SparkStages:
    """What Spark's status tracker says about stages: how many tasks one has, which ended.
    The task counts of running stages are cached; a stage's entry goes when it ends."""

    def __init__(self, sc):
        self.sc = sc
        self._tasks: BoundedDict = BoundedDict(4096)

    def tasks(self, stage: int) -> int | None:
        """A stage's number of tasks, None when Spark does not know it (yet)."""
        known = self._tasks.get(stage)
        if known is None and self.sc is not None:
            try:
                info = self.sc.statusTracker().getStageInfo(stage)
            except Exception:  # noqa: BLE001 - a stopping context: the count stays unknown
                info = None
            if info is not None:
                known = self._tasks[stage] = info.numTasks
        return known

    def finished(self, stages: set) -> set:
        """Those of ``stages`` Spark does not run any more (ended, failed or cancelled)."""
        if self.sc is None:
            return set()
        ended = set(stages) - set(self.sc.statusTracker().getActiveStageIds())
        for stage in ended:
            self._tasks.pop(stage, None)
        return ended

    def failed_tasks(self, stage: int) -> int | None:
        """How many task attempts of ``stage`` (its latest attempt) failed, as Spark counts them,
        also those that never told the driver (a crashed Python worker); None when Spark does
        not know the stage (never, or no more)."""
        if self.sc is None:
            return None
        info = self.sc.statusTracker().getStageInfo(stage)
        return None if info is None else int(info.numFailedTasks)
