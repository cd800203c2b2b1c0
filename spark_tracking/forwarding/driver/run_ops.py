"""Driver side of the run operations tasks request (``protocol.RUN_OPS``): create, read and end
runs, MLflow 3 logged models, and artifacts sent in chunks. The driver holds the credentials,
so a task's MLflow code works against the central store without any of its own.

Values cross the wire as JSON; MLflow entities as their protobuf messages (``encode`` /
``decode``), never pickled: a task can only make the driver build MLflow entities.

Artifacts: a task sends each file in chunks of at most ``chunk_bytes`` (one request at a time,
so a task holds one chunk in memory whatever the file size); the driver writes them to a file
in its temporary folder and, on commit, logs that file to the run's or logged model's artifact
store through its own ``MlflowClient`` (which has the credentials, e.g. azureml-mlflow's token).
At most ``protocol.MAX_TASK_ARTIFACT_BYTES`` per file.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import tempfile
import threading

from ..._compat import mlflow as mlflow_compat
from .. import protocol
from ..records import Worker, decode, encode

logger = logging.getLogger(__name__)

#: tags a child run takes from its parent: where the code that created it lives (a task would
#: name the PySpark worker)
_INHERITED_TAGS = (
    "mlflow.source.name",
    "mlflow.source.type",
    "mlflow.source.git.commit",
    "mlflow.databricks.notebookPath",
    "mlflow.user",
)
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def _relative_path(path) -> str:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise ValueError(f"artifact path {path!r} must be a relative path like 'model/MLmodel'")
    return path


# -- the handler -----------------------------------------------------------------------------


class RunOps:
    """Answers ``RUN_OPS`` for one forwarder. ``resolve(binding, worker)`` gives the run the
    task's driver thread has active; ``client_for(binding)`` the ``MlflowClient`` of its store;
    ``created(binding, worker, run_id)`` hears of each run a task creates."""

    def __init__(self, resolve, client_for, created=None):
        self.resolve = resolve
        self.client_for = client_for
        self.created = created  # created(binding, worker, run id): a task made a run
        self._uploads_dir: str | None = None
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}  # run id -> experiment id (parents)

    def handle(self, op: str, binding: str, worker: Worker, message: dict) -> dict:
        """The reply to one request: ``{"v": value}``; errors travel as values the task raises
        again as an MlflowException with MLflow's error code (INTERNAL_ERROR and the error's
        text for a failure on the driver, e.g. of its artifact store), never as a dropped
        connection the task would re-send the request after."""
        from mlflow.exceptions import MlflowException

        client = self.client_for(binding)
        try:
            return {"v": getattr(self, "_" + op)(client, binding, worker, message)}
        except MlflowException as exc:  # the task raises it again, with MLflow's error code
            return {"v": {"$err": exc.message, "code": exc.error_code}}
        except (ValueError, TypeError) as exc:
            return {"v": {"$err": str(exc), "code": "INVALID_PARAMETER_VALUE"}}
        except Exception as exc:  # the driver failed (its store, its disk): the task raises it
            logger.warning("spark_tracking: %r a task asked for failed on the driver", op, exc_info=True)
            return {"v": {"$err": f"the driver failed to {op}: {type(exc).__name__}: {exc}", "code": "INTERNAL_ERROR"}}

    # -- runs ----------------------------------------------------------------------------------

    def _get_run(self, client, binding, worker, message):
        run_id = message.get("r") or self.resolve(binding, worker)
        return encode(client.get_run(run_id))

    def _create_run(self, client, binding, worker, message):
        from mlflow.entities import RunTag

        tags = {str(k): str(v) for k, v in message.get("t") or []}
        parent_id = tags.get(protocol.PARENT_TAG) or self.resolve(binding, worker)
        tags[protocol.PARENT_TAG] = parent_id
        parent = client.get_run(parent_id)
        for key in _INHERITED_TAGS:
            if key in parent.data.tags:
                tags[key] = parent.data.tags[key]
            else:
                tags.pop(key, None)
        experiment_id = message.get("x")
        if not experiment_id or str(experiment_id) == "0":
            experiment_id = parent.info.experiment_id
        store = mlflow_compat.tracking_store(client)
        run = store.create_run(
            str(experiment_id),
            message.get("u") or parent.info.user_id,
            int(message.get("s") or 0) or None,
            [RunTag(k, v) for k, v in tags.items()],
            message.get("n") or None,
        )
        logger.debug("spark_tracking: created run %s for a Spark task (parent %s)", run.info.run_id, parent_id)
        if self.created is not None:
            self.created(binding, worker, run.info.run_id)
        return encode(run)

    def _update_run(self, client, binding, worker, message):
        from mlflow.entities import RunStatus

        store = mlflow_compat.tracking_store(client)
        info = store.update_run_info(
            str(message["r"]), RunStatus.from_string(message["s"]), message.get("e"), message.get("n") or None
        )
        return encode(info)

    def _store_call(self, client, binding, worker, message):
        method = message.get("m")
        if method not in protocol.STORE_CALLS:
            raise ValueError(f"store call {method!r} is not one a task may make")
        store = mlflow_compat.tracking_store(client)
        args = decode(message.get("a") or [])
        kwargs = decode({"$d": message.get("k") or []})
        return encode(getattr(store, method)(*args, **kwargs))

    # -- artifacts -----------------------------------------------------------------------------

    def _upload_path(self, upload_id) -> str:
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            raise ValueError(f"upload id {upload_id!r} is not 32 hex digits")
        with self._lock:
            if self._uploads_dir is None:
                self._uploads_dir = tempfile.mkdtemp(prefix="spark-tracking-uploads-")
        return os.path.join(self._uploads_dir, upload_id)

    def _artifact_chunk(self, client, binding, worker, message):
        path = self._upload_path(message.get("u"))
        offset, data = message.get("o"), base64.b64decode(message.get("d") or "")
        limit = protocol.MAX_TASK_ARTIFACT_BYTES
        if type(offset) is not int or offset < 0 or offset + len(data) > limit:
            raise ValueError(f"chunk at offset {offset!r} is outside the {limit} bytes a task may send per file")
        with open(path, "r+b" if os.path.exists(path) else "wb") as fh:
            fh.seek(offset)
            fh.write(data)
        return offset + len(data)

    def _artifact_commit(self, client, binding, worker, message):
        path = self._upload_path(message.get("u"))
        relative = _relative_path(message.get("p"))
        kind, target = message.get("k"), message.get("i")
        if kind not in ("runs", "models") or not isinstance(target, str) or not target:
            raise ValueError(f"artifact target {kind!r}/{target!r} is not a run or a logged model")
        if not os.path.exists(path):
            open(path, "wb").close()  # an empty file has no chunks
        size = os.path.getsize(path)
        if size != message.get("z"):
            os.remove(path)
            raise ValueError(f"artifact {relative!r}: {size} bytes arrived of {message.get('z')!r}")
        staging = tempfile.mkdtemp(prefix="spark-tracking-artifact-", dir=os.path.dirname(path))
        try:
            local = os.path.join(staging, *relative.split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            os.replace(path, local)
            if kind == "runs":
                client.log_artifacts(target, staging)
            else:
                client.log_model_artifacts(target, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def _artifact_root(self, client, message) -> str:
        kind, target = message.get("k"), message.get("i")
        if kind == "runs" and isinstance(target, str):
            return client.get_run(target).info.artifact_uri
        if kind == "models" and isinstance(target, str):
            return client.get_logged_model(target).artifact_location
        raise ValueError(f"artifact target {kind!r}/{target!r} is not a run or a logged model")

    def _artifact_list(self, client, binding, worker, message):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        path = message.get("p") or None
        return encode(
            get_artifact_repository(self._artifact_root(client, message)).list_artifacts(
                None if path is None else _relative_path(path)
            )
        )

    def _artifact_read(self, client, binding, worker, message):
        """Part of a file, at most ``chunk_bytes`` from offset "o"; the driver downloads the file
        once per read id "u" (the first part) and drops it after the last part."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        path = self._upload_path(message.get("u"))
        offset, length = message.get("o"), message.get("n")
        if type(offset) is not int or type(length) is not int or offset < 0 or not 0 < length <= 2**23:
            raise ValueError(f"read of {length!r} bytes at {offset!r} is out of bounds")
        if not os.path.exists(path):
            repo = get_artifact_repository(self._artifact_root(client, message))
            staging = tempfile.mkdtemp(dir=os.path.dirname(path))
            local = repo.download_artifacts(_relative_path(message.get("p")), dst_path=staging)
            os.replace(local, path)
            shutil.rmtree(staging, ignore_errors=True)
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        if len(data) < length:
            os.remove(path)
        return base64.b64encode(data).decode("ascii")

    def close(self) -> None:
        """Drop files of uploads and reads that never finished (a task that died)."""
        if self._uploads_dir is not None:
            shutil.rmtree(self._uploads_dir, ignore_errors=True)
