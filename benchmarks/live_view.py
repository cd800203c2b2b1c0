"""The live view's cost to forwarding, with the view off and on, side by side in one run.

The view lives on the driver only: a log call inside a task never reaches it. What it could
slow is the driver's forwarding path, so that is what is measured, in-process with the real
relay and sink on a null store (what the store costs is the same either way):

  1. per-call cost of ``Sink.submit`` (where the sink notifies observers), one point per call;
  2. relay throughput: 512,000 points from 4 concurrent task connections in frames of 500.

"On" is a ``RunDetails`` view of the run, refreshing once a second as in a notebook, drawing
its matplotlib chart every refresh (on its own thread, in this process: its CPU and GIL time
count against forwarding). Off and on alternate, ``--rounds`` times each; medians are reported.
The report goes to stdout and to its own section of benchmarks/results.md.

    .ci/setup && .venv/bin/python benchmarks/live_view.py [--rounds 5]
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

from run import relay_scaling, write_section  # noqa: E402

SECTION = "live_view"


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

    view = RunDetails("run", tracking_uri=store, status_interval=3600, refresh_interval=refresh_interval)
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
    (us, sent, stored), seen = with_view(view_on, store, lambda: relay_scaling(4, points))
    return {"ns": ns, "us": us, "sent": sent, "stored": stored, **(seen or {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs, alternated")
    parser.add_argument("--calls", type=int, default=100_000, help="Sink.submit calls per measure")
    parser.add_argument("--points", type=int, default=512_000, help="relay points per measure")
    args = parser.parse_args()
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    import mlflow  # noqa: F401  (as on a driver: loaded before the sink and the view use it)

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
        "refreshing once a second as in a notebook.",
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
