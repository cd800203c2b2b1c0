"""Fixtures of the vocabulary tests (their store is tests/conftest.py's ``store``: a configured
session on a fresh SQLite store)."""

from __future__ import annotations

import pytest


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
