"""``spark-tracking demo``: the main job, distributed training on local Spark.

Local SGD with model averaging on a synthetic linear-regression problem: each Spark task
trains on its own shard for a few steps per round, calling plain ``mlflow.log_metric`` inside
the task; the driver averages the workers' weights after each round and logs the validation
loss. The points logged in the tasks are forwarded to the run the driver started. Nothing
here sets up tracking beyond ``configure()``, which the startup hook would also do.
"""

from __future__ import annotations

import os
import secrets
import sys


def register(subparsers) -> None:
    """Add ``demo`` to the ``spark-tracking`` command."""
    p = subparsers.add_parser("demo", help="run distributed training on local Spark and log it")
    p.add_argument(
        "--master",
        default="local-cluster[2,1,1024]",
        help="Spark master (default: two executor processes on this machine)",
    )
    p.add_argument("--workers", type=int, default=4, help="data partitions = training tasks per round")
    p.add_argument("--rounds", type=int, default=5, help="averaging rounds (one Spark job each)")
    p.add_argument("--steps", type=int, default=20, help="local SGD steps per worker per round")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate")
    p.set_defaults(func=_run)


def _local_sgd(shard_rows, weights, steps: int, lr: float, round_index: int):
    """One task: SGD on this partition's rows, logging its loss per global step."""
    import mlflow
    import numpy as np
    from pyspark import TaskContext

    rows = list(shard_rows)
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    w = np.array(weights)
    context = TaskContext.get()
    assert context is not None, "runs inside a Spark task"
    partition = context.partitionId()
    rng = np.random.default_rng(1000 * round_index + partition)
    for step in range(steps):
        batch = rng.choice(len(x), size=min(32, len(x)), replace=False)
        err = x[batch] @ w - y[batch]
        w -= lr * 2 * x[batch].T @ err / len(batch)
        loss = float(np.mean((x @ w - y) ** 2))
        mlflow.log_metric("loss", loss, step=round_index * steps + step)
    yield w.tolist()


def run_demo(
    master: str = "local-cluster[2,1,1024]",
    workers: int = 4,
    rounds: int = 5,
    steps: int = 20,
    lr: float = 0.05,
    spark=None,
) -> str:
    """Train, log, print the summary; returns the run id."""
    import mlflow
    import numpy as np

    from .session import configure

    configure()
    own_spark = spark is None
    if own_spark:
        spark = _local_spark(master)
    sc = spark.sparkContext
    rng = np.random.default_rng(7)
    true_w = rng.normal(size=5)
    x = rng.normal(size=(4000, 5))
    y = x @ true_w + rng.normal(scale=0.1, size=4000)
    train = sc.parallelize(list(zip(x[:3200].tolist(), y[:3200].tolist())), workers).cache()
    x_val, y_val = x[3200:], y[3200:]
    weights = [0.0] * 5
    try:
        with mlflow.start_run(run_name="spark-tracking-demo") as run:
            mlflow.log_params({"workers": workers, "rounds": rounds, "steps": steps, "lr": lr, "master": master})
            for r in range(rounds):
                current = weights
                results = train.mapPartitions(lambda rows, w=current, r=r: _local_sgd(rows, w, steps, lr, r)).collect()
                weights = np.mean(np.array(results), axis=0).tolist()
                val_loss = float(np.mean((x_val @ np.array(weights) - y_val) ** 2))
                mlflow.log_metric("val_loss", val_loss, step=(r + 1) * steps - 1)
        run_id = run.info.run_id
        from .api import flush

        flush()
    finally:
        if own_spark:
            spark.stop()
    print_summary(run_id)
    return run_id


def _local_spark(master: str):
    from pyspark.sql import SparkSession

    from .forwarding.protocol import ENV_SECRET

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # local executors inherit this environment: the relay secret reaches them without travelling
    # in job properties (which Spark writes to its event logs)
    os.environ.setdefault(ENV_SECRET, secrets.token_hex(32))
    return (
        SparkSession.builder.master(master)
        .appName("spark-tracking-demo")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"])
        .getOrCreate()
    )


def print_summary(run_id: str) -> None:
    """Print the run id, its metrics per worker (as ``spark-tracking show`` does) and where
    to look at it."""
    import mlflow

    from .show_text import format_metrics
    from .store import RunReader

    print(f"run id: {run_id}")
    print("\n".join(format_metrics(RunReader(mlflow.MlflowClient(), run_id).metrics())))
    uri = mlflow.get_tracking_uri()
    print(f"tracking URI: {uri}")
    if uri.startswith("sqlite:"):
        print("open it: spark-tracking ui   (or: mlflow ui --backend-store-uri " + uri + ")")
    else:
        from .portal import get_portal_url

        print(f"open it: {get_portal_url(run_id)}")


def _run(args) -> int:
    run_demo(args.master, args.workers, args.rounds, args.steps, args.lr)
    return 0
