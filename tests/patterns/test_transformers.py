"""Hugging Face ``transformers``' ``Trainer`` reporting to MLflow (its ``MLflowCallback``,
``report_to=["mlflow"]``) in a TorchDistributor train function, as its docs write it: a tiny GPT-2
built in code (no download), CPU, two ranks on local-cluster, executors with a HOME of their own.
The callback's run (rank 0's, named by ``run_name``, in the experiment ``MLFLOW_EXPERIMENT_NAME``
names, the callback's own setting) is a child of the driver's run, with the Trainer's arguments
as params and its ``loss`` at every logging step; no store is ever opened on an executor."""

from __future__ import annotations

import mlflow
import pytest

from .conftest import library_child_run, run_in_torch_distributor, stores_under

pytest.importorskip("torch")
pytest.importorskip(
    "transformers",
    reason="transformers is not installed (the patterns extra installs it; see setup.py for where it cannot)",
)

TRAIN_FN = """
def train_fn(output_dir):
    import os

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    os.environ["MLFLOW_EXPERIMENT_NAME"] = "hf_trainer"  # MLflowCallback's own setting
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, 32, (32, 8), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=output_dir,
        run_name="tiny-gpt2",
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=0.01,
        logging_steps=1,
        report_to=["mlflow"],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    if not trainer.is_world_process_zero():
        return None
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return mlflow.last_active_run().info.run_id, losses

"""


def test_transformers_trainer_reporting_to_mlflow_in_torch_distributor(tmp_path, sqlite_uri):
    output_dir = 'os.path.join(os.getcwd(), "hf-output")'
    (hf_run, losses), run_id, home = run_in_torch_distributor(TRAIN_FN, tmp_path, sqlite_uri, args=output_dir)
    client = mlflow.MlflowClient(sqlite_uri)
    run = library_child_run(client, "hf_trainer", hf_run, run_id)
    assert run.info.run_name == "tiny-gpt2"
    assert run.data.params["learning_rate"] == "0.01" and run.data.params["max_steps"] == "6"
    assert len(losses) == 6
    got = sorted((m.step, m.value) for m in client.get_metric_history(hf_run, "loss"))
    assert got == [(step, pytest.approx(loss, rel=1e-6)) for step, loss in losses]
    assert stores_under(home) == []
