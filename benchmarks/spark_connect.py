"""Forwarding on Spark Connect beside classic Spark, from one run (docs/connect.md).

Against one `mlflow server` (SQLite, 127.0.0.1, --workers 1): the same `mapInPandas` job —
2 tasks of N points each, `spark_tracking.log_metric` (d) and plain `mlflow.log_metric` (d')
inside the tasks — first on a classic session (local-cluster[2,1,1024]), then through a Spark
Connect client on a Connect server with the same master. Prints a Markdown table and writes it
to benchmarks/results-connect.md.

    .ci/setup && .venv/bin/python benchmarks/spark_connect.py [--points N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import run  # noqa: E402
from conftest import QUIET_ENV, MlflowServer, spark_builder  # noqa: E402
from connect.conftest import ConnectServer, _server_env  # noqa: E402
from run import count_points, in_task_points  # noqa: E402

TASK_MODULES = (run,)  # executors cannot import benchmarks/: their functions travel by value

TASKS = 2


def measure(spark, n: int, mode: str, uri: str, run_id: str) -> tuple[float, float]:
    """Run the job through mapInPandas (both APIs have it); (seconds incl. flush, median µs/call)."""
    import spark_tracking

    def body(batches):
        import pandas as pd

        for _ in batches:
            pass
        for median in in_task_points(n, mode, uri, run_id):
            yield pd.DataFrame({"median": [median]})

    t = time.perf_counter()
    medians = [r.median for r in spark.range(0, TASKS, 1, TASKS).mapInPandas(body, "median double").collect()]
    spark_tracking.flush()
    return time.perf_counter() - t, statistics.median(medians)


def rows_for(label: str, spark, client, uri: str, n: int) -> list:
    import mlflow

    spark.range(0, TASKS, 1, TASKS).mapInPandas(lambda it: it, "id long").collect()  # warm the executors
    rows = []
    with mlflow.start_run(run_name=f"bench-{label}") as run:
        e, per_call = measure(spark, n, "spark_tracking", uri, run.info.run_id)
        stored = count_points(client, run.info.run_id, "loss")
        rows.append((f"{label}: (d) spark_tracking.log_metric", stored / e, per_call, stored))
    with mlflow.start_run(run_name=f"bench-{label}-plain") as run:
        e, per_call = measure(spark, n // 4, "mlflow_forwarded", uri, run.info.run_id)
        stored = count_points(client, run.info.run_id, "loss_plain")
        rows.append((f"{label}: (d') plain mlflow.log_metric", stored / e, per_call, stored))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=60_000, help="points per task for (d)")
    args = parser.parse_args()
    os.environ.update(QUIET_ENV)
    from pyspark import cloudpickle

    for module in TASK_MODULES:
        cloudpickle.register_pickle_by_value(module)
    import mlflow

    import spark_tracking
    from spark_tracking.forwarding.driver import current as driver

    root = Path(tempfile.mkdtemp(prefix="spark-tracking-bench-connect-"))
    (root / "home").mkdir()
    secret = os.environ.setdefault("SPARK_TRACKING_RELAY_SECRET", secrets.token_hex(32))  # the cluster env
    server = MlflowServer(root, workers=1).start()
    rows = []
    try:
        spark_tracking.configure(tracking_uri=server.uri, home=str(root / "home"))
        client = mlflow.MlflowClient(server.uri)
        spark = spark_builder(app_name="spark-tracking-bench-classic").getOrCreate()
        try:
            rows += rows_for("classic", spark, client, server.uri, args.points)
        finally:
            spark.stop()
            driver.shutdown(10.0)
        connect_server = ConnectServer(root, _server_env(secret, root / "home")).start()
        try:
            from pyspark.sql.connect.session import SparkSession

            session = SparkSession.builder.remote(connect_server.url).getOrCreate()
            rows += rows_for("Spark Connect", session, client, server.uri, args.points)
            session.stop()
        finally:
            connect_server.stop()
    finally:
        server.stop()

    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; mlflow server "
        f"--workers 1 on SQLite; local-cluster[2,1,1024]; mapInPandas, {TASKS} tasks of {args.points:,} "
        f"points ((d'): {args.points // 4:,}).",
        "",
        *run.path_table(rows),
    ]
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(HERE, "results-connect.md"), "w", encoding="utf-8") as fh:
        fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
