"""Processes a Spark task starts (torchrun ranks, subprocesses) log into the driver's run,
through the binding the task's Python worker exports when the session hook is installed."""

import os
import subprocess
import sys
import textwrap

import mlflow

from spark_tracking import hook

DRIVER = textwrap.dedent("""
    import os, subprocess, sys
    import mlflow, spark_tracking
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[2]").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())

    def task(rows):
        # like TorchDistributor: the task itself logs nothing and starts ranked processes
        from pyspark import TaskContext
        base = TaskContext.get().partitionId() * 2
        for local_rank in range(2):
            env = dict(os.environ, RANK=str(base + local_rank))
            subprocess.run([sys.executable, "-c",
                "import os, spark_tracking\\n"
                "r = int(os.environ['RANK'])\\n"
                "for s in range(3): spark_tracking.log_metric('rank_loss', r * 10 + s, step=s)\\n"
                "assert spark_tracking.flush(60)\\n"], env=env, check=True)
        yield 1

    with mlflow.start_run() as run:
        spark.sparkContext.parallelize(range(2), 2).barrier().mapPartitions(task).collect()
    spark_tracking.flush()
    print(run.info.run_id)
    spark.stop()
""")


def test_ranked_child_processes_of_a_task_log_to_the_driver_run(tmp_path, sqlite_uri):
    hook.enable()
    try:
        env = dict(os.environ, SPARK_TRACKING_TRACKING_URI=sqlite_uri, PYSPARK_PYTHON=sys.executable)
        out = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, env=env, timeout=300)
    finally:
        hook.disable()
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = out.stdout.strip().splitlines()[-1]
    client = mlflow.MlflowClient(sqlite_uri)
    for rank in range(4):
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"rank_loss/worker_{rank}"))
        assert got == [(s, float(rank * 10 + s)) for s in range(3)]
