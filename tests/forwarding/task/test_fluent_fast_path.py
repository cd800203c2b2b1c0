"""Plain ``mlflow.log_metric`` in a task skips MLflow's per-call client building
(``_compat.mlflow.put_fast_path_before_log_metric``) and keeps MLflow's semantics: values
converted as MLflow converts them, its defaults, its return values, its errors; calls the fast
path does not cover (an explicit run, a model) take MLflow's own path. Real Spark and store."""

import mlflow
import pytest
from conftest import history

import spark_tracking
from spark_tracking._compat import mlflow as mlflow_compat

pytestmark = pytest.mark.skipif(
    mlflow_compat.installed_version() < (3,), reason="the fast path needs MLflow 3's log_metric (2.x keeps its own)"
)


def _task(rows):
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.utils.async_logging.run_operations import RunOperations

    mlflow.log_metric("first", 1.0)  # builds MLflow's store once (the fast path is put in place then)
    seen = {"fast": getattr(mlflow.log_metric, "__spark_tracking_fast_path__", False)}
    seen["sync"] = mlflow.log_metric("int", 3, step=1)
    mlflow.log_metric("numpy", np.float32(0.5), step=2)
    mlflow.log_metric("flag", True, step=3)  # MLflow's client stores True as 1.0
    seen["async"] = type(mlflow.log_metric("later", 4.0, step=4, synchronous=False)).__name__
    try:
        mlflow.log_metric("nan_step", 1.0, step=2**63)
    except MlflowException as exc:
        seen["error"] = (exc.error_code, str(exc).split(":")[0])
    run_id = mlflow.active_run().info.run_id
    mlflow.log_metric("explicit", 5.0, step=5, run_id=run_id)  # MLflow's own path
    assert isinstance(RunOperations(operation_futures=[]), RunOperations)
    yield seen


def test_plain_log_metric_in_a_task_keeps_mlflows_semantics_on_the_fast_path(spark, store):
    with mlflow.start_run() as run:
        (seen,) = spark.sparkContext.parallelize(range(1), 1).mapPartitions(_task).collect()
    assert spark_tracking.flush(60)
    rid = run.info.run_id
    assert seen == {
        "fast": True,
        "sync": None,
        "async": "RunOperations",
        "error": ("INVALID_PARAMETER_VALUE", "Invalid value 9223372036854775808 for parameter 'step' supplied"),
    }
    got = {key: history(store, rid, key) for key in ("first", "int", "numpy", "flag", "later", "explicit")}
    assert got == {
        "first": [(0, 1.0)],
        "int": [(1, 3.0)],
        "numpy": [(2, 0.5)],
        "flag": [(3, 1.0)],
        "later": [(4, 4.0)],
        "explicit": [(5, 5.0)],
    }
    assert "nan_step" not in store.get_run(rid).data.metrics
