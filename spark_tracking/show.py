"""``spark-tracking show RUN_ID`` and ``spark-tracking ui``: look at results from a terminal.

``show`` prints a run's metrics with the columns AML studio offers (last, min, max, count),
one row for the aggregate and one per worker (a series forwarded from several Spark tasks is
stored per worker plus their mean, see :mod:`spark_tracking.layout`; ``show`` groups them under
the metric's key). Workers' system metrics (``system/<name>/worker_<w>``) get a table of their
own, one row per worker (CPU, memory, GPU), naming the busiest CPU, the most memory and the
least-used GPU. Then params, tags (system tags ``mlflow.*``,
``spark_tracking.*`` and ``aml.*`` only with ``--all-tags``), texts, tables and images logged
with the AML vocabulary (``spark_tracking.Run``). ``--plot out.png`` draws one panel per
metric: each worker thin, the mean thick; ``--compare RUN_ID...`` overlays other runs (one
colour per run) and adds a table of their last values.

``ui`` runs ``mlflow server`` on the store, bound to 127.0.0.1 unless told otherwise, prints
its URL and stops it on Ctrl-C / SIGTERM.

Store: ``--tracking-uri`` (show) / ``--store`` (ui) > the configured tracking URI
(``SPARK_TRACKING_TRACKING_URI``, Spark conf, config file; see ``spark-tracking settings``)
> the embedded store.

Data loading (``load_run``, through :class:`~spark_tracking.store.RunReader`) is the only part
that talks to the store; the table text and the figure are built from plain data by
``format_report`` / ``format_comparison`` / ``plot_runs``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from .layout import SYSTEM_PREFIX, group_metrics, split_metric_key

logger = logging.getLogger(__name__)

_HIDDEN_TAG_PREFIXES = ("mlflow.", "spark_tracking.", "aml.")
#: inches per panel; at 100 dpi a panel is 640 x 400 pixels
PANEL_SIZE = (6.4, 4.0)
PLOT_DPI = 100
PLOT_COLUMNS = 2


# -- data --------------------------------------------------------------------------------------


@dataclass
class RunData:
    """What ``show`` needs of a run, as plain data."""

    run_id: str
    name: str = ""
    status: str = ""
    experiment: str = ""
    #: metric key -> [(step, value)] in step order (ties by timestamp)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: text name -> values (``run.log(name, "text")``)
    texts: dict[str, list[str]] = field(default_factory=dict)
    #: table name -> {column: [values]}
    tables: dict[str, dict[str, list]] = field(default_factory=dict)
    #: image name -> artifact paths (the driver's, then the tasks')
    images: dict[str, list[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The run's name and short id, for legends and headers."""
        return f"{self.name} ({self.run_id[:8]})" if self.name else self.run_id[:8]


def load_run(client, run_id: str) -> RunData:
    """Read a run from the store (the one remote boundary of this module)."""
    from .store import RunReader

    reader = RunReader(client, run_id)
    run = reader.get_run()
    experiment = client.get_experiment(run.info.experiment_id)
    return RunData(
        run_id=run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        experiment=experiment.name if experiment else run.info.experiment_id,
        metrics=reader.metrics(run),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        texts=reader.texts(run),
        tables=reader.tables(),
        images=reader.images(),
    )


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


# -- plot --------------------------------------------------------------------------------------


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


# -- commands ----------------------------------------------------------------------------------


def _config():
    """This process's configuration (configure() ran) or the resolved one."""
    from .session import active_config

    return active_config()


def _resolved_uri(explicit: str | None) -> str:
    if explicit:
        return explicit
    from .session import configure, current_tracking_uri

    if current_tracking_uri() is None:
        configure()
    return current_tracking_uri() or _config().effective_tracking_uri


def _show(args) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from .config import ConfigError

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tables are read as artifacts
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        print(f"error: --plot {args.plot!r}: the output file must end in .png", file=sys.stderr)
        return 2
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        print(
            f"error: --plot {args.plot!r}: folder {os.path.dirname(os.path.abspath(args.plot))!r} does not exist",
            file=sys.stderr,
        )
        return 2
    try:
        uri = _resolved_uri(args.tracking_uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = MlflowClient(uri)
    runs = []
    for run_id in [args.run_id, *args.compare]:
        try:
            runs.append(load_run(client, run_id))
        except MlflowException as exc:
            print(
                f"error: run {run_id!r} not found in {uri}: {exc.message}. "
                "List runs with mlflow.search_runs() or open `spark-tracking ui`.",
                file=sys.stderr,
            )
            return 1
    print("\n\n".join(format_report(d, all_tags=args.all_tags).rstrip("\n") for d in runs))
    if len(runs) > 1:
        print()
        print(format_comparison(runs), end="")
    if args.plot is not None:
        try:
            fig = plot_runs(runs, args.plot)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"\nplot: {args.plot} ({len(fig.axes)} panels)")
    return 0


class UiServer:
    """``mlflow server`` on a store, in its own process group; ``stop()`` ends the group."""

    def __init__(
        self, store_uri: str, host: str = "127.0.0.1", port: int = 5000, artifact_root: str | None = None, log=None
    ):
        self.store_uri, self.host, self.port, self.artifact_root = store_uri, host, port, artifact_root
        self.log = log  # where the server's output goes (a file object); None: inherited
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Where the server answers: ``http://<host>:<port>``."""
        return f"http://{self.host if ':' not in self.host else '[' + self.host + ']'}:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> UiServer:
        """Start the server and wait until /health answers (raises with the reason if not)."""
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.store_uri,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.artifact_root:
            cmd += ["--default-artifact-root", self.artifact_root]
        env = dict(os.environ)
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no background job runners
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log is not None else None,
        )
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        health = f"http://127.0.0.1:{self.port}/health" if self.host in ("0.0.0.0", "::") else self.url + "/health"
        proc = self._started()
        waiter = threading.Event()
        deadline = timeout / 0.2
        for _ in range(int(deadline)):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode} before answering "
                    f"{health} (is port {self.port} in use? try --port)"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                waiter.wait(0.2)  # readiness poll of the server process we started
        raise RuntimeError(f"mlflow server did not answer {health} within {timeout:.0f}s")

    def _started(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError("the MLflow UI server was not started; call start() first")
        return self.proc

    def wait(self) -> int:
        """Wait for the server to exit; its exit code."""
        return self._started().wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()


_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file")


def ui_store(explicit: str | None = None) -> tuple[str, str | None]:
    """(store URI, artifact root) the UI serves: ``--store`` > the configured tracking URI
    when it is a database or file store > the embedded store. A remote configured store
    (http, azureml, databricks) is refused: it has its own UI."""
    if explicit:
        return explicit, None
    cfg = _config()
    uri = cfg.effective_tracking_uri
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if "://" in uri else "file"
    if uri == cfg.embedded_store_uri:
        return uri, cfg.embedded_artifact_root
    if scheme in _DB_SCHEMES:
        return uri, None
    raise ValueError(
        f"the configured tracking URI {uri!r} ({cfg.sources.get('tracking_uri', 'default')}) is a remote "
        "store with its own UI (run.get_portal_url() gives the address); pass --store URI to serve "
        "a local store"
    )


def _ui(args) -> int:
    from .config import ConfigError

    try:
        store, artifacts = ui_store(args.store)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "spark_tracking: the MLflow UI on %s has no authentication; anyone who can reach "
            "this host can read and change the store",
            args.host,
        )
    # the server logs to stderr: stdout carries only the URL line
    server = UiServer(store, args.host, args.port, artifacts, log=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.start()
        print(f"MLflow UI: {server.url}  (store {store}; Ctrl-C stops it)", flush=True)
        return 0 if server.wait() in (0, -signal.SIGTERM) else 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def register(subparsers) -> None:
    """Add ``show`` and ``ui`` to the ``spark-tracking`` command."""
    show = subparsers.add_parser(
        "show",
        help="a run's metrics (last/min/max/count per worker and aggregate), params, tags",
        description="Print a run's metrics (per worker and their mean), params, tags, texts, tables "
        "and images; --plot draws the curves, --compare overlays other runs.",
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--compare", nargs="+", default=[], metavar="RUN_ID", help="runs to overlay")
    show.add_argument("--plot", metavar="OUT.png", help="write the curves to this PNG file")
    show.add_argument("--tracking-uri", help="the store (default: the configured one)")
    show.add_argument("--all-tags", action="store_true", help="include system tags (mlflow.*, ...)")
    show.set_defaults(func=_show)
    ui = subparsers.add_parser(
        "ui",
        help="serve the MLflow UI on the local store (127.0.0.1)",
        description="Run the MLflow UI on the embedded (or configured local) store; prints its URL.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--store", help="store URI to serve (default: the configured local store)")
    ui.set_defaults(func=_ui)
