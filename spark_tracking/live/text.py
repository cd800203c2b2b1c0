"""The live view outside a notebook: a compact text summary, redrawn in place on a terminal."""

from __future__ import annotations

import math

from .model import Snapshot


def _num(value: float) -> str:
    return "-" if math.isnan(value) else format(value, ".4g")


def table_rows(snap: Snapshot) -> list[list[str]]:
    """The latest-values table as text cells (header first): shared by every frontend."""
    rows = [["metric", "step", "mean", "min", "max", "workers", "points"]]
    for r in snap.rows:
        rows.append([r.metric, str(r.step), _num(r.mean), _num(r.low), _num(r.high), str(r.workers), f"{r.points:,}"])
    return rows


def headline(snap: Snapshot) -> str:
    """The summary's first line: run id, name and status."""
    run = snap.run_id[:8] if snap.run_id else "(the next run tasks log to)"
    name = f" {snap.run_name}" if snap.run_name else ""
    return f"run {run}{name}  {snap.status}"


def counters_line(snap: Snapshot) -> str:
    """The summary's second line: points from tasks and the forwarding counters."""
    c = snap.counters
    line = (
        f"points from tasks {snap.points:,}  |  forwarding: received {c.get('received', 0):,}  "
        f"stored {c.get('stored', 0):,}  spooled {c.get('spooled', 0):,}  dropped {c.get('dropped', 0):,}"
    )
    if snap.hidden_points:
        line += f"  |  {snap.hidden_points:,} points not drawn (view limits)"
    return line


def format_summary(snap: Snapshot) -> str:
    """The compact text summary of a snapshot."""
    lines = [headline(snap), counters_line(snap)]
    rows = table_rows(snap)
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    else:
        lines.append("no points from tasks yet")
    if snap.url:
        lines.append(f"link: {snap.url}")
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
