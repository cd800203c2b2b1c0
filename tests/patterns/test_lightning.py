"""PyTorch Lightning's ``MLFlowLogger`` in a TorchDistributor train function, as Lightning's docs
write it (``MLFlowLogger(experiment_name=...)``, the tracking URI left at its default, Lightning
imported before mlflow): CPU, gloo, two ranks on local-cluster, executors with a HOME of their
own and nothing of the driver's store in their environment, as on a cluster. Lightning's own
run is a child of the driver's run, in the experiment it names, with its hyperparameters and
rank 0's full ``train_loss`` series; no store is ever opened on an executor."""

from __future__ import annotations

import mlflow
import pytest

from .conftest import library_child_run, run_in_torch_distributor, stores_under

pytest.importorskip("torch")
pytest.importorskip(
    "lightning",
    reason="lightning is not installed (the patterns extra installs it; see setup.py for where it cannot)",
)

TRAIN_FN = """
def train_fn():
    import lightning as L
    import torch
    from lightning.pytorch.loggers import MLFlowLogger

    class Regression(L.LightningModule):
        def __init__(self, lr=0.05, hidden=4):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)
            self.losses = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            self.losses.append(loss.item())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    logger = MLFlowLogger(experiment_name="lightning_logs")
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        num_nodes=2,
        strategy="ddp",
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Regression()
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
    return logger.run_id, model.losses

"""


def test_lightning_mlflow_logger_in_torch_distributor(tmp_path, sqlite_uri):
    (lightning_run, losses), run_id, home = run_in_torch_distributor(TRAIN_FN, tmp_path, sqlite_uri)
    client = mlflow.MlflowClient(sqlite_uri)
    run = library_child_run(client, "lightning_logs", lightning_run, run_id)
    assert run.data.params == {"lr": "0.05", "hidden": "4"}
    assert len(losses) == 8  # 32 rows per rank, batches of 8, two epochs
    got = sorted((m.step, m.value) for m in client.get_metric_history(lightning_run, "train_loss"))
    assert got == list(enumerate(losses))
    assert stores_under(home) == []
