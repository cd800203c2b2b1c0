"""Fresh Python workers (a new Spark application): a task that used spark_tracking without MLflow
must not leave its worker unable to forward MLflow calls of later tasks. (The end of such a task
once imported the MLflow task store before MLflow itself, so MLflow, loading our plugins in the
middle of that import, never routed the worker: later points went to an executor-local store.)"""

import textwrap

import mlflow
from conftest import run_driver

DRIVER = textwrap.dedent("""
    import os, sys
    import mlflow, spark_tracking
    from spark_tracking import Run
    from pyspark.sql import SparkSession
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_TRACKING_RELAY_SECRET"] = "fresh-workers-test-secret"
    spark_tracking.configure(tracking_uri=sys.argv[1])
    spark = (SparkSession.builder.master("local-cluster[2,1,1024]").config("spark.driver.host", "127.0.0.1")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable).getOrCreate())

    def no_mlflow(rows):
        from spark_tracking import Run
        Run.get_context()  # bound to the driver's run; MLflow is not imported in this worker
        yield "mlflow" in sys.modules

    def plain_mlflow(rows):
        import mlflow
        from pyspark import TaskContext
        p = TaskContext.get().partitionId()
        for step in range(20):
            mlflow.log_metric("loss", p * 100 + step, step=step)
        yield p

    with Run.start_logging("first") as first:
        print(spark.sparkContext.parallelize(range(2), 2).mapPartitions(no_mlflow).collect())
    with mlflow.start_run(run_name="second") as second:
        spark.sparkContext.parallelize(range(4), 4).mapPartitions(plain_mlflow).collect()
    spark_tracking.flush()
    print(second.info.run_id)
    spark.stop()
""")


def test_a_task_without_mlflow_leaves_its_worker_able_to_forward(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    imported, run_id = run_driver(DRIVER, store, cwd=tmp_path).strip().splitlines()[-2:]
    assert imported == "[False, False]"  # the first job's workers really had no MLflow
    client = mlflow.MlflowClient(store)
    for p in range(4):
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"loss/worker_{p}"))
        assert points == [(s, float(p * 100 + s)) for s in range(20)], p
