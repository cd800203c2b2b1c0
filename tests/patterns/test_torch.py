"""TorchDistributor as its docs write it (local_mode=False, 2 processes, CPU, DDP), plain
``mlflow.log_metric`` in ``train_fn``, package installed as the init script installs it
(startup hook on): every rank's points land in the driver's run, under the rank's worker id."""

import os
import subprocess
import sys
import textwrap

import mlflow
import pytest

from spark_tracking import hook

pytest.importorskip("torch")

DRIVER = textwrap.dedent("""
    import mlflow, spark_tracking
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())

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
        dist.destroy_process_group()
        return rank

    with mlflow.start_run() as run:
        TorchDistributor(local_mode=False, num_processes=2, use_gpu=False).run(train_fn)
    assert spark_tracking.flush(60)
    print(run.info.run_id)
    spark.stop()
""")


@pytest.mark.skipif(
    tuple(int(x) for x in __import__("pyspark").__version__.split(".")[:2]) < (4, 3),
    reason="known gap: before PySpark 4.3 the torchrun ranks a barrier task starts are not bound "
    "yet (they open an executor-local store); seen in .ci/matrix with pyspark 3.5.0 and 4.0.0",
)
def test_torch_distributor_ranks_log_into_the_driver_run(tmp_path, sqlite_uri):
    hook.enable()
    try:
        env = dict(
            os.environ,
            SPARK_TRACKING_TRACKING_URI=sqlite_uri,
            PYSPARK_PYTHON=sys.executable,
            PYSPARK_DRIVER_PYTHON=sys.executable,
        )
        out = subprocess.run(
            [sys.executable, "-c", DRIVER], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path
        )
    finally:
        hook.disable()
    assert out.returncode == 0, out.stderr[-4000:]
    run_id = out.stdout.strip().splitlines()[-1]
    client = mlflow.MlflowClient(sqlite_uri)
    for rank in range(2):
        got = [m.step for m in client.get_metric_history(run_id, f"ddp_loss/worker_{rank}")]
        assert sorted(got) == list(range(5)), f"rank {rank}: {sorted(client.get_run(run_id).data.metrics)}"
    # nothing in executor-local stores: no rank opened a store of its own
    assert (
        not list(tmp_path.rglob("mlruns"))
        and mlflow.MlflowClient(sqlite_uri)
        .search_runs([run.experiment_id for run in [client.get_experiment(client.get_run(run_id).info.experiment_id)]])[
            0
        ]
        .info.run_id
        == run_id
    )
