"""Forwarding benchmark, side by side in one run (docs/benchmarks.md).

Against one `mlflow server` (SQLite, 127.0.0.1, --workers 1) and local Spark
(local-cluster[2,1,1024]: two executor processes):

  (a) the store's ceiling: one client sending log_batch of 1000 metrics
  (b) naive MlflowClient.log_metric per call inside tasks
  (c) MLflow async logging inside tasks, with buffering (MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS),
      through a client made once (MlflowClient(uri).log_metric(..., synchronous=False))
      (c') the same through plain mlflow.log_metric(..., synchronous=False): MLflow's fluent API
      makes two MlflowClient per call (a registry URI lookup that asks PySpark for an active
      session included), which (c) does not pay
  (d) spark_tracking: spark_tracking.log_metric inside tasks, forwarded through the relay
      (d') the same with plain mlflow.log_metric inside tasks (through the task store): the
      same call as (c'); (d'') MlflowClient().log_metric, a client made once: the same call as (c)
      For each, the CPU the task's background threads (our shipper; MLflow's async logging
      threads) take per 1,000 points, the flush at the end included.
  (e) MLflow's own floor: plain mlflow.log_metric inside a task into a do-nothing in-process
      store, and (e') the same calls forwarded, alternated in the same task (ABBA rounds,
      medians; wall time per call and the executor's CPU time per call); its own section of
      results.md, which --floor-only rewrites alone

  (g) training throughput: a CPU-bound loop in each of 2 tasks that logs one point every 10
      iterations, without logging, with plain mlflow.log_metric forwarded, and with MLflow's
      async logging (plain mlflow.log_metric(..., synchronous=False) to the store); alternated
      rounds in the same tasks, medians of iterations per second

  (f) latency: a running task logs a point every 25 ms; the driver polls the store and notes
      when each becomes readable (p50/p95 from the log call to readable, poll interval included)

and the relay alone (null store) from 1 to 1024 concurrent executor connections (cost per
metric; benchmarks/relay.py says what it measures), its own section of results.md, which
--relay-only rewrites alone. Prints a Markdown report and writes it to benchmarks/results.md.

    .ci/setup && .venv/bin/python benchmarks/run.py [--points N] [--floor-only] [--relay-only [--relay-before REV]]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import relay  # noqa: E402  (benchmarks/relay.py)
from conftest import QUIET_ENV, MlflowServer, spark_builder  # noqa: E402


def in_task_points(n: int, mode: str, uri: str, run_id: str):
    """Task body: log n points; yields (median seconds per call over 1000-call blocks, CPU seconds
    of the process's threads other than the calling one per point: the background sender)."""
    from pyspark import TaskContext

    from spark_tracking.layout import worker_metric_key

    partition = TaskContext.get().partitionId()
    blocks: list = []
    cpu, main_cpu = time.process_time(), time.thread_time()

    def timed(log) -> None:
        for start in range(0, n, 1000):
            t = time.perf_counter()
            for step in range(start, min(n, start + 1000)):
                log(step)
            blocks.append((time.perf_counter() - t) / 1000)

    if mode == "spark_tracking":
        import spark_tracking

        log = spark_tracking.log_metric
        timed(lambda step: log("loss", 0.5 + step * 1e-6, step=step))
        assert spark_tracking.flush(600)
    elif mode == "mlflow_forwarded":
        import mlflow

        import spark_tracking

        with mlflow.start_run():
            timed(lambda step: mlflow.log_metric("loss_plain", 0.5, step=step))
        assert spark_tracking.flush(600)
    elif mode == "client_forwarded":
        import mlflow

        import spark_tracking

        client = mlflow.MlflowClient()  # the task store: forwarded
        with mlflow.start_run() as run:
            rid = run.info.run_id
            timed(lambda step: client.log_metric(rid, "loss_client", 0.5, step=step))
        assert spark_tracking.flush(600)
    elif mode == "naive":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        for step in range(n):
            t = time.perf_counter()
            client.log_metric(run_id, worker_metric_key("naive", partition), 0.5, step=step)
            blocks.append(time.perf_counter() - t)
    elif mode == "async":
        import mlflow

        os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
        client = mlflow.MlflowClient(uri)  # direct: the task writes to the store itself
        key = worker_metric_key("async", partition)
        timed(lambda step: client.log_metric(run_id, key, 0.5, step=step, synchronous=False))
        from spark_tracking._compat import mlflow as mlflow_compat

        mlflow_compat.tracking_store(client).flush_async_logging()
    elif mode == "async_fluent":
        import mlflow

        os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
        key = worker_metric_key("async_fluent", partition)
        routed = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)  # direct: the task writes to the store itself
        try:
            with mlflow.start_run(run_id=run_id):
                timed(lambda step: mlflow.log_metric(key, 0.5, step=step, synchronous=False))
                mlflow.flush_async_logging()
        finally:
            mlflow.set_tracking_uri(routed)  # the worker is reused by the next job
    background = (time.process_time() - cpu) - (time.thread_time() - main_cpu)
    yield statistics.median(blocks), background / n


def _train(iterations: int, every: int, log) -> float:
    """A CPU-bound training loop logging one point every ``every`` iterations; iterations/s."""
    x = 0.25
    t = time.perf_counter()
    for i in range(iterations):
        s = 0.0
        for k in range(150):  # the "step": pure Python arithmetic, tens of µs
            s += (x + k) * 0.5
        x = s % 1.0
        if log is not None and i % every == 0:
            log(i, x)
    return iterations / (time.perf_counter() - t)


def training_task(iterations: int, every: int, rounds: int, uri: str, run_id: str):
    """Task body of (g): rounds of the three modes in rotating order; yields (mode, it/s)."""
    import mlflow

    from spark_tracking.layout import worker_metric_key

    routed = mlflow.get_tracking_uri()
    os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
    from pyspark import TaskContext

    key = worker_metric_key("train_async", TaskContext.get().partitionId())
    modes = ["none", "forwarded", "mlflow_async"]
    for r in range(rounds):
        for mode in modes[r % 3 :] + modes[: r % 3]:
            base = r * iterations
            if mode == "none":
                rate = _train(iterations, every, None)
            elif mode == "forwarded":
                with mlflow.start_run():
                    rate = _train(iterations, every, lambda i, x: mlflow.log_metric("train", x, step=base + i))
            else:
                mlflow.set_tracking_uri(uri)
                try:
                    with mlflow.start_run(run_id=run_id):
                        rate = _train(
                            iterations, every, lambda i, x: mlflow.log_metric(key, x, step=base + i, synchronous=False)
                        )
                        mlflow.flush_async_logging()
                finally:
                    mlflow.set_tracking_uri(routed)
            yield mode, rate


def training_throughput(spark, uri: str, iterations: int, every: int = 10, rounds: int = 6) -> dict:
    """(g): median iterations/s per mode over the rounds of 2 tasks side by side."""
    import mlflow

    import spark_tracking

    with mlflow.start_run(run_name="benchmark-training") as run:
        rid = run.info.run_id
        samples = (
            spark.sparkContext.parallelize(range(2), 2)
            .mapPartitions(lambda _: training_task(iterations, every, rounds, uri, rid))
            .collect()
        )
        assert spark_tracking.flush(900)
    return {m: statistics.median(r for mode, r in samples if mode == m) for m in ("none", "forwarded", "mlflow_async")}


def latency_task(n: int, interval: float):
    """Task body: log n points ``interval`` apart, each carrying the wall time of its log call."""
    import spark_tracking

    for step in range(n):
        spark_tracking.log_metric("latency", time.time(), step=step)
        time.sleep(interval)
    yield n


def latency(spark, client, run_id: str, n: int = 200, interval: float = 0.025, poll: float = 0.02):
    """Seconds from the log call in a running task to readable in the store: (p50, p95, seen)."""
    seen: dict[int, float] = {}
    job_done = threading.Event()

    def watch():
        give_up = None
        while len(seen) < n and (give_up is None or time.time() < give_up):
            now = time.time()
            for m in client.get_metric_history(run_id, "latency"):
                seen.setdefault(m.step, now - m.value)
            if give_up is None and job_done.is_set():
                give_up = time.time() + 30
            time.sleep(poll)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    spark.sparkContext.parallelize(range(1), 1).mapPartitions(lambda _: latency_task(n, interval)).collect()
    job_done.set()
    watcher.join(60)
    values = sorted(seen.values())
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))] if values else float("nan")
    return statistics.median(values) if values else float("nan"), p95, len(values)


def measure_job(spark, n_per_task: int, tasks: int, mode: str, uri: str, run_id: str):
    """Seconds to the store, median per-call seconds in the tasks, median background CPU
    seconds per point in the tasks."""
    import spark_tracking

    t = time.perf_counter()
    samples = (
        spark.sparkContext.parallelize(range(tasks), tasks)
        .mapPartitions(lambda _: in_task_points(n_per_task, mode, uri, run_id))
        .collect()
    )
    assert spark_tracking.flush(900), "the store did not take everything: the counts would be early"
    elapsed = time.perf_counter() - t
    return elapsed, statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def count_points(client, run_id: str, prefix: str, per_worker: bool = False) -> int:
    """Points stored under keys starting with ``prefix``; with ``per_worker``, only the per-worker
    series of the metric ``prefix`` (the stored layout's, not the mean)."""
    from spark_tracking.layout import split_metric_key

    run = client.get_run(run_id)
    if per_worker:
        keys = [k for k in run.data.metrics if split_metric_key(k) != (k, None) and split_metric_key(k)[0] == prefix]
    else:
        keys = [k for k in run.data.metrics if k.startswith(prefix)]
    return sum(len(client.get_metric_history(run_id, k)) for k in keys)


def ceiling(client, run_id: str, total: int) -> float:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    t = time.perf_counter()
    for start in range(0, total, 1000):
        client.log_batch(run_id, metrics=[Metric("ceiling", 0.5, now, s) for s in range(start, start + 1000)])
    return total / (time.perf_counter() - t)


# -- MLflow's own floor (issue F item 7) ------------------------------------------------------

FLOOR_SECTION = "mlflow_floor"


def _floor_and_forwarded(n: int, rounds: int):
    """Task body: plain ``mlflow.log_metric``, ``n`` calls per round into a do-nothing in-process
    store (MLflow's own cost: the floor) and ``n`` calls forwarded through the task store, for
    ``rounds`` rounds in ABBA order (floor first in even rounds, forwarded first in odd ones), so
    both see the same load on a shared machine. Yields one sample per round and path:
    (path, wall seconds per call: median of 1000-call blocks, executor CPU seconds per call:
    the process's, so the shipper thread's framing and sending of the points is included)."""
    import mlflow
    from mlflow.store.tracking.abstract_store import AbstractStore

    from spark_tracking._compat import mlflow as mlflow_compat
    from spark_tracking.forwarding.task import executor
    from spark_tracking.forwarding.task import store as task_store

    class NullStore(AbstractStore):
        def __init__(self, store_uri=None, artifact_uri=None):
            super().__init__()
            self.run = task_store._stand_in_run("0", None)

        def create_run(self, *args, **kwargs):
            return self.run

        def get_run(self, run_id):
            return self.run

        def update_run_info(self, *args, **kwargs):
            return self.run.info

        def log_batch(self, run_id, metrics, params, tags):
            pass

    forwarded_uri = mlflow.get_tracking_uri()
    mlflow_compat.register_tracking_store("benchmark-null", NullStore)

    def segment(path: str, first: int) -> tuple:
        mlflow.set_tracking_uri("benchmark-null:" if path == "floor" else forwarded_uri)
        name = "floor" if path == "floor" else "loss_plain_floor_run"
        blocks = []
        cpu = time.process_time()
        try:
            with mlflow.start_run():
                for start in range(first, first + n, 1000):
                    t = time.perf_counter()
                    for step in range(start, start + 1000):
                        mlflow.log_metric(name, 0.5, step=step)
                    blocks.append((time.perf_counter() - t) / 1000)
            if path == "forwarded":
                assert executor.flush(120), "the driver did not take the points"
        finally:
            mlflow.set_tracking_uri(forwarded_uri)
        return path, statistics.median(blocks), (time.process_time() - cpu) / n

    for r in range(rounds):
        for path in ("floor", "forwarded") if r % 2 == 0 else ("forwarded", "floor"):
            yield segment(path, r * n)


def mlflow_floor(spark, n: int, rounds: int, tasks: int = 1) -> str:
    """The floor section of results.md: MLflow's floor and the forwarded plain path, measured
    alternately in the same tasks (one task at a time by default, so the driver, relay and
    store, which share this machine's cores, do not take the task's core)."""
    import mlflow

    import spark_tracking

    with mlflow.start_run(run_name="benchmark-mlflow-floor") as run:
        samples = (
            spark.sparkContext.parallelize(range(tasks), tasks)
            .mapPartitions(lambda _: _floor_and_forwarded(n, rounds))
            .collect()
        )
        assert spark_tracking.flush(900), "the store did not take everything: the count would be early"
    stored = count_points(mlflow.MlflowClient(), run.info.run_id, "loss_plain_floor_run")
    wall = {p: statistics.median(s[1] for s in samples if s[0] == p) for p in ("floor", "forwarded")}
    cpu = {p: statistics.median(s[2] for s in samples if s[0] == p) for p in ("floor", "forwarded")}
    logged = tasks * rounds * n
    return "\n".join(
        [
            "## Plain `mlflow.log_metric` in a task against MLflow's own floor",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; Spark "
            f"local-cluster[2,1,1024], {tasks} task(s); {rounds} rounds of {n:,} calls per path, alternating "
            "(ABBA); medians over rounds. Wall: per call, median of 1000-call blocks. CPU: the executor "
            "process's CPU time per call, the shipper thread's framing and sending included.",
            "",
            "| path | wall per call | executor CPU per call | points stored |",
            "|---|---:|---:|---:|",
            f"| (e) MLflow's floor: a do-nothing in-process store | {wall['floor'] * 1e6:.1f} µs | "
            f"{cpu['floor'] * 1e6:.1f} µs | — |",
            f"| (e') forwarded to the driver's run | {wall['forwarded'] * 1e6:.1f} µs | "
            f"{cpu['forwarded'] * 1e6:.1f} µs | {stored:,} of {logged:,} |",
            "",
            f"Ratio (e')/(e), same run: wall {wall['forwarded'] / wall['floor']:.2f}x, "
            f"CPU {cpu['forwarded'] / cpu['floor']:.2f}x (target ≤ 1.3x).",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=60_000, help="points per task for (c) and (d)")
    parser.add_argument("--naive", type=int, default=150, help="points per task for (b)")
    parser.add_argument("--floor-points", type=int, default=5000, help="calls per round and path for (e)/(e')")
    parser.add_argument("--floor-rounds", type=int, default=8, help="alternated rounds for (e)/(e')")
    parser.add_argument("--floor-only", action="store_true", help="run (e)/(e') alone; rewrite only their section")
    parser.add_argument("--train-iterations", type=int, default=3000, help="iterations per round and mode for (g)")
    parser.add_argument("--relay-only", action="store_true", help="run the relay alone; rewrite only its section")
    parser.add_argument("--relay-before", help="with the relay: also measure relay.py and sink.py of this git revision")
    args = parser.parse_args()
    os.environ.update(QUIET_ENV)
    if args.relay_only:
        section = relay.run(before=args.relay_before)
        print(section)
        write_section(relay.SECTION, section)
        return 0
    import tempfile
    from pathlib import Path

    import mlflow

    import spark_tracking

    root = Path(tempfile.mkdtemp(prefix="spark-tracking-bench-"))
    server = MlflowServer(root, workers=1).start()
    spark = None
    try:
        spark_tracking.configure(tracking_uri=server.uri, home=str(root / "home"))
        client = mlflow.MlflowClient(server.uri)
        os.environ.setdefault("SPARK_TRACKING_RELAY_SECRET", secrets.token_hex(32))  # as on a cluster: env
        spark = (
            spark_builder(app_name="spark-tracking-bench").config("spark.ui.showConsoleProgress", "false").getOrCreate()
        )
        spark.sparkContext.parallelize(range(2), 2).map(lambda x: x).collect()  # warm the executors
        floor = mlflow_floor(spark, args.floor_points, args.floor_rounds)
        if args.floor_only:
            print(floor)
            write_section(FLOOR_SECTION, floor)
            return 0
        tasks, n = 2, args.points
        rows = []
        with mlflow.start_run(run_name="benchmark") as run:
            rid = run.info.run_id
            a = ceiling(client, rid, 2 * n)
            rows.append(("(a) store ceiling: log_batch of 1000, one client", a, None, 2 * n, None))
            e, per_call, _ = measure_job(spark, args.naive, tasks, "naive", server.uri, rid)
            got = count_points(client, rid, "naive")
            rows.append(("(b) MlflowClient.log_metric per call in tasks", got / e, per_call, got, None))
            e, per_call, bg = measure_job(spark, n, tasks, "async", server.uri, rid)
            got = count_points(client, rid, "async")
            rows.append(
                ("(c) MLflow async logging in tasks, buffered 1 s: a client made once", got / e, per_call, got, bg)
            )
        with mlflow.start_run(run_name="benchmark-async-fluent") as run:
            rid = run.info.run_id
            e, per_call, bg = measure_job(spark, n // 4, tasks, "async_fluent", server.uri, rid)
            got = count_points(client, rid, "async_fluent")
            rows.append(
                ("(c') the same through plain mlflow.log_metric(synchronous=False)", got / e, per_call, got, bg)
            )
        with mlflow.start_run(run_name="benchmark-spark-tracking") as run:
            rid = run.info.run_id
            e, per_call, bg = measure_job(spark, n, tasks, "spark_tracking", server.uri, rid)
            stored = count_points(client, rid, "loss")
            user = count_points(client, rid, "loss", per_worker=True)
            rows.append(
                (
                    "(d) spark_tracking.log_metric in tasks (store writes incl. mean series)",
                    stored / e,
                    per_call,
                    stored,
                    bg,
                )
            )
        with mlflow.start_run(run_name="benchmark-plain-mlflow") as run:
            e2, per_call2, bg = measure_job(spark, n // 4, tasks, "mlflow_forwarded", server.uri, run.info.run_id)
            stored2 = count_points(client, run.info.run_id, "loss_plain")
            rows.append(("(d') plain mlflow.log_metric in tasks, forwarded", stored2 / e2, per_call2, stored2, bg))
        with mlflow.start_run(run_name="benchmark-client-forwarded") as run:
            e3, per_call3, bg = measure_job(spark, n // 4, tasks, "client_forwarded", server.uri, run.info.run_id)
            stored3 = count_points(client, run.info.run_id, "loss_client")
            rows.append(
                (
                    "(d'') MlflowClient().log_metric in tasks, a client made once, forwarded",
                    stored3 / e3,
                    per_call3,
                    stored3,
                    bg,
                )
            )
        training = training_throughput(spark, server.uri, args.train_iterations)
        with mlflow.start_run(run_name="benchmark-latency") as run:
            p50, p95, seen = latency(spark, client, run.info.run_id)
    finally:
        if spark is not None:
            spark.stop()
        server.stop()

    by = {row[0][: row[0].index(")") + 1]: row for row in rows}
    d = by["(d)"][1]
    plain, plain_async, client_fwd = by["(d')"], by["(c')"], by["(d'')"]
    load = os.getloadavg()[0]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores (load average "
        f"{load:.1f} at the end: the machine is shared with other engineers' builds and tests, so single numbers "
        f"are noisy; compare rows of this run with each other); mlflow server --workers 1 on SQLite; Spark "
        f"local-cluster[2,1,1024]; {tasks} tasks side by side, {n:,} points each ((c'), (d'), (d''): {n // 4:,}).",
        "",
        *path_table(rows),
        "",
        f"Ratios (same run): (d)/(a) = {d / by['(a)'][1]:.2f}; (d)/(b) = {d / by['(b)'][1]:,.0f}x; "
        f"(d)/(c) = {d / by['(c)'][1]:.2f}x. Per-worker points stored in (d): {user:,} of {tasks * n:,} logged.",
        "",
        "Per call in the task, like against like (same run): (d') plain `mlflow.log_metric` forwarded / (c') "
        f"plain `mlflow.log_metric(synchronous=False)` = {plain[2] / plain_async[2]:.2f}; (d'') a client made once, "
        f"forwarded / (c) the same client call, MLflow async = {client_fwd[2] / by['(c)'][2]:.2f}; (d') / (c) (the "
        f"first comparison, two different MLflow calls) = {plain[2] / by['(c)'][2]:.2f}.",
        "",
        f"(g) Training throughput, a CPU-bound loop in each of 2 tasks logging one point every 10 iterations "
        f"({args.train_iterations:,} iterations per round, 6 rounds alternated, medians): without logging "
        f"{training['none']:,.0f} it/s; plain `mlflow.log_metric` forwarded {training['forwarded']:,.0f} it/s "
        f"({training['forwarded'] / training['none']:.3f} of it); MLflow's async logging (plain "
        f"`mlflow.log_metric(synchronous=False)` to the store) {training['mlflow_async']:,.0f} it/s "
        f"({training['mlflow_async'] / training['none']:.3f} of it).",
        "",
        f"(f) From the log call in a running task to readable in the store (the driver polls every 20 ms): "
        f"p50 {p50 * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms ({seen} points, one every 25 ms).",
    ]
    report = "\n".join(lines)
    scaling = relay.run(before=args.relay_before)  # Spark and the server are stopped: the relay alone
    print(report + "\n\n" + floor + "\n\n" + scaling)
    write_report(report)
    write_section(FLOOR_SECTION, floor)
    write_section(relay.SECTION, scaling)
    return 0


def path_table(rows) -> list[str]:
    """The Markdown table of logging paths: rows of (name, store metrics/s, median seconds per
    call in the task or None, points stored, background CPU seconds per point in the task or None)."""
    lines = [
        "| path | store metrics/s | median cost per call in the task | background threads' CPU per 1,000 points "
        "in the task | points stored |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rate, per_call, count, background in rows:
        cost = (
            "—" if per_call is None else (f"{per_call * 1e6:.2f} µs" if per_call < 1e-3 else f"{per_call * 1e3:.1f} ms")
        )
        cpu = "—" if background is None else f"{background * 1e6:.1f} ms"
        lines.append(f"| {name} | {rate:,.0f} | {cost} | {cpu} | {count:,} |")
    return lines


def read_results() -> str:
    """benchmarks/results.md as it is now ("" before the first run)."""
    try:
        with open(os.path.join(HERE, "results.md"), encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def write_section(name: str, report: str) -> None:
    """Replace the section ``name`` of results.md (between ``<!-- name -->`` markers), or
    append it, leaving the rest alone."""
    text = read_results()
    block = f"<!-- {name} -->\n{report}\n<!-- /{name} -->\n"
    pattern = re.compile(rf"<!-- {name} -->\n.*?<!-- /{name} -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    with open(os.path.join(HERE, "results.md"), "w", encoding="utf-8") as fh:
        fh.write(text)


def write_report(report: str) -> None:
    """Put the report at the top of results.md, keeping the sections other benchmarks add
    below it (each between ``<!-- name -->`` markers)."""
    path = os.path.join(HERE, "results.md")
    text = read_results()
    sections = text[text.index("<!-- ") :] if "<!-- " in text else ""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(report + "\n" + ("\n" + sections if sections else ""))


if __name__ == "__main__":
    sys.exit(main())
