"""Fixtures of the vocabulary tests: a configured session on a fresh SQLite store."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(sqlite_uri):
    """spark_tracking configured on a fresh SQLite store; the MlflowClient to check it with."""
    import mlflow

    import spark_tracking

    spark_tracking.configure(tracking_uri=sqlite_uri)
    return mlflow.MlflowClient(sqlite_uri)


@pytest.fixture
def png(tmp_path):
    """A small PNG file (3 × 2 pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.03, 0.02), dpi=100)
    path = tmp_path / "small.png"
    fig.savefig(path, format="png")
    return path
