"""Workers' system metrics: what sampling costs a training task, and what it adds to the store.

Against one `mlflow server` (SQLite, 127.0.0.1, --workers 1) and local Spark
(local-cluster[2,1,1024]: two executor processes), 2 tasks run a CPU-bound training loop that
logs one point every ``--every`` iterations (plain ``mlflow.log_metric``, forwarded: benchmark
(g) of run.py, the same loop). Each round is one job under a run of its own, started with
``mlflow.start_run(log_system_metrics=True)`` (every worker samples every ``--interval``
seconds, 10 by default: MLflow's default and ours; MLflow also samples the driver's machine)
or ``log_system_metrics=False`` (nothing sampled), in ABBA order (on, off, off, on, ...), so a
drift of the machine's load falls on both. Reported: the medians of iterations per second per
task, their ratio (the goal: under 1 % overhead at the default interval), and the system-metric
points the workers added to the store per minute of sampling (``system/<name>/worker_<w>``
points of the "on" runs divided by their tasks' sampling time; MLflow's own series of the
driver's machine, plain ``system/<name>``, counted apart). A round should last several
sampling intervals (``--round-seconds``, 25 by default: two or three samples per task).
Writes its own section of benchmarks/results.md.

    .ci/setup && .venv/bin/python benchmarks/system_metrics.py [--rounds 4] [--round-seconds 25]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "tests"))

import run  # noqa: E402
from conftest import QUIET_ENV, MlflowServer, spark_builder  # noqa: E402
from pyspark import cloudpickle  # noqa: E402
from run import _train, write_section  # noqa: E402

cloudpickle.register_pickle_by_value(run)  # run.py's loop travels to the executors, which cannot import it

SECTION = "system_metrics"


def training_task(iterations: int, every: int):
    """One task: the training loop, logging forwarded to the driver's run; yields (it/s,
    seconds, CPU seconds of the process's other threads: the sampler's and the shipper's)."""
    import mlflow

    t, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    with mlflow.start_run():  # the driver's run (the task store routes it)
        rate = _train(iterations, every, lambda i, x: mlflow.log_metric("train", x, step=i))
    background = (time.process_time() - cpu) - (time.thread_time() - main_cpu)
    yield rate, time.perf_counter() - t, background


def one_round(spark, iterations: int, every: int, on: bool) -> tuple[str, list[tuple[float, float, float]], float]:
    """One job of 2 tasks under a run of its own, system metrics on or off: (run id, [(it/s,
    seconds)] per task, the job's wall seconds)."""
    import mlflow

    import spark_tracking

    with mlflow.start_run(run_name=f"system-metrics-{'on' if on else 'off'}", log_system_metrics=on) as run:
        t = time.perf_counter()
        tasks = (
            spark.sparkContext.parallelize(range(2), 2)
            .mapPartitions(lambda _: training_task(iterations, every))
            .collect()
        )
        wall = time.perf_counter() - t
    assert spark_tracking.flush(900), "the store did not take everything: the counts would be early"
    return run.info.run_id, tasks, wall


def system_points(client, run_id: str) -> tuple[int, int]:
    """(points of the workers' system series, points of MLflow's own series of the driver's machine)."""
    from spark_tracking.layout import SYSTEM_PREFIX, split_metric_key

    workers = driver = 0
    for key in client.get_run(run_id).data.metrics:
        if not key.startswith(SYSTEM_PREFIX):
            continue
        n = len(client.get_metric_history(run_id, key))
        if split_metric_key(key)[1] is None:
            driver += n
        else:
            workers += n
    return workers, driver


def calibrate(spark, every: int, seconds: float) -> int:
    """Iterations per round so that a round of the loop lasts about ``seconds`` (one short job off)."""
    probe = 20_000
    _, tasks, _ = one_round(spark, probe, every, on=False)
    rate = statistics.median(t[0] for t in tasks)
    return max(probe, int(rate * seconds))


def report(results: dict, args, interval: float, iterations: int, load: tuple) -> str:
    on, off = results[True], results[False]
    rate_on = statistics.median(t[0] for job in on for t in job["tasks"])
    rate_off = statistics.median(t[0] for job in off for t in job["tasks"])
    ratio = rate_on / rate_off
    sampled = sum(t[1] for job in on for t in job["tasks"])  # task-seconds of sampling
    # the background threads' CPU as a share of the task's time: the sampler's cost, whatever the load
    share_on = sum(t[2] for job in on for t in job["tasks"]) / sampled
    share_off = sum(t[2] for job in off for t in job["tasks"]) / sum(t[1] for job in off for t in job["tasks"])
    worker_points = sum(job["points"][0] for job in on)
    driver_points = sum(job["points"][1] for job in on)
    wall_on = sum(job["wall"] for job in on)
    per_worker = worker_points / (sampled / 60)
    off_points = sum(job["points"][0] + job["points"][1] for job in off)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    command = f"benchmarks/system_metrics.py --rounds {args.rounds} --round-seconds {args.round_seconds:g}"
    command += f" --interval {args.interval:g}" if args.interval else ""
    lines = [
        "## Workers' system metrics: overhead on training and points added",
        "",
        f"{date}; `{command}`; local-cluster[2,1,1024], 2 tasks, "
        f"a CPU-bound loop logging one point every {args.every} iterations (forwarded), {iterations:,} "
        f"iterations per task and round; sampling every {interval:g} s; {args.rounds} rounds per mode "
        f"in ABBA order; load average (1, 5, 15 min) before {load[0]}, after {load[1]}.",
        "",
        "| system metrics | rounds | it/s per task (median) | task seconds per round (median) "
        "| background threads' CPU, % of task time |",
        "|---|---:|---:|---:|---:|",
        f"| off | {len(off)} | {rate_off:,.0f} | {statistics.median(t[1] for job in off for t in job['tasks']):.1f} "
        f"| {100 * share_off:.3f} |",
        f"| on | {len(on)} | {rate_on:,.0f} | {statistics.median(t[1] for job in on for t in job['tasks']):.1f} "
        f"| {100 * share_on:.3f} |",
        "",
        f"- **Throughput ratio on/off: {ratio:.4f}** (overhead {100 * (1 - ratio):+.2f} %; the goal: under 1 % "
        "at the default interval). Per round, on / off: "
        + ", ".join(
            f"{statistics.median(t[0] for t in a['tasks']):,.0f} / {statistics.median(t[0] for t in b['tasks']):,.0f}"
            for a, b in zip(on, off)
        )
        + " it/s.",
        f"- **The sampler's CPU**, less sensitive to the machine's load than throughput: the task process's "
        f"threads other than the training loop's (the shipper; with system metrics on, the sampler too) took "
        f"{100 * share_on:.3f} % of the task's time on and {100 * share_off:.3f} % off: the sampler costs about "
        f"**{100 * (share_on - share_off):.3f} % of one core** per worker at this interval.",
        f"- **Points added to the store:** {worker_points:,} workers' system points (`system/<name>/worker_<w>`) "
        f"over {sampled:.0f} task-seconds of sampling: **{per_worker:.1f} per minute per worker**, "
        f"{worker_points / (wall_on / 60):.1f} per minute for the job's 2 workers; MLflow's own series of the "
        f"driver's machine added {driver_points:,} more ({driver_points / (wall_on / 60):.1f} per minute). "
        f"Off: {off_points} system points.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds (jobs) per mode, in ABBA order")
    parser.add_argument("--round-seconds", type=float, default=25.0, help="seconds of training per task and round")
    parser.add_argument("--every", type=int, default=10, help="log one point every this many iterations")
    parser.add_argument("--interval", type=float, default=None, help="sampling interval, seconds (default: 10)")
    parser.add_argument("--no-write", action="store_true", help="print the report only; leave results.md alone")
    args = parser.parse_args()
    os.environ.update(QUIET_ENV)
    if args.interval:
        os.environ["SPARK_TRACKING_SYSTEM_METRICS_INTERVAL"] = repr(args.interval)
        os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = repr(args.interval)
    import tempfile
    from pathlib import Path

    import mlflow

    import spark_tracking

    root = Path(tempfile.mkdtemp(prefix="spark-tracking-bench-sysmetrics-"))
    server = MlflowServer(root, workers=1).start()
    spark = None
    load_before = tuple(round(x, 1) for x in os.getloadavg())
    try:
        spark_tracking.configure(tracking_uri=server.uri, home=str(root / "home"))
        client = mlflow.MlflowClient(server.uri)
        os.environ.setdefault("SPARK_TRACKING_RELAY_SECRET", secrets.token_hex(32))  # as on a cluster: env
        spark = (
            spark_builder(app_name="spark-tracking-bench-sysmetrics")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate()
        )
        iterations = calibrate(spark, args.every, args.round_seconds)
        results: dict[bool, list[dict]] = {True: [], False: []}
        for r in range(args.rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):  # ABBA: on off off on ...
                run_id, tasks, wall = one_round(spark, iterations, args.every, on)
                results[on].append({"tasks": tasks, "wall": wall, "points": system_points(client, run_id)})
                print(f"round {r} system metrics {'on' if on else 'off'}: {tasks} in {wall:.1f}s", flush=True)
        interval = args.interval or float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", 10))  # the default
    finally:
        if spark is not None:
            spark.stop()
        server.stop()
    text = report(results, args, interval, iterations, (load_before, tuple(round(x, 1) for x in os.getloadavg())))
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
