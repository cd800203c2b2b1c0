"""The text ``spark-tracking show`` prints, built from plain data (:class:`~spark_tracking.show_data.RunData`).

The metrics table has the columns AML studio offers (last, min, max, count), one row for the
aggregate and one per worker (a series forwarded from several Spark tasks is stored per worker
plus their mean, see :mod:`spark_tracking.layout`; the rows are grouped under the metric's key).
Workers' system metrics (``system/<name>/worker_<w>``) get a table of their own, one row per
worker (CPU, memory, GPU), naming the busiest CPU, the most memory and the least-used GPU; the
live view (:mod:`spark_tracking.live`) shows the same table. Then params, tags, texts, tables and
images (:func:`format_report`), and the last values of several runs side by side
(:func:`format_comparison`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .layout import SYSTEM_PREFIX, group_metrics, split_metric_key
from .show_data import RunData

_HIDDEN_TAG_PREFIXES = ("mlflow.", "spark_tracking.", "aml.")


def summarize(points: list[tuple[int, float]]) -> tuple[float, float, float, int]:
    """(last, min, max, count) of a series; NaN points are counted but not min/max."""
    values = [v for _, v in points]
    finite = [v for v in values if not math.isnan(v)]
    last = values[-1] if values else math.nan
    return (last, min(finite) if finite else math.nan, max(finite) if finite else math.nan, len(values))


def _num(value: float) -> str:
    return format(value, ".6g")


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def metric_rows(metrics: dict[str, list[tuple[int, float]]]) -> list[list[str]]:
    """Rows of the metrics table: metric, worker ("mean" for the aggregate, "" for a plain
    metric, else the worker number), last, min, max, count."""
    rows = []
    for base, (agg, workers) in group_metrics(metrics).items():
        first = True
        if agg is not None:
            rows.append(
                [base, "mean" if workers else "", *map(_num, summarize(metrics[agg])[:3]), str(len(metrics[agg]))]
            )
            first = False
        for worker, key in workers:
            rows.append(
                [base if first else "", str(worker), *map(_num, summarize(metrics[key])[:3]), str(len(metrics[key]))]
            )
            first = False
    return rows


def format_metrics(metrics: dict[str, list[tuple[int, float]]]) -> list[str]:
    """The metrics table (see :func:`metric_rows`) as lines of text."""
    if not metrics:
        return ["no metrics"]
    return _table(["metric", "worker", "last", "min", "max", "count"], metric_rows(metrics), right={2, 3, 4, 5})


#: the columns of the system-metrics table: title, MLflow's name (a regex for GPUs), how a series reads
_SYSTEM_COLUMNS = (
    ("cpu % mean", "cpu_utilization_percentage", "mean"),
    ("cpu % last", "cpu_utilization_percentage", "last"),
    ("memory MB max", "system_memory_usage_megabytes", "max"),
    ("gpu % mean", "gpu_utilization_percentage", "mean"),
    ("gpu memory MB max", "gpu_memory_usage_megabytes", "max"),
)


def _system_name(name: str) -> str:
    """``gpu_<i>_<rest>`` -> ``gpu_<rest>`` (a worker's GPUs go in one column), else ``name``."""
    if name.startswith("gpu_"):
        index, _, rest = name[4:].partition("_")
        if index.isdigit():
            return "gpu_" + rest
    return name


class SeriesSummary:
    """What the system-metrics table reads of one series: how many values, their sum, the last
    and the highest (NaN values skipped). Built from a whole series (:meth:`of`) or one value at
    a time (:meth:`add`, the live view's bounded state: four numbers per series)."""

    __slots__ = ("count", "high", "last", "total")

    def __init__(self):
        self.count, self.total, self.last, self.high = 0, 0.0, math.nan, -math.inf

    def add(self, value: float) -> None:
        """Take the series' next value (NaN is skipped)."""
        if math.isnan(value):
            return
        self.count += 1
        self.total += value
        self.last = value
        self.high = max(self.high, value)

    @classmethod
    def of(cls, points: list[tuple[int, float]]) -> SeriesSummary:
        """The summary of a whole series of ``(step, value)``."""
        summary = cls()
        for _, value in points:
            summary.add(value)
        return summary


def system_rows(
    metrics: Mapping[str, list[tuple[int, float]] | SeriesSummary],
) -> tuple[list[list[str]], list[str]]:
    """Rows of the system-metrics table, one per worker (``driver``: MLflow's own series of the
    driver's machine, plain ``system/<name>``), and notes naming the outlying workers: the
    busiest CPU, the most memory, the least-used GPU (a starved GPU, or a straggler).
    ``metrics``: key -> its points, or their :class:`SeriesSummary` (other keys are ignored)."""
    by_worker: dict[str, dict[str, list[SeriesSummary]]] = {}
    for key, series in metrics.items():
        if not key.startswith(SYSTEM_PREFIX):
            continue
        base, worker = split_metric_key(key)
        who = "driver" if worker is None else str(worker)
        name = _system_name(base[len(SYSTEM_PREFIX) :])
        summary = series if isinstance(series, SeriesSummary) else SeriesSummary.of(series)
        if summary.count:
            by_worker.setdefault(who, {}).setdefault(name, []).append(summary)
    if not by_worker:
        return [], []

    def read(series: list[SeriesSummary], how: str) -> float:
        if how == "mean":  # over time and over the worker's GPUs
            return sum(s.total / s.count for s in series) / len(series)
        if how == "last":
            return sum(s.last for s in series)
        return max(s.high for s in series)

    order = sorted(by_worker, key=lambda w: (w != "driver", int(w) if w.isdigit() else -1))
    columns = [c for c in _SYSTEM_COLUMNS if any(c[1] in by_worker[w] for w in order)]
    table: dict[str, dict[str, float]] = {
        w: {title: read(by_worker[w][name], how) for title, name, how in columns if name in by_worker[w]} for w in order
    }
    rows = [[w] + [_num(table[w][t]) if t in table[w] else "-" for t, _, _ in columns] for w in order]
    workers = [w for w in order if w != "driver"]
    notes = []
    if len(workers) > 1:
        for title, pick, what in (
            ("cpu % mean", max, "busiest CPU"),
            ("memory MB max", max, "most memory"),
            ("gpu % mean", min, "least-used GPU"),
        ):
            known = [w for w in workers if title in table[w]]
            if len(known) > 1:
                w = pick(known, key=lambda w: table[w][title])
                notes.append(f"{what}: worker {w} ({_num(table[w][title])})")
    return [["worker"] + [t for t, _, _ in columns], *rows], notes


def format_system_metrics(metrics: dict[str, list[tuple[int, float]]]) -> list[str]:
    """The system-metrics table (:func:`system_rows`) as lines of text; [] without system metrics."""
    rows, notes = system_rows(metrics)
    if not rows:
        return []
    header, *body = rows
    return ["", "system metrics per worker", *_table(header, body, right=set(range(1, len(header)))), *notes]


def _pairs(title: str, items: list[tuple[str, str]]) -> list[str]:
    if not items:
        return []
    width = max(len(k) for k, _ in items)
    return ["", title] + [f"  {k.ljust(width)}  {v}".rstrip() for k, v in items]


def _rows(table: dict) -> str:
    n = len(next(iter(table.values()), []))
    return f"{n} row" if n == 1 else f"{n} rows"


def format_report(data: RunData, all_tags: bool = False) -> str:
    """The text ``spark-tracking show`` prints for one run."""
    lines = [f"run {data.run_id}  name {data.name or '-'}  status {data.status}  experiment {data.experiment}"]
    lines.append("")
    lines += format_metrics({k: v for k, v in data.metrics.items() if not k.startswith(SYSTEM_PREFIX)})
    lines += format_system_metrics(data.metrics)
    lines += _pairs("params", sorted(data.params.items()))
    tags = sorted((k, v) for k, v in data.tags.items() if all_tags or not k.startswith(_HIDDEN_TAG_PREFIXES))
    lines += _pairs("tags", tags)
    lines += _pairs(
        "text",
        [(k, v[-1] + (f"  ({len(v)} values)" if len(v) > 1 else "")) for k, v in sorted(data.texts.items()) if v],
    )
    lines += _pairs("tables", [(k, f"{_rows(t)}: {', '.join(t)}") for k, t in sorted(data.tables.items())])
    lines += _pairs("images", [(k, ", ".join(v)) for k, v in sorted(data.images.items())])
    return "\n".join(lines) + "\n"


def format_comparison(runs: list[RunData]) -> str:
    """Last value of every metric (the aggregate, or the plain metric) in each run."""
    bases: list[str] = []
    for data in runs:
        for base in group_metrics(data.metrics):
            if base not in bases:
                bases.append(base)
    rows = []
    for base in sorted(bases):
        row = [base]
        for data in runs:
            agg, _ = group_metrics(data.metrics).get(base, (None, []))
            row.append(_num(summarize(data.metrics[agg])[0]) if agg is not None else "-")
        rows.append(row)
    header = ["metric (last)", *(d.label for d in runs)]
    return "\n".join(["comparison", *_table(header, rows, right=set(range(1, len(runs) + 1)))]) + "\n"
