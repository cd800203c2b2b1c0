"""The live view's cost to forwarding, with the view off and on, side by side in one run.

The view lives on the driver only: a log call inside a task never reaches it. What it could
slow is the driver's forwarding path, so that is what is measured, in-process with the real
relay and sink on a null store (what the store costs is the same either way):

  1. per-call cost of ``Sink.submit`` (where the sink notifies observers), one point per call;
  2. relay throughput: 512,000 points from 4 concurrent task connections in frames of 500;
  3. chart latency: from a task's log call to the chart (and the table) that shows the point,
     with real Spark (``local[4]``), forwarding to a SQLite store, 4 workers x 60 steps.

"On" is a ``RunDetails`` view of the run, refreshing as in a notebook (soon after points arrive), drawing
its matplotlib chart every refresh (on its own thread, in this process: its CPU and GIL time
count against forwarding). Off and on alternate, ``--rounds`` times each; medians are reported.
The report goes to stdout and to its own section of benchmarks/results.md.

    .ci/setup && .venv/bin/python benchmarks/live_view.py [--rounds 5] [--latency-only]

The latency is measured up to the moment the view hands the new chart to its widget (the
kernel then sends it as one comm message; the browser's decoding of a PNG of this size takes
a few milliseconds more, not counted).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "tests"))

import relay  # noqa: E402  (benchmarks/relay.py)
from run import write_section  # noqa: E402

SECTION = "live_view"
LATENCY_SECTION = "live_view_latency"


def _recording_frontend():
    """The notebook frontend minus the notebook, recording when each chart and table was
    handed over and which step of each worker it showed."""
    from spark_tracking.live.notebook import NotebookFrontend

    class Recording(NotebookFrontend):
        def __init__(self):
            super().__init__()
            self.charts: list[tuple[float, dict]] = []
            self.tables: list[tuple[float, dict]] = []

        def open(self, snap):
            self.update(snap)

        def update(self, snap, final=False):
            before = self._png
            super().update(snap, final)
            now = time.time()
            workers, _ = snap.curves.get("loss", ({}, []))
            drawn = {w: points[-1][0] for w, points in workers.items() if points}
            latest = {w.worker: w.step for w in snap.workers if w.step is not None}
            if self._png is not before:
                self.charts.append((now, drawn))
            self.tables.append((now, latest))

    return Recording()


def _latency_task(rows, steps: int, step_seconds: float):
    import time as t

    import mlflow
    from pyspark import TaskContext

    partition = TaskContext.get().partitionId()
    for step in range(steps):
        mlflow.log_metric("loss", 1.0 / (step + 1) + partition, step=step)
        mlflow.log_metric("grad_norm", 0.1 * partition + 1.0 / (step + 2), step=step)
        t.sleep(step_seconds)  # the rest of a training step
    yield partition


def chart_latency(workers: int = 4, steps: int = 60, step_seconds: float = 0.1) -> dict:
    """Seconds from each task log call of ``loss`` to the first chart, and table, showing it."""
    from pathlib import Path

    import mlflow
    from conftest import spark_builder

    import spark_tracking
    from spark_tracking import layout
    from spark_tracking.forwarding.driver import observers
    from spark_tracking.live import RunDetails

    arrived: dict = {}  # (worker, step) of `loss` -> when the driver's sink took it in

    def arrival(sub):  # an observer like the view's: on the relay's thread, O(points)
        if sub.kind == "points":
            now = time.time()
            for key, _v, _ts, step in sub.metrics:
                if key == "loss":
                    arrived.setdefault((sub.worker[1], step), now)

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="spark-tracking-live-latency-"))
    store = f"sqlite:///{root / 'store.db'}"
    spark_tracking.configure(tracking_uri=store, home=str(root / "home"))
    spark = (
        spark_builder(f"local[{workers}]", "spark-tracking-live-latency")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    try:
        spark.sparkContext.parallelize(range(workers), workers).collect()  # start the Python workers
        with mlflow.start_run(run_name="latency") as run:
            view = RunDetails(run, status_interval=3600)
            frontend = _recording_frontend()
            observers.add(arrival)
            view._start(frontend)
            spark.sparkContext.parallelize(range(workers), workers).mapPartitions(
                lambda rows: _latency_task(rows, steps, step_seconds)
            ).collect()
            spark_tracking.flush()
            view.refresh()
            view.stop()
            observers.remove(arrival)
        client = mlflow.MlflowClient(store)
        logged = [
            (w, m.step, m.timestamp / 1000)
            for w in range(workers)
            for m in client.get_metric_history(run.info.run_id, layout.worker_metric_key("loss", w))
        ]
    finally:
        spark.stop()

    def delays_by_point(records):
        out = []
        for w, step, at in logged:
            shown = next((t for t, drawn in records if drawn.get(w, -1) >= step), None)
            out.append(max(0.0, shown - at) if shown is not None else float("nan"))
        return out

    def delays(records):
        return sorted(d for d in delays_by_point(records) if d == d)

    def pct(values, q):
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    chart, table = delays(frontend.charts), delays(frontend.tables)
    driver = sorted(arrived[(w, step)] - at for w, step, at in logged if (w, step) in arrived)
    own = sorted(c - t for c, t in zip(delays_by_point(frontend.charts), delays_by_point(frontend.tables)))
    return {
        "own": (pct(own, 0.5), pct(own, 0.95)),
        "load": (load_before, os.getloadavg()[0]),
        "driver": (pct(driver, 0.5), pct(driver, 0.95), len(driver)),
        "points": len(logged),
        "chart": (pct(chart, 0.5), pct(chart, 0.95), len(chart)),
        "table": (pct(table, 0.5), pct(table, 0.95), len(table)),
        "draws": len(frontend.charts),
        "refreshes": len(frontend.tables),
    }


def latency_report(result: dict, workers: int, steps: int) -> str:
    from spark_tracking.live.details import MIN_REFRESH_GAP

    c50, c95, cn = result["chart"]
    t50, t95, tn = result["table"]
    return "\n".join(
        [
            "## Live view latency (benchmarks/live_view.py)",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores: real Spark "
            f"(local[{workers}]), {workers} workers x {steps} steps of `loss` and `grad_norm`, forwarded to a "
            "SQLite store; a RunDetails view (refreshing when points arrive, at most every "
            f"{MIN_REFRESH_GAP:g} s, else once a second). From each task's log call of `loss` to the driver's sink "
            "taking it in, and to the first chart (and table) handed to the widget that shows it.",
            "",
            "| output | p50 | p95 | points |",
            "|---|---:|---:|---:|",
            f"| driver's sink (task → driver) | {result['driver'][0]:.2f} s | {result['driver'][1]:.2f} s | "
            f"{result['driver'][2]:,} of {result['points']:,} |",
            f"| chart | {c50:.2f} s | {c95:.2f} s | {cn:,} of {result['points']:,} |",
            f"| table | {t50:.2f} s | {t95:.2f} s | {tn:,} of {result['points']:,} |",
            "",
            f"The chart was drawn {result['draws']} times in {result['refreshes']} refreshes (goal: chart p95 ≤ 1.5 s). "
            f"The table shows a point at the first refresh after the driver received it; what the chart adds "
            f"beyond that (its draw and its wait between draws): p50 {result['own'][0]:.2f} s, "
            f"p95 {result['own'][1]:.2f} s. Load average (1 min) before the run {result['load'][0]:.1f}, "
            f"after it {result['load'][1]:.1f}.",
        ]
    )


def start_view(store: str, refresh_interval: float = 1.0):
    """A RunDetails view of the benchmark's run ("run") with the notebook frontend's work (header,
    table, chart within its CPU share), minus the notebook: nothing is displayed."""
    from spark_tracking.live import RunDetails
    from spark_tracking.live.notebook import NotebookFrontend

    class Headless(NotebookFrontend):
        draws = 0

        def open(self, snap):
            self.update(snap)

        def update(self, snap, final=False):
            before = self._png
            super().update(snap, final)
            Headless.draws += self._png is not before

    view = RunDetails(  # no history: the run exists only in the relay (a null store)
        "run", tracking_uri=store, status_interval=3600, refresh_interval=refresh_interval, history=False
    )
    frontend = Headless()
    view._start(frontend)
    return view, frontend


def submit_cost(calls: int) -> float:
    """Median ns per Sink.submit of one point, over blocks of 1000 calls."""
    from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission

    class NullClient:
        def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
            pass

    sink = Sink(NullClient(), "null://", Spool(tempfile.mkdtemp(), 1 << 30), lambda stage: 1, linger=0.0)
    blocks = []
    for start in range(0, calls, 1000):
        subs = [Submission("points", "run", [0, 0, 0, 0, None, 0], [("loss", 0.5, 1, start + k)]) for k in range(1000)]
        t = time.perf_counter()
        for sub in subs:
            sink.submit(sub)
        blocks.append((time.perf_counter() - t) / 1000)
    sink.flush(60)
    sink.stop()
    return statistics.median(blocks) * 1e9


def with_view(view_on: bool, store: str, work, refresh_interval: float = 1.0) -> tuple:
    """``work()`` with no view, or with a fresh view of the run; (its result, what the view did)."""
    if not view_on:
        return work(), None
    view, frontend = start_view(store, refresh_interval)
    try:
        result = work()
    finally:
        view.stop()
    kept = sum(len(points) for workers, _ in view.snapshot().curves.values() for points in workers.values())
    return result, {"draws": frontend.draws, "viewed": view.live.points, "kept": kept, "skipped": view.not_shown}


def measure(view_on: bool, store: str, calls: int, points: int) -> dict:
    # the observer's own cost on the calling thread: the view registered, its thread idle
    ns, _ = with_view(view_on, store, lambda: submit_cost(calls), refresh_interval=3600)
    # the relay alone's measure (its clients in other processes), here at 4 connections
    result, seen = with_view(view_on, store, lambda: relay.measure(relay.current(), 4, points))
    return {"ns": ns, "us": result["us"], "sent": result["sent"], "stored": result["stored"], **(seen or {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs, alternated")
    parser.add_argument("--calls", type=int, default=100_000, help="Sink.submit calls per measure")
    parser.add_argument("--points", type=int, default=512_000, help="relay points per measure")
    parser.add_argument("--latency-only", action="store_true", help="only the chart latency (its own section)")
    parser.add_argument("--workers", type=int, default=4, help="tasks of the latency job")
    parser.add_argument("--steps", type=int, default=60, help="steps per task of the latency job")
    args = parser.parse_args()
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "SPARK_LOCAL_IP": "127.0.0.1"})
    import mlflow  # noqa: F401  (as on a driver: loaded before the sink and the view use it)

    report = latency_report(chart_latency(args.workers, args.steps), args.workers, args.steps)
    print(report)
    write_section(LATENCY_SECTION, report)
    if args.latency_only:
        return 0

    store = "file://" + tempfile.mkdtemp(prefix="spark-tracking-live-bench-")  # status reads only; none here
    results = {False: [], True: []}
    measure(True, store, args.calls // 10, args.points // 10)  # warm-up: imports, font cache, first draw
    for _ in range(args.rounds):
        for on in (False, True):
            results[on].append(measure(on, store, args.calls, args.points))

    def med(on, key):
        return statistics.median(r[key] for r in results[on])

    on = results[True]
    lines = [
        "## Live view (benchmarks/live_view.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; relay + sink "
        f'in-process on a null store; {args.rounds} alternated rounds after a warm-up, medians. "on": a RunDetails view of the run '
        "refreshing as in a notebook (soon after points arrive).",
        "",
        "| view | Sink.submit, ns per call (observer only) | relay, µs per metric (4 connections, view running) | relay points stored |",
        "|---|---:|---:|---:|",
        f"| off | {med(False, 'ns'):,.0f} | {med(False, 'us'):.2f} | {min(r['stored'] for r in results[False]):,} |",
        f"| on | {med(True, 'ns'):,.0f} | {med(True, 'us'):.2f} | {min(r['stored'] for r in on):,} |",
        "",
        f"Ratio on/off (same run): submit {med(True, 'ns') / med(False, 'ns'):.2f}, relay "
        f"{med(True, 'us') / med(False, 'us'):.2f}. The view drew its chart {min(r['draws'] for r in on)}–"
        f"{max(r['draws'] for r in on)} times per relay measure, took in {min(r['viewed'] for r in on):,} of "
        f"{min(r['sent'] for r in on):,} points ({max(r['skipped'] for r in on):,} not drawn: its queue was full) and "
        f"kept at most {max(r['kept'] for r in on):,} of them in its curves (bounded: 500 per curve).",
    ]
    report = "\n".join(lines)
    print(report)
    write_section(SECTION, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
