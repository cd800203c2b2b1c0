"""The notebook view's chart and tables, drawn from a LiveRun (matplotlib's Agg canvas, no kernel)."""

from __future__ import annotations

import pytest

from spark_tracking.live.model import LiveRun
from spark_tracking.live.notebook import Chart, NotebookFrontend, table_html, worker_colour

pytest.importorskip("matplotlib")
pytest.importorskip("ipywidgets")


def _run(workers: int, steps: int) -> LiveRun:
    run = LiveRun()
    for w in range(workers):
        run.take([0, w, 0, w, None, 0], [("loss", 1.0 / (s + 1) + w, 1_700_000_000_000, s) for s in range(steps)])
    return run


def test_a_slow_first_layout_does_not_freeze_the_chart(monkeypatch):
    """The first draw lays the figure out (and pays matplotlib's first text rendering): up to a
    second on a busy driver. The next chart must still follow at the next refresh."""
    now = [100.0]
    lay_out = Chart._lay_out

    def slow_lay_out(self, snap):
        now[0] += 0.8  # what the first layout cost on a busy driver
        lay_out(self, snap)

    monkeypatch.setattr(Chart, "_lay_out", slow_lay_out)
    frontend = NotebookFrontend(clock=lambda: now[0])
    run = _run(2, 5)
    frontend.update(run.snapshot(run_id="r"))
    first = frontend._png
    run.take([0, 0, 0, 0, None, 0], [("loss", 0.1, 1_700_000_000_000, 5)])
    now[0] += 1.0  # the next refresh
    frontend.update(run.snapshot(run_id="r"))
    assert frontend._png is not first
    assert [len(line.get_xdata()) for line in frontend.figure.axes[0].get_lines()[:2]] == [6, 5]


def test_colours_stay_distinct_past_ten_workers_and_the_legend_leaves_the_curves_alone():
    colours = [tuple(round(c, 3) for c in worker_colour(w, 24)[:3]) for w in range(24)]
    assert len(set(colours)) == 24
    assert len({tuple(worker_colour(w, 16)) for w in range(16)}) == 16
    chart = Chart()
    chart.draw(_run(16, 20).snapshot(run_id="r"))
    (ax,) = chart.figure.axes
    renderer = chart.figure.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # right of the axes, never over a curve
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["16 workers", "mean (partial)", "mean", "driver"]


def test_table_cells_are_padded_for_the_classic_notebook():
    page = table_html(_run(2, 3).snapshot(run_id="r"))
    assert page.count('<td style="padding:2px 10px;') == page.count("<td")
    assert 'class="spark-tracking-workers"' in page
