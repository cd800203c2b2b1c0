"""TorchDistributor as its docs write it (local_mode=False, 2 processes, CPU, DDP), plain
``mlflow.log_metric`` in ``train_fn``: every rank's points land in the driver's run, under the
rank's worker id, and no rank opens a store of its own. On every supported PySpark
(``.ci/matrix``), with the package installed as the init script installs it (startup hook on),
and without the hook when ``train_fn`` uses the notebook's module-level ``mlflow`` (the task's
Python worker then loads MLflow when it unpickles ``train_fn``, which binds it)."""

import json
import os

import mlflow
import pytest
from driver_program import run_on_cluster, spark_session

from .conftest import executor_home, stores_under

pytest.importorskip("torch")

DRIVER = (
    spark_session("local-cluster[2,1,1024]")
    + """
import json
import mlflow, spark_tracking
from pyspark.ml.torch.distributor import TorchDistributor

def train_fn():
    import os

    import mlflow
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.ones(8, 4) * (rank + 1), torch.zeros(8, 1)
    for step in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        mlflow.log_metric("ddp_loss", loss.item(), step=step)
    folders = [None] * dist.get_world_size()
    dist.all_gather_object(folders, os.getcwd())  # where an executor-local store would be
    dist.destroy_process_group()
    return folders

spark_tracking.configure()  # what the startup hook does; idempotent
with mlflow.start_run() as run:
    folders = TorchDistributor(local_mode=False, num_processes=2, use_gpu=False).run(train_fn)
assert spark_tracking.flush(60)
print(json.dumps(folders))
print(run.info.run_id)
spark.stop()
"""
)


#: as TorchDistributor's docs write it: the import runs in the ranks only
IMPORT_IN_TRAIN_FN = "    import mlflow\n"


@pytest.mark.parametrize("with_hook", [True, False], ids=["startup-hook", "no-hook-module-level-mlflow"])
def test_torch_distributor_ranks_log_into_the_driver_run(tmp_path, sqlite_uri, with_hook):
    assert DRIVER.count(IMPORT_IN_TRAIN_FN) == 1
    program = DRIVER if with_hook else DRIVER.replace(IMPORT_IN_TRAIN_FN, "")
    *_, folders, run_id = run_on_cluster(program, sqlite_uri, tmp_path, with_hook=with_hook)
    client = mlflow.MlflowClient(sqlite_uri)
    for rank in range(2):
        got = [m.step for m in client.get_metric_history(run_id, f"ddp_loss/worker_{rank}")]
        assert sorted(got) == list(range(5)), f"rank {rank}: {sorted(client.get_run(run_id).data.metrics)}"
    # no rank opened a store of its own: none in the central store, none where the ranks ran
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert [r.info.run_id for r in client.search_runs(experiments)] == [run_id]
    for folder in json.loads(folders):
        assert not {"mlruns", "mlflow.db"} & set(os.listdir(folder)), folder


#: a rank that reads MLflow's variable before importing mlflow, as Lightning's MLFlowLogger does
#: (its ``tracking_uri`` default is ``os.getenv("MLFLOW_TRACKING_URI")`` at import), and opens a
#: client there
FIRST_INSTRUCTION = """
import json
import mlflow, spark_tracking
from pyspark.ml.torch.distributor import TorchDistributor

def train_fn():
    import os

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    import mlflow
    import torch.distributed as dist

    dist.init_process_group("gloo")
    mlflow.MlflowClient(uri).get_experiment_by_name("lightning_logs")
    uris = [None] * dist.get_world_size()
    dist.all_gather_object(uris, uri)
    dist.destroy_process_group()
    return uris

with mlflow.start_run() as run:
    uris = TorchDistributor(local_mode=False, num_processes=2, use_gpu=False).run(train_fn)
assert spark_tracking.flush(60)
print(json.dumps(uris))
print(run.info.run_id)
spark.stop()
"""


def test_ranks_see_the_forwarding_store_from_their_first_instruction(tmp_path, sqlite_uri):
    """Executors configured like a cluster's (nothing of the driver's store in their environment,
    a HOME of their own): no rank ever sees, or creates, a store of the node's own."""
    home = executor_home(tmp_path)
    program = spark_session("local-cluster[2,1,1024]", {"HOME": home, "SPARK_TRACKING_TRACKING_URI": ""})
    *_, uris, run_id = run_on_cluster(program + FIRST_INSTRUCTION, sqlite_uri, tmp_path)
    assert json.loads(uris) == ["spark-tracking-task:"] * 2
    assert stores_under(home) == []
    client = mlflow.MlflowClient(sqlite_uri)
    assert [r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])] == [
        run_id
    ]
