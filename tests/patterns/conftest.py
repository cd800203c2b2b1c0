"""The task patterns of docs/patterns.md, written as the libraries' docs write them, on real
Spark (local-cluster) against a real MLflow store (SQLite)."""

from __future__ import annotations

import json
import os

import mlflow
from driver_program import run_on_cluster, spark_session


def model_name_kwargs(name: str) -> dict:
    """``log_model(model, name=...)`` on MLflow 3, ``artifact_path=...`` on MLflow 2."""
    return {"name": name} if int(mlflow.__version__.split(".")[0]) >= 3 else {"artifact_path": name}


def executor_home(tmp_path) -> str:
    """A HOME of the executors' own (on a cluster they are other machines), empty to begin with."""
    home = tmp_path / "executor-home"
    home.mkdir()
    return str(home)


def stores_under(folder: str) -> list[str]:
    """MLflow stores anywhere under ``folder``: SQLite files and ``mlruns`` folders."""
    return [
        os.path.join(top, name)
        for top, dirs, files in os.walk(folder)
        for name in dirs + files
        if name == "mlruns" or name.endswith(".db")
    ]


def library_child_run(client, experiment_name: str, run_id: str, driver_run_id: str):
    """The run a library started in a task (``run_id``), checked as users expect it: the only
    run in the experiment the library names, a finished child of the driver's run, which stays
    alone in its own experiment."""
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, [e.name for e in client.search_experiments()]
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == driver_run_id
    assert run.info.status == "FINISHED"
    driver_experiment = client.get_run(driver_run_id).info.experiment_id
    assert [r.info.run_id for r in client.search_runs([driver_experiment])] == [driver_run_id]
    return run


#: a driver program around a ``train_fn`` defined before it: the driver's run, TorchDistributor
#: with two ranks on the cluster (``{args}``: train_fn's arguments), rank 0's result as JSON
_DISTRIBUTED = """
import json, os
import mlflow, spark_tracking
from pyspark.ml.torch.distributor import TorchDistributor
{train_fn}
with mlflow.start_run() as run:
    result = TorchDistributor(local_mode=False, num_processes=2, use_gpu=False).run(train_fn, {args})
assert spark_tracking.flush(60)
print(json.dumps(result))
print(run.info.run_id)
spark.stop()
"""


def run_in_torch_distributor(train_fn: str, tmp_path, tracking_uri: str, args: str = "") -> tuple:
    """Run the source ``train_fn`` (a ``def train_fn``) with TorchDistributor in a driver program
    of its own on local-cluster, executors with a HOME of their own and nothing of the driver's
    store in their environment; (rank 0's result, the driver's run id, the executors' HOME)."""
    home = executor_home(tmp_path)
    program = spark_session("local-cluster[2,1,1024]", {"HOME": home, "SPARK_TRACKING_TRACKING_URI": ""})
    program += _DISTRIBUTED.format(train_fn=train_fn, args=args)
    *_, result, run_id = run_on_cluster(program, tracking_uri, tmp_path)
    return json.loads(result), run_id, home
