"""Artifacts logged inside Spark tasks: an MLflow artifact repository (entry point
``mlflow.artifact_repository``, scheme ``spark-tracking-artifacts``) that sends files to the
driver, which stores them in the run's or logged model's real artifact store.

The task store (``task_store``) gives runs and MLflow 3 logged models in a bound task the
artifact URI ``spark-tracking-artifacts:/runs/<run id>`` or ``.../models/<model id>``, so
``mlflow.log_artifact(s)``, ``log_text``, ``log_dict``, ``log_figure``, ``log_image``,
``log_table`` and ``mlflow.<flavor>.log_model`` all arrive here through MLflow's own registry.

Through the driver, not straight to the store: the driver holds the credentials (an AML
workspace's artifact service takes a token that only the driver has; executors of a cluster
often cannot reach the storage account at all), and the same path works on every store. Each
file goes in chunks (``executor.max_task_artifact_bytes()``, at most 4 MiB) of one request
each, so a task holds one chunk in memory whatever the file's size; the driver writes chunks to
its local disk and uploads the whole file with its ``MlflowClient``. At most
``protocol.MAX_TASK_ARTIFACT_BYTES`` (2 GiB) per file; a larger file is refused at the call with
the fix. Reads (listing, downloading: ``log_table`` appends to an existing table) come from
the driver the same way, a chunk at a time. Models logged in a task load on the driver with
``mlflow.<flavor>.load_model(f"runs:/{run_id}/model")``.
"""

from __future__ import annotations

import base64
import os
import posixpath
import uuid

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from .. import protocol
from ..protocol import ARTIFACT_SCHEME
from . import executor
from .run_requests import request


def _parse(uri: str) -> tuple[str, str, str]:
    """``spark-tracking-artifacts:/runs/<id>/<sub path>`` -> (kind, id, sub path)."""
    rest = uri[len(ARTIFACT_SCHEME) + 1 :].lstrip("/")
    kind, _, rest = rest.partition("/")
    target, _, sub = rest.partition("/")
    if kind not in ("runs", "models") or not target:
        raise MlflowException(f"{uri!r} is not a spark_tracking task artifact URI")
    return kind, target, sub.strip("/")


class TaskArtifactRepository(ArtifactRepository):
    """Artifacts of a run or logged model, written from a Spark task through the driver."""

    def __init__(self, artifact_uri, *args, **kwargs):
        super().__init__(artifact_uri, *args, **kwargs)
        self.kind, self.target, self.base = _parse(artifact_uri)

    def _destination(self, artifact_path, name: str) -> str:
        parts = [p for p in (self.base, (artifact_path or "").strip("/"), name) if p]
        return posixpath.join(*parts)

    def _send(self, local_file: str, destination: str) -> None:
        size = os.path.getsize(local_file)
        limit = protocol.MAX_TASK_ARTIFACT_BYTES
        if size > limit:
            raise MlflowException(
                f"artifact {local_file!r} is {size} bytes; a Spark task sends at most {limit} bytes "
                f"({limit / 2**30:g} GiB) per file to the driver. Write larger files to shared storage "
                f"(a Unity Catalog volume, /dbfs) and log them from the driver with mlflow.log_artifact",
                error_code=INVALID_PARAMETER_VALUE,
            )
        upload = uuid.uuid4().hex
        chunk = executor.max_task_artifact_bytes()
        with open(local_file, "rb") as fh:
            offset = 0
            while True:
                data = fh.read(chunk)
                if not data:
                    break
                request("artifact_chunk", {"u": upload, "o": offset, "d": base64.b64encode(data).decode("ascii")})
                offset += len(data)
        # the driver uploads the whole file to the store now: allow it time by size
        request(
            "artifact_commit",
            {"u": upload, "k": self.kind, "i": self.target, "p": destination, "z": size},
            timeout=120.0 + size / 2**20,
        )

    def log_artifact(self, local_file, artifact_path=None):
        """Send one file to the driver (see the module docstring)."""
        self._send(local_file, self._destination(artifact_path, os.path.basename(local_file)))

    def log_artifacts(self, local_dir, artifact_path=None):
        """Send every file under ``local_dir``, one at a time."""
        for root, _, files in os.walk(local_dir):
            relative = os.path.relpath(root, local_dir)
            for name in sorted(files):
                sub = name if relative == "." else posixpath.join(*relative.split(os.sep), name)
                self._send(os.path.join(root, name), self._destination(artifact_path, sub))

    def list_artifacts(self, path=None):
        """The artifacts under ``path``, as the driver's store lists them."""
        sub = self._destination(None, (path or "").strip("/")) or None
        infos = request("artifact_list", {"k": self.kind, "i": self.target, "p": sub})
        if self.base:  # paths relative to this repository's root
            from mlflow.entities import FileInfo

            infos = [FileInfo(posixpath.relpath(f.path, self.base), f.is_dir, f.file_size) for f in infos]
        return infos

    def _download_file(self, remote_file_path, local_path):
        read, offset, chunk = uuid.uuid4().hex, 0, executor.max_task_artifact_bytes()
        with open(local_path, "wb") as fh:
            while True:
                data = base64.b64decode(
                    request(
                        "artifact_read",
                        {
                            "u": read,
                            "k": self.kind,
                            "i": self.target,
                            "p": self._destination(None, remote_file_path),
                            "o": offset,
                            "n": chunk,
                        },
                    )
                )
                fh.write(data)
                offset += len(data)
                if len(data) < chunk:
                    break
