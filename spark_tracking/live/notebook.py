"""The live view in a notebook: ipywidgets for the live output, matplotlib for the chart.

One ``VBox`` in the cell's output: a header (``HTML``: run, status, link, counters), the chart
(``Image``: a PNG drawn with matplotlib's Agg canvas, no pyplot, so nothing else in the
notebook is touched) and the latest-values table (``HTML``). Header and table change at every
refresh; the chart as often as ``CHART_SHARE`` allows. Updating a widget's value sends
one small comm message from the view's thread; the frontend redraws that output while other
cells run (as ``tqdm.notebook`` progress bars do).

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
from .text import counters_line, format_summary, headline, table_rows

#: inches per panel at DPI: 384 x 240 pixels
PANEL_SIZE = (4.8, 3.0)
DPI = 80
COLUMNS = 2
#: at most this share of the driver's time goes to drawing the chart: a draw that took d seconds
#: is followed by the next one no sooner than d / CHART_SHARE later (a draw takes about 0.1 s
#: on an idle driver, so the chart follows about every second; a busy driver gets fewer chart
#: updates rather than a slower relay)
CHART_SHARE = 0.1


class Chart:
    """One panel per metric: a thin curve per worker, the mean thick and black. The figure and
    its lines are kept between refreshes and only their data changes (a redraw costs tens of
    milliseconds); a new metric or worker lays the figure out again."""

    def __init__(self):
        self.figure: Any = None  # matplotlib Figure, once laid out
        self._layout: tuple | None = None
        self._lines: dict[tuple[str, object], Any] = {}
        self._axes: dict[str, Any] = {}

    def _lay_out(self, snap: Snapshot) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        keys = list(snap.curves)
        ncols = min(COLUMNS, len(keys))
        nrows = math.ceil(len(keys) / ncols)
        fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), dpi=DPI)
        FigureCanvasAgg(fig)
        # fixed margins (in inches, so any grid looks the same): a layout engine costs a third of a draw
        width, height = fig.get_size_inches()
        fig.subplots_adjust(
            left=0.5 / width,
            right=1 - 0.15 / width,
            top=1 - 0.3 / height,
            bottom=0.45 / height,
            wspace=0.25,
            hspace=0.5,
        )
        self._lines, self._axes = {}, {}
        for index, key in enumerate(keys):
            ax = fig.add_subplot(nrows, ncols, index + 1)
            workers, _ = snap.curves[key]
            for worker in workers:
                (line,) = ax.plot([], [], color=f"C{worker % 10}", linewidth=0.9, alpha=0.6, label=f"worker {worker}")
                self._lines[(key, worker)] = line
            (line,) = ax.plot([], [], color="black", linewidth=2.2, label="mean")
            self._lines[(key, "mean")] = line
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if len(workers) < 12:
                ax.legend(fontsize="small", loc="upper right")
            self._axes[key] = ax
        self.figure = fig

    def draw(self, snap: Snapshot) -> bytes | None:
        """The chart of ``snap`` as PNG bytes, or None when there is nothing to draw yet."""
        if not snap.curves:
            return None
        layout = tuple((key, tuple(workers)) for key, (workers, _) in snap.curves.items())
        if layout != self._layout:
            self._lay_out(snap)
            self._layout = layout
        for key, (workers, mean) in snap.curves.items():
            for worker, points in workers.items():
                self._set(self._lines[(key, worker)], points)
            self._set(self._lines[(key, "mean")], mean)
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


def header_html(snap: Snapshot) -> str:
    """The view's header as HTML: run, status, link and forwarding counters."""
    colour = {"RUNNING": "#1a7f37", "FINISHED": "#0969da", "FAILED": "#cf222e", "KILLED": "#cf222e"}.get(
        snap.status, "#6e7781"
    )
    link = (
        f' &nbsp;<a href="{html.escape(snap.url)}" target="_blank" rel="noopener">open the run</a>' if snap.url else ""
    )
    # data-* attributes: the same figures, machine-readable (tests read them from the comm messages)
    return (
        f'<div class="spark-tracking-live" data-run="{html.escape(snap.run_id or "")}" '
        f'data-status="{html.escape(snap.status)}" data-points="{snap.points}" data-refresh="{snap.refresh}">'
        f"<b>{html.escape(headline(snap))}</b>"
        f' <span style="color:{colour}">&#9679;</span>{link}<br>'
        f'<span style="font-family:monospace;font-size:90%">{html.escape(counters_line(snap))}</span></div>'
    )


def table_html(snap: Snapshot) -> str:
    """The latest-values table as HTML."""
    rows = table_rows(snap)
    if len(rows) == 1:
        return "<i>no points from tasks yet</i>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f'<table style="font-family:monospace;font-size:90%"><tr>{head}</tr>{body}</table>'


class NotebookFrontend:
    """The ipywidgets output of a RunDetails view."""

    live = True

    def __init__(self):
        try:
            import ipywidgets  # type: ignore[import-untyped]
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"RunDetails.show() in a notebook needs ipywidgets and matplotlib ({exc}): "
                'pip install "spark-tracking[notebook]"'
            ) from None
        self.chart = Chart()
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
        now = time.monotonic()
        if final or now >= self._next_draw:
            png = self.chart.draw(snap)
            self._next_draw = now + (time.monotonic() - now) / CHART_SHARE
            if png is not None and png != self._png:
                self._png = self.image.value = png
        self.table.value = table_html(snap)
        self.header.value = header_html(snap)  # last: its refresh number marks a complete update

    def finish(self, snap: Snapshot) -> None:
        """Draw ``snap`` a last time, then replace the widgets with a static copy a saved notebook keeps."""
        self.update(snap, final=True)
        if self.handle is None:
            return
        chart = (
            f'<img src="data:image/png;base64,{base64.b64encode(self._png).decode("ascii")}" alt="live view chart">'
            if self._png
            else ""
        )
        static = {"text/html": f"{header_html(snap)}{chart}{table_html(snap)}", "text/plain": format_summary(snap)}
        self.handle.update(static, raw=True)
