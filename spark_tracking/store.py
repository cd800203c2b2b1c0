"""A run in the MLflow store, through ``MlflowClient``: one reader, and writing bytes as an artifact.

:class:`RunReader` reads a run back in spark_tracking's layout (:mod:`spark_tracking.layout`):
metric series, texts, tables and images. ``Run.get_metrics``, ``spark-tracking show`` and the
demo's summary all read through it. It talks to the store, so it is for the driver (or any
process holding the store's credentials), never for Spark tasks.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile

from . import layout

logger = logging.getLogger(__name__)


def write_artifact_bytes(client, run_id: str, artifact_path: str, data: bytes) -> None:
    """Store ``data`` as the artifact ``artifact_path`` (run-relative) of run ``run_id``."""
    directory, name = posixpath.split(artifact_path)
    with tempfile.TemporaryDirectory(prefix="spark-tracking-artifact-") as tmp:
        local = os.path.join(tmp, name)
        with open(local, "wb") as fh:
            fh.write(data)
        client.log_artifact(run_id, local, artifact_path=directory or None)


class RunReader:
    """Reads run ``run_id`` through ``client`` (an ``MlflowClient``), in spark_tracking's layout.

    Every method reads the store when called (nothing is cached), so it sees what was logged
    up to then. Artifact downloads run without MLflow's progress bar
    (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` unless set): a table part is one small file.
    """

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id

    # -- run, metrics, texts -------------------------------------------------------------------

    def get_run(self):
        """The run (``mlflow.entities.Run``): info, params, tags, latest metric values."""
        return self.client.get_run(self.run_id)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """The points of metric ``key`` as (step, value), in step order (ties by timestamp)."""
        history = sorted(self.client.get_metric_history(self.run_id, key), key=lambda m: (m.step, m.timestamp))
        return [(m.step, m.value) for m in history]

    def next_step(self, key: str) -> int:
        """The step after the last stored point of ``key`` (0 for a new metric)."""
        return max((step for step, _ in self.metric_history(key)), default=-1) + 1

    def metrics(self, run=None, only: str | None = None) -> dict[str, list[tuple[int, float]]]:
        """Every metric key (or just ``only``) -> its points, see :meth:`metric_history`.
        ``run``: the run as read already (saves a request)."""
        run = run or self.get_run()
        return {key: self.metric_history(key) for key in sorted(run.data.metrics) if only in (None, key)}

    def texts(self, run=None, only: str | None = None) -> dict[str, list[str]]:
        """Every text name (or just ``only``) -> the texts logged under it, in order."""
        import json

        run = run or self.get_run()
        out = {}
        for tag, raw in sorted(run.data.tags.items()):
            name = layout.text_name(tag)
            if name is not None and only in (None, name):
                out[name] = list(json.loads(raw))
        return out

    # -- artifacts -----------------------------------------------------------------------------

    def list_artifacts(self, path: str) -> list:
        """The entries (``FileInfo``) directly under ``path``; none for a missing folder."""
        try:
            return self.client.list_artifacts(self.run_id, path)
        except Exception:  # noqa: BLE001 - artifact stores raise different errors for a missing folder
            return []

    def files(self, path: str = "") -> list[str]:
        """Every artifact file under ``path`` (run-relative paths), depth first."""
        found: list[str] = []
        for entry in self.list_artifacts(path):
            found.extend(self.files(entry.path) if entry.is_dir else [entry.path])
        return found

    def read_artifact(self, path: str) -> bytes | None:
        """The bytes of the artifact ``path``, or None when there is no such file."""
        if path not in {e.path for e in self.list_artifacts(posixpath.dirname(path))}:
            return None
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory(prefix="spark-tracking-read-") as tmp:
            local = self.client.download_artifacts(self.run_id, path, tmp)
            with open(local, "rb") as fh:
                return fh.read()

    def table_rows(self, path: str) -> list[dict]:
        """The rows of the table file ``path`` ([] when it does not exist)."""
        data = self.read_artifact(path)
        return layout.decode_table(data) if data is not None else []

    def tables(self, only: str | None = None) -> dict[str, dict[str, list]]:
        """Every table (or just ``only``) -> {column: [values]}: the driver's rows first, then
        each task's in (stage, worker) order. JSON types are kept; a missing cell is None."""
        names = []
        for entry in self.list_artifacts(layout.TABLES_DIR):
            base = posixpath.basename(entry.path)
            name = base if entry.is_dir else base[: -len(".json")] if base.endswith(".json") else None
            if name is not None and only in (None, name) and name not in names:
                names.append(name)
        out = {}
        for name in sorted(names):
            rows = self.table_rows(layout.table_path(name))
            folder = layout.table_folder(name)
            for part in layout.task_parts(self.files(folder), folder, "json"):
                rows += self.table_rows(part)
            out[name] = {c: [row.get(c) for row in rows] for c in layout.table_columns(rows)}
        return out

    def images(self, only: str | None = None) -> dict[str, list[str]]:
        """Every image (or just ``only``) -> its artifact paths: the driver's first, then each
        task's in (stage, worker) order."""
        images: dict[str, list[str]] = {}
        for entry in self.list_artifacts(layout.IMAGES_DIR):
            base = posixpath.basename(entry.path)
            if entry.is_dir:
                paths = layout.task_parts(self.files(entry.path), entry.path, "png")
                if paths:
                    images.setdefault(base, []).extend(paths)
            elif base.endswith(".png"):
                images.setdefault(base[: -len(".png")], []).insert(0, entry.path)
        return {k: v for k, v in sorted(images.items()) if only in (None, k)}
