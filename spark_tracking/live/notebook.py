"""The live view in a notebook: ipywidgets for the live output, matplotlib for the chart.

One ``VBox`` in the cell's output: a header (``HTML``: run, status, properties, link, counters,
failures), the chart (``Image``: a PNG drawn with matplotlib's Agg canvas, no pyplot, so nothing
else in the notebook is touched) and the metrics, workers and system-metrics tables (``HTML``). Header and
tables change at every refresh; the chart as often as ``CHART_SHARE`` allows, and at least every
``CHART_MAX_WAIT`` seconds. Updating a widget's value sends one small comm message from the
view's thread; the frontend redraws that output while other cells run (as ``tqdm.notebook``
progress bars do).

When the view finishes, the output is replaced (``update_display_data``) by the same content
as static HTML with the final chart inlined: a saved notebook, nbviewer or an HTML export
then shows the final chart without the widget state. A frontend without display updates
keeps the widget, which shows the same final state.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from typing import Any

from .model import Snapshot
from .text import (
    SYSTEM_TITLE,
    counters_help,
    counters_line,
    failure_lines,
    format_summary,
    headline,
    link_line,
    properties_line,
    table_rows,
    worker_rows,
)

#: inches per panel at DPI: 384 x 240 pixels
PANEL_SIZE = (4.8, 3.0)
DPI = 80
COLUMNS = 2
#: at most this share of the driver's time goes to drawing the chart: a draw that took d seconds
#: is followed by the next one no sooner than d / CHART_SHARE later (a redraw takes about 0.05 s
#: on an idle driver, so the chart follows every refresh; a busy driver gets fewer chart updates
#: rather than a slower relay). Laying the figure out (the first draw, a new metric or worker,
#: with matplotlib's first font lookups: up to a second) is not counted: it froze the chart for
#: 5-8 s right after its first frame
CHART_SHARE = 0.25
#: the chart is never left older than this (seconds), whatever a draw cost
CHART_MAX_WAIT = 2.0


def worker_colour(worker: int, workers: int):
    """A colour per worker, distinct past 10 workers: tab10 up to 10, tab20 up to 20, then
    evenly spaced hues (alternating lightness so neighbours differ)."""
    from matplotlib import colormaps

    if workers <= 10:
        return colormaps["tab10"](worker % 10)
    if workers <= 20:
        return colormaps["tab20"](worker % 20)
    import colorsys

    hue = (worker * 0.618033988749895) % 1.0  # golden-ratio steps: any count stays spread out
    return colorsys.hls_to_rgb(hue, 0.35 if worker % 2 else 0.55, 0.75)


#: beyond this many workers a panel's legend names the lines' kinds only (the table names workers)
LEGEND_WORKERS = 12
#: inches on the right of each panel for its legend (outside the axes: it never covers a curve)
LEGEND_WIDTH = 1.3


class Chart:
    """One panel per metric: a thin curve per worker, the mean of complete steps thick and
    black, the mean of partial steps (not every worker there yet) dotted grey, the driver's own
    points dashed red. The legend sits right of each panel, outside the curves. The figure and
    its lines are kept between refreshes and only their data changes (a redraw costs tens of
    milliseconds); a new metric or worker lays the figure out again."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.figure: Any = None  # matplotlib Figure, once laid out
        self._layout: tuple | None = None
        self._lines: dict[tuple[str, object], Any] = {}
        self._axes: dict[str, Any] = {}
        self.layout_seconds = 0.0  # what laying the figure out took in the last draw

    def _lay_out(self, snap: Snapshot) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        keys = list(snap.curves)
        ncols = min(COLUMNS, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        panel_width = PANEL_SIZE[0] + LEGEND_WIDTH
        fig = Figure(figsize=(panel_width * ncols, PANEL_SIZE[1] * nrows), dpi=DPI)
        FigureCanvasAgg(fig)
        # fixed margins (in inches, so any grid looks the same): a layout engine costs a third of a draw
        width, height = fig.get_size_inches()
        fig.subplots_adjust(
            left=0.5 / width,
            right=1 - (LEGEND_WIDTH + 0.1) / width,
            top=1 - 0.3 / height,
            bottom=0.45 / height,
            wspace=(LEGEND_WIDTH + 0.5) / PANEL_SIZE[0],
            hspace=0.5,
        )
        self._lines, self._axes = {}, {}
        for index, key in enumerate(keys):
            ax = fig.add_subplot(nrows, ncols, index + 1)
            workers, _ = snap.curves[key]
            for worker in workers:
                colour = worker_colour(worker, len(workers))
                (line,) = ax.plot([], [], color=colour, linewidth=0.9, alpha=0.7, label=f"worker {worker}")
                self._lines[(key, worker)] = line
            (line,) = ax.plot([], [], color="0.45", linewidth=1.6, linestyle=":", label="mean (partial)")
            self._lines[(key, "partial")] = line
            (line,) = ax.plot([], [], color="black", linewidth=2.2, label="mean")
            self._lines[(key, "mean")] = line
            (line,) = ax.plot([], [], color="#cf222e", linewidth=1.4, linestyle="--", label="driver")
            self._lines[(key, "driver")] = line
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            many = len(workers) > LEGEND_WORKERS
            shown = [h for h in ax.get_lines() if not (many and str(h.get_label()).startswith("worker"))]
            if many:
                shown.insert(0, Line2D([], [], color="0.6", linewidth=0.9, label=f"{len(workers)} workers"))
            ax.legend(handles=shown, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
            self._axes[key] = ax
        self.figure = fig

    def draw(self, snap: Snapshot) -> bytes | None:
        """The chart of ``snap`` as PNG bytes, or None when there is nothing to draw yet."""
        if not snap.curves:
            return None
        layout = tuple((key, tuple(workers)) for key, (workers, _) in snap.curves.items())
        self.layout_seconds = 0.0
        if layout != self._layout:
            started = self.clock()
            self._lay_out(snap)
            self._layout = layout
            self.layout_seconds = max(self.clock() - started, 1e-9)
        for key, (workers, mean) in snap.curves.items():
            for worker, points in workers.items():
                self._set(self._lines[(key, worker)], points)
            self._set(self._lines[(key, "mean")], mean)
            self._set(self._lines[(key, "partial")], snap.partial.get(key, []))
            self._set(self._lines[(key, "driver")], snap.driver.get(key, []))
            ax = self._axes[key]
            ax.relim()
            ax.autoscale_view()
        out = io.BytesIO()
        self.figure.savefig(out, format="png", dpi=DPI)
        return out.getvalue()

    @staticmethod
    def _set(line, points) -> None:
        line.set_data([s for s, _ in points], [v for _, v in points])
        line.set_marker("o" if len(points) == 1 else "")


STATUS_COLOURS = {"RUNNING": "#1a7f37", "FINISHED": "#0969da", "FAILED": "#cf222e", "KILLED": "#cf222e"}
#: cell padding: the classic notebook gives table cells none of its own
CELL = "padding:2px 10px;border-bottom:1px solid #d0d7de;text-align:right;white-space:nowrap"
CELL_LEFT = CELL.replace("text-align:right", "text-align:left")


def header_html(snap: Snapshot) -> str:
    """The view's header as HTML: run, status, properties, link, counters and failures."""
    colour = STATUS_COLOURS.get(snap.status, "#6e7781")
    if snap.url:
        link = f' &nbsp;<a href="{html.escape(snap.url)}" target="_blank" rel="noopener">open the run</a>'
    else:
        hint = link_line(snap)
        link = f' &nbsp;<span style="color:#6e7781">{html.escape(hint)}</span>' if hint else ""
    props = properties_line(snap)
    failures = "".join(f'<div style="color:#cf222e">{html.escape(line)}</div>' for line in failure_lines(snap))
    # data-* attributes: the same figures, machine-readable (tests read them from the comm messages)
    return (
        f'<div class="spark-tracking-live" data-run="{html.escape(snap.run_id or "")}" '
        f'data-status="{html.escape(snap.status)}" data-points="{snap.points}" data-refresh="{snap.refresh}" '
        f'data-failures="{len(snap.failures)}">'
        f"<b>{html.escape(headline(snap))}</b>"
        f' <span style="color:{colour}">&#9679;</span>{link}<br>'
        + (f"<span>{html.escape(props)}</span><br>" if props else "")
        + f'<span style="font-family:monospace;font-size:90%" title="{html.escape(counters_help(snap))}">'
        f"{html.escape(counters_line(snap))}</span><br>"
        f'<span style="color:#6e7781;font-size:85%">{html.escape(counters_help(snap))}</span>'
        f"{failures}</div>"
    )


def _html_table(rows: list[list[str]], kind: str, left: int = 1) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} style="{CELL_LEFT if i < left else CELL}">{html.escape(text)}</{tag}>'

    head = "".join(cell("th", i, c) for i, c in enumerate(rows[0]))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows[1:])
    return (
        f'<table class="spark-tracking-{kind}" style="font-family:monospace;font-size:90%;'
        f'border-collapse:collapse;margin:4px 0"><tr>{head}</tr>{body}</table>'
    )


def system_html(snap: Snapshot) -> str:
    """The workers' system-metrics table (a row per worker: CPU, memory, GPU) with the notes
    naming the outlying workers, as HTML; "" without system metrics."""
    if not snap.system:
        return ""
    notes = "".join(f'<div style="color:#9a6700">{html.escape(note)}</div>' for note in snap.system_notes)
    return (
        f'<div class="spark-tracking-system-title" style="margin-top:6px"><b>{html.escape(SYSTEM_TITLE)}</b></div>'
        f"{_html_table(snap.system, 'system')}{notes}"
    )


def table_html(snap: Snapshot) -> str:
    """The metrics table, the workers table and the workers' system metrics as HTML."""
    rows = table_rows(snap)
    system = system_html(snap)
    if len(rows) == 1:
        return system or "<i>no points yet</i>"
    out = _html_table(rows, "metrics")
    workers = worker_rows(snap)
    if len(workers) > 1:
        out += _html_table(workers, "workers", left=2)
    return out + system


def static_html(snap: Snapshot, png: bytes | None) -> str:
    """The whole view as one static HTML block, the chart inlined as a PNG (what a saved or
    exported notebook keeps)."""
    chart = (
        f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="live view chart">'
        if png
        else ""
    )
    return f"{header_html(snap)}{chart}{table_html(snap)}"


def frontend_for_notebook():
    """The notebook frontend: ipywidgets when installed, else the text summary as display output."""
    try:
        return NotebookFrontend()
    except ImportError as exc:
        return DisplayFrontend(str(exc))


class DisplayFrontend:
    """Without ipywidgets: the text summary and the link as one display output, replaced in
    place (``update_display_data``) at every refresh; the chart too when matplotlib is there."""

    live = True

    def __init__(self, reason: str = ""):
        self.reason = reason
        try:
            import matplotlib  # noqa: F401

            self.chart: Chart | None = Chart()
        except ImportError:
            self.chart = None
        self.handle = None
        self._png: bytes | None = None

    @property
    def figure(self):
        """The matplotlib Figure last drawn (None without matplotlib or before the first point)."""
        return self.chart.figure if self.chart is not None else None

    def _bundle(self, snap: Snapshot, final: bool) -> dict:
        if self.chart is not None and final:
            self._png = self.chart.draw(snap) or self._png
        text = format_summary(snap)
        note = f"\n(live chart: {self.reason})" if self.reason and not final else ""
        page = static_html(snap, self._png) if final else f"<pre>{html.escape(text + note)}</pre>"
        return {"text/plain": text + note, "text/html": page}

    def open(self, snap: Snapshot) -> None:
        """Display the summary in the current cell."""
        from IPython.display import display

        self.handle = display(self._bundle(snap, False), raw=True, display_id=True)

    def update(self, snap: Snapshot) -> None:
        """Replace the summary."""
        if self.handle is not None:
            self.handle.update(self._bundle(snap, False), raw=True)

    def finish(self, snap: Snapshot) -> None:
        """The final summary, with the chart when matplotlib is there."""
        if self.handle is not None:
            self.handle.update(self._bundle(snap, True), raw=True)


class NotebookFrontend:
    """The ipywidgets output of a RunDetails view."""

    live = True

    def __init__(self, clock=time.monotonic):
        try:
            import ipywidgets  # type: ignore[import-untyped]
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"RunDetails.show() in a notebook needs ipywidgets and matplotlib ({exc}): "
                'pip install "spark-tracking[notebook]"'
            ) from None
        self.clock = clock
        self.chart = Chart(clock)
        self.header = ipywidgets.HTML()
        self.image = ipywidgets.Image(format="png")
        self.table = ipywidgets.HTML()
        self.box = ipywidgets.VBox([self.header, self.image, self.table])
        self.handle = None
        self._png: bytes | None = None
        self._next_draw = 0.0

    @property
    def figure(self):
        """The matplotlib Figure last drawn (None before the first point)."""
        return self.chart.figure

    def open(self, snap: Snapshot) -> None:
        """Display the widgets in the current cell, drawn from ``snap``."""
        from IPython.display import display

        self.update(snap)
        self.handle = display(self.box, display_id=True)

    def update(self, snap: Snapshot, final: bool = False) -> None:
        """Redraw from ``snap``; the chart at most as often as keeps its share of the time (always when ``final``)."""
        now = self.clock()
        if final or now >= self._next_draw:
            png = self.chart.draw(snap)
            # a draw that laid the figure out (and paid matplotlib's first text rendering) says
            # nothing of what the next redraw costs: no wait after it
            cost = 0.0 if self.chart.layout_seconds else self.clock() - now
            self._next_draw = now + min(cost / CHART_SHARE, CHART_MAX_WAIT)
            if png is not None and png != self._png:
                self._png = self.image.value = png
        self.table.value = table_html(snap)
        self.header.value = header_html(snap)  # last: its refresh number marks a complete update

    def finish(self, snap: Snapshot) -> None:
        """Draw ``snap`` a last time, then replace the widgets with a static copy a saved notebook keeps."""
        self.update(snap, final=True)
        if self.handle is None:
            return
        self.handle.update({"text/html": static_html(snap, self._png), "text/plain": format_summary(snap)}, raw=True)
