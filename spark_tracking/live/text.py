"""The live view as text: the summary every frontend shares, redrawn in place on a terminal."""

from __future__ import annotations

import math
import time

from .model import Snapshot

#: what the counters mean, said once in every view
COUNTERS_HELP = (
    "this run's values from tasks, counted by this driver: received: taken in from tasks; "
    "stored: written to the store, including the per-step means the driver adds (so it can "
    "exceed received); spooled: written to the driver's disk when the store did not answer "
    "(stored later, then counted in stored too); dropped: not stored, by cause"
)
#: what each drop cause means (the sink's names)
DROP_CAUSES = {
    "duplicate_attempt": "steps a retried task attempt sent again (the first attempt's points are kept)",
    "spool_full": "the store did not answer and the driver's spool was full",
    "rejected_by_store": "the store refused them",
    "run_refused": "the store refused the run",
    "malformed": "not a valid metric, param or tag",
    "param_conflict": "a param logged again with another value",
    "param_cap": "beyond the store's params per run",
    "artifact_failed": "artifacts not stored",
}
NO_UI_HINT = "no link: no MLflow UI runs for this store (start one with: spark-tracking ui)"


def _num(value: float) -> str:
    return "-" if math.isnan(value) else format(value, ".4g")


def _step(step: int | None) -> str:
    return "-" if step is None else str(step)


def duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` / ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def ago(snap: Snapshot, ms: int | None) -> str:
    """How long ago ``ms`` (epoch ms) was, from the snapshot's time."""
    if ms is None or snap.now_ms is None:
        return "-"
    return duration(max(0.0, (snap.now_ms - ms) / 1000)) + " ago"


def table_rows(snap: Snapshot) -> list[list[str]]:
    """The metrics table as text cells (header first): per metric, the latest step every worker
    reached and the mean, min and max there; the highest step any worker reached; the driver's
    own latest value of the key."""
    driver = any(not math.isnan(r.driver) for r in snap.rows)
    head = ["metric", "step (all workers)", "mean", "min", "max", "latest step", "workers", "points"]
    rows = [head + (["driver"] if driver else [])]
    for r in snap.rows:
        cells = [
            r.metric,
            _step(r.step),
            _num(r.mean),
            _num(r.low),
            _num(r.high),
            _step(r.latest),
            str(r.workers),
            f"{r.points:,}",
        ]
        rows.append(cells + ([_num(r.driver)] if driver else []))
    return rows


def worker_rows(snap: Snapshot) -> list[list[str]]:
    """The workers table as text cells (header first): state, stage, attempt, current step,
    latest value per metric, points, last seen."""
    metrics = [r.metric for r in snap.rows if r.workers]
    rows = [["worker", "state", "stage", "attempt", "step", *metrics, "points", "last seen"]]
    for w in snap.workers:
        state = w.state + (f": {w.error}" if w.error else "")
        rows.append(
            [
                str(w.worker),
                state,
                str(w.stage) if w.stage >= 0 else "-",
                str(w.attempt),
                _step(w.step),
                *[_num(w.last.get(m, math.nan)) for m in metrics],
                f"{w.points:,}",
                ago(snap, w.last_seen_ms),
            ]
        )
    return rows


#: the title of the system-metrics table (as ``spark-tracking show`` prints it)
SYSTEM_TITLE = "system metrics per worker"


def system_lines(snap: Snapshot) -> list[str]:
    """The workers' system-metrics table (``show_text.system_rows``: a row per worker, CPU, memory,
    GPU) and the notes naming the outlying workers; [] without system metrics."""
    if not snap.system:
        return []
    return [SYSTEM_TITLE, *_table(snap.system, left=1), *snap.system_notes]


def headline(snap: Snapshot) -> str:
    """The summary's first line: run id, name and status."""
    run = snap.run_id[:8] if snap.run_id else "(the next run tasks log to)"
    name = f" {snap.run_name}" if snap.run_name else ""
    return f"run {run}{name}  {snap.status}"


def properties_line(snap: Snapshot) -> str:
    """The run's properties: experiment, start, duration, and its failed task attempts."""
    parts = []
    if snap.experiment:
        parts.append(f"experiment {snap.experiment}")
    if snap.start_ms:
        parts.append("started " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snap.start_ms / 1000)))
        end = snap.end_ms if snap.finished and snap.end_ms else snap.now_ms
        if end:
            parts.append(f"duration {duration(max(0.0, (end - snap.start_ms) / 1000))}")
    if snap.failed_tasks:
        parts.append(f"failed task attempts {snap.failed_tasks}")
    return "  |  ".join(parts)


def counters_line(snap: Snapshot) -> str:
    """This run's forwarding counters on the driver, and the points the view took."""
    c = snap.counters
    line = (
        f"this run: received {c.get('received', 0):,}  stored {c.get('stored', 0):,}  "
        f"spooled {c.get('spooled', 0):,}  dropped {c.get('dropped', 0):,}"
    )
    if snap.dropped_by:
        line += " (" + ", ".join(f"{cause} {n:,}" for cause, n in sorted(snap.dropped_by.items())) + ")"
    line += f"  |  in the view: {snap.received:,} points from tasks"
    if snap.loaded:
        line += f", {snap.loaded:,} loaded from the store"
    if snap.hidden_points:
        line += f"  |  {snap.hidden_points:,} points not drawn (view limits)"
    return line


def counters_help(snap: Snapshot) -> str:
    """What the counters mean, with the causes of this run's drops."""
    causes = [f"{cause}: {DROP_CAUSES.get(cause, cause)}" for cause in sorted(snap.dropped_by)]
    return COUNTERS_HELP + (" (" + "; ".join(causes) + ")" if causes else "")


def failure_lines(snap: Snapshot) -> list[str]:
    """One line per failed task attempt (the newest kept), with the error's first line; then,
    per stage, the failed attempts only Spark knows of."""
    return [
        f"task failed: worker {f.worker}, stage {f.stage}, attempt {f.attempt}: "
        + (f.error or "(retried; the error was not reported to the driver)")
        for f in snap.failures
    ] + [
        f"stage {stage}: {n} task attempt{'s' * (n != 1)} failed without reporting an error "
        "(the Python worker crashed or was killed, or the failure was outside the task's Python "
        "code): the stage's page in the Spark UI and the executor's log have the cause"
        for stage, n in snap.unreported.items()
    ]


def link_line(snap: Snapshot) -> str:
    """The run's link, or why there is none."""
    if snap.url:
        return f"link: {snap.url}"
    return NO_UI_HINT if snap.run_id and snap.url == "" else ""


def _table(rows: list[list[str]], left: int = 2) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    ]


def format_summary(snap: Snapshot) -> str:
    """The compact text summary of a snapshot."""
    lines = [headline(snap)]
    props = properties_line(snap)
    if props:
        lines.append(props)
    lines.append(counters_line(snap))
    lines.extend(failure_lines(snap))
    rows = table_rows(snap)
    if len(rows) > 1:
        lines.extend(_table(rows))
        workers = worker_rows(snap)
        if len(workers) > 1:
            lines.extend(_table(workers))
    system = system_lines(snap)
    lines.extend(system)
    if len(rows) == 1 and not system:
        lines.append("no points yet")
    link = link_line(snap)
    if link:
        lines.append(link)
    return "\n".join(lines)


class TextFrontend:
    """Prints the summary: redrawn in place about once a second on a terminal (``live``),
    printed once, when the view finishes, elsewhere (a pipe, a log file)."""

    def __init__(self, file):
        self.file = file
        isatty = getattr(file, "isatty", None)
        self.live = bool(isatty and isatty())
        self._lines = 0

    def open(self, snap: Snapshot) -> None:
        """Print the first summary (on a terminal only)."""
        if self.live:
            self.update(snap)

    def update(self, snap: Snapshot) -> None:
        """Redraw the summary in place (on a terminal only)."""
        if not self.live:
            return
        text = format_summary(snap)
        # back to the first line of the previous summary, clear to the end of the screen
        prefix = f"\x1b[{self._lines}F\x1b[J" if self._lines else ""
        self.file.write(prefix + text + "\n")
        self.file.flush()
        self._lines = text.count("\n") + 1

    def finish(self, snap: Snapshot) -> None:
        """Print the final summary: in place on a terminal, once elsewhere."""
        if self.live:
            self.update(snap)
        else:
            self.file.write(format_summary(snap) + "\n")
            self.file.flush()
