"""``spark-tracking show --plot``: the curves of one run, or of several overlaid
(``--compare``), as a matplotlib figure saved to a PNG. Built from plain data
(:class:`~spark_tracking.show_data.RunData`); matplotlib and numpy are imported on use.
"""

from __future__ import annotations

import math
import os

from .layout import group_metrics
from .show_data import RunData

#: inches per panel; at 100 dpi a panel is 640 x 400 pixels
PANEL_SIZE = (6.4, 4.0)
PLOT_DPI = 100
PLOT_COLUMNS = 2


def plot_runs(runs: list[RunData], path: str | os.PathLike | None = None):
    """One panel per metric (per-worker series grouped under their key): workers thin, the
    mean (or the plain metric) thick; several runs are overlaid, one colour each. Saves a PNG
    of ``PLOT_COLUMNS`` panels per row, each ``PANEL_SIZE`` inches at ``PLOT_DPI`` when
    ``path`` is given (its Description says the panel count). Returns the Figure."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bases: list[str] = sorted({b for d in runs for b in group_metrics(d.metrics)})
    if not bases:
        raise ValueError(
            f"run {runs[0].run_id} has no metrics to plot" if len(runs) == 1 else "none of the runs has metrics to plot"
        )
    ncols = min(PLOT_COLUMNS, len(bases))
    nrows = math.ceil(len(bases) / ncols)
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    palette = [f"C{i}" for i in range(10)]
    for index, base in enumerate(bases):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        for r, data in enumerate(runs):
            agg, workers = group_metrics(data.metrics).get(base, (None, []))
            prefix = f"{data.label} " if len(runs) > 1 else ""
            for w, (worker, key) in enumerate(workers):
                color = palette[r % 10] if len(runs) > 1 else palette[w % 10]
                steps, values = zip(*data.metrics[key])
                ax.plot(
                    steps,
                    values,
                    color=color,
                    linewidth=0.9,
                    alpha=0.6,
                    linestyle="--" if len(runs) > 1 else "-",
                    marker="." if len(steps) == 1 else None,
                    label=f"{prefix}worker {worker}",
                )
            if agg is not None:
                steps, values = zip(*data.metrics[agg])
                color = palette[r % 10] if len(runs) > 1 else "black"
                ax.plot(
                    steps,
                    values,
                    color=color,
                    linewidth=2.2,
                    marker="o" if len(steps) == 1 else None,
                    label=f"{prefix}{'mean' if workers else base}".strip(),
                )
        drawn = [float(v) for line in ax.get_lines() for v in np.asarray(line.get_ydata(), dtype=float)]
        finite = [v for v in drawn if not math.isnan(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")  # losses spanning orders of magnitude
        ax.set_title(base)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if len(ax.get_lines()) <= 12:
            ax.legend(fontsize="small")
    title = runs[0].label if len(runs) == 1 else "compare: " + ", ".join(d.label for d in runs)
    fig.suptitle(title)
    if path is not None:
        fig.savefig(
            path,
            format="png",
            dpi=PLOT_DPI,
            metadata={"Description": f"spark-tracking show: {len(bases)} panels: {', '.join(bases)}"},
        )
    return fig
