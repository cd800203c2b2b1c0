"""What the driver did with the values tasks sent: received, stored, spooled, dropped by cause,
for the whole driver session and for each run.

The session counters are ``spark_tracking.stats()``; a run's are ``spark_tracking.stats(run_id)``,
which the live view shows for the run it follows (a notebook session runs many runs: the
session's counters mix them).
"""

from __future__ import annotations

import threading
from collections import defaultdict

from .bounded import BoundedDict

#: the counters a run has (``dropped`` is by cause)
RUN_KEYS = ("received", "sent", "spooled")
#: the counters ``stats()`` always has (zero until counted), besides ``relay`` and ``dropped``
SESSION_COUNTERS = ("received", "sent", "retried", "spooled", "requests", "aggregated", "queued")


def run_stats(run_id: str, parts: list[dict]) -> dict:
    """One run's counters (``spark_tracking.stats(run_id)``), summed over the parts of it each
    sink holds (``Tally.run``)."""
    out: dict = {"run_id": run_id, **dict.fromkeys(RUN_KEYS, 0), "dropped": {}}
    for part in parts:
        for key in RUN_KEYS:
            out[key] += part[key]
        for cause, n in part["dropped"].items():
            out["dropped"][cause] = out["dropped"].get(cause, 0) + n
    return out


class Tally:
    """The sink's counters: ``counters`` and ``dropped`` (by cause) for the session, and the same
    per run for the ``max_runs`` most recent runs. ``count`` and ``drop`` add to both."""

    def __init__(self, max_runs: int = 1024):
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self._runs: BoundedDict = BoundedDict(max_runs)  # run -> {"received": n, ..., "dropped": {cause: n}}
        self._lock = threading.Lock()  # the relay's thread and the sink's both count

    def count(self, key: str, n: int, run: str | None) -> None:
        """Add ``n`` to the counter ``key`` of the session, and of ``run`` for the run keys."""
        self.counters[key] += n
        if run is not None and key in RUN_KEYS:
            counts = self._of(run)
            counts[key] += n

    def drop(self, cause: str, n: int, run: str | None) -> None:
        """Count ``n`` values dropped for ``cause``, for the session and for ``run``."""
        self.dropped[cause] += n
        if run is not None:
            dropped = self._of(run)["dropped"]
            dropped[cause] = dropped.get(cause, 0) + n

    def run(self, run: str) -> dict:
        """``run``'s counters (zeros when the driver took nothing for it, or forgot it)."""
        with self._lock:
            counts = self._runs.get(run)
        if counts is None:
            return {**dict.fromkeys(RUN_KEYS, 0), "dropped": {}}
        return {**{key: counts[key] for key in RUN_KEYS}, "dropped": dict(counts["dropped"])}

    def _of(self, run: str) -> dict:
        with self._lock:
            counts = self._runs.get(run)
            if counts is None:
                counts = self._runs[run] = {**dict.fromkeys(RUN_KEYS, 0), "dropped": {}}
            return counts
