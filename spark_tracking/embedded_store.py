"""The ``sqlite`` tracking-store plugin (``setup.py``'s ``mlflow.tracking_store`` entry point,
registered after MLflow's own builders, so it replaces theirs for the scheme): MLflow's own SQL
store, unchanged, except that the session's embedded store (``<home>/mlflow.db``) keeps its
artifacts in ``<home>/artifacts`` when MLflow gives it no artifact root.

Without it the root is ``./mlruns`` in whatever folder the process started in (MLflow 2.9.2 and
3.0.1), or what ``_MLFLOW_SERVER_ARTIFACT_ROOT`` says (3.17.2); that variable cannot be the way:
from MLflow 3.17.2 it marks the process and its subprocesses as a tracking server's, which refuses
artifact URIs that name a host (``abfss://``, ``https://``, ``hdfs://``...), e.g. loading a model
stored in ADLS (``_compat.mlflow.SERVER_ARTIFACT_ROOT_ENV``).

MLflow loads this module while it imports its store registry: nothing here imports MLflow at
module level.
"""

from __future__ import annotations

import os


def _path(uri: str | None) -> str | None:
    if not uri or not uri.startswith("sqlite:///"):
        return None
    return os.path.abspath(uri[len("sqlite:///") :].split("?", 1)[0])


def embedded_artifact_root(store_uri: str | None) -> str | None:
    """``<home>/artifacts`` when ``store_uri`` is this session's embedded store, else None."""
    from .config import ConfigError
    from .state import active_config

    try:
        cfg = active_config()
    except ConfigError:  # a bad setting is reported by configure(); the store works without us
        return None
    path = _path(store_uri)
    return cfg.embedded_artifact_root if path is not None and path == _path(cfg.embedded_store_uri) else None


def sqlite_store(store_uri: str | None = None, artifact_uri: str | None = None):
    """MLflow's SQL store for ``store_uri`` (see the module docstring)."""
    from ._compat.mlflow import build_sqlalchemy_store

    if artifact_uri is None:
        artifact_uri = embedded_artifact_root(store_uri)
    return build_sqlalchemy_store(store_uri, artifact_uri)
