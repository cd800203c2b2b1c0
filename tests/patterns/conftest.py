"""The task patterns of docs/patterns.md, written as the libraries' docs write them, on real
Spark (local-cluster) against a real MLflow store (SQLite)."""

from __future__ import annotations

import os

import mlflow
import pytest

import spark_tracking


@pytest.fixture
def store(sqlite_uri):
    spark_tracking.configure(tracking_uri=sqlite_uri)
    return mlflow.MlflowClient(sqlite_uri)


def model_name_kwargs(name: str) -> dict:
    """``log_model(model, name=...)`` on MLflow 3, ``artifact_path=...`` on MLflow 2."""
    return {"name": name} if int(mlflow.__version__.split(".")[0]) >= 3 else {"artifact_path": name}


def history(client, run_id: str, key: str) -> list:
    spark_tracking.flush()
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


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
