"""Where a :class:`spark_tracking.run.Run`'s calls go: one writer per process and run.

On the driver a :class:`DriverWriter` (``MlflowClient`` on the store; a series continues after
the steps already stored, a table after its stored rows), inside a Spark task a
:class:`TaskWriter` (the task's forwarding buffer through :mod:`spark_tracking.api`; steps count
from 0 per task, so the workers' steps line up for the driver's mean). :func:`writer_for` keeps
the one writer of each process and run, so a new ``Run`` object for the same run continues its
series. Where each call's data is stored is :mod:`spark_tracking.layout`.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Callable

from . import api, layout
from .store import RunReader, write_artifact_bytes
from .validation import MAX_METRICS_PER_BATCH, check_key, tag_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Writer:
    """What the logging calls share: the next step of each series, the texts and the rows
    logged so far (so a series, a text list and a table grow across calls). Subclasses say
    where things go and what the store already holds."""

    def __init__(self):
        self._steps: dict[str, int] = {}
        self._texts: dict[str, list[str]] = {}
        self._rows: dict[str, list[dict]] = {}

    # where things go, and what is there already
    def _stored_next_step(self, name: str) -> int:
        raise NotImplementedError

    def _stored_texts(self, tag: str) -> list[str]:
        raise NotImplementedError

    def _stored_rows(self, name: str) -> list[dict]:
        raise NotImplementedError

    def _part(self) -> layout.Part | None:
        raise NotImplementedError

    def _write_metrics(self, name: str, first_step: int, values: list[float], timestamp: int) -> None:
        raise NotImplementedError

    def _table_written(self, name: str, path: str) -> None:
        """Called after a table file was (re)written."""

    def set_tag(self, key: str, value: str) -> None:
        """Set the tag ``key`` of the run."""
        raise NotImplementedError

    def put_artifact(self, path: str, data: bytes) -> None:
        """Store ``data`` as the artifact ``path`` of the run."""
        raise NotImplementedError

    def upload_file(self, name: str, local_path: str) -> None:
        """Store the local file ``local_path`` as the artifact ``name``."""
        with open(local_path, "rb") as fh:
            self.put_artifact(name, fh.read())

    # the calls
    def log_numbers(self, name: str, values: list[float]) -> None:
        """The next points of the series ``name``, after the steps logged (or stored) so far."""
        first = self._steps.get(name)
        if first is None:
            first = self._stored_next_step(name)
        self._steps[name] = first + len(values)
        self._write_metrics(name, first, values, _now_ms())

    def log_texts(self, name: str, texts: list[str]) -> None:
        """Add ``texts`` to the text list ``name`` (a JSON list in the tag ``aml.text.<name>``)."""
        tag = layout.text_tag(name)
        check_key(tag, "tag")
        known = self._texts.get(name)
        if known is None:
            known = self._stored_texts(tag)
        value = tag_value(name, json.dumps(known + texts))
        self._texts[name] = known + texts
        self.set_tag(tag, value)

    def append_rows(self, name: str, rows: list[dict]) -> None:
        """Append ``rows`` to the table ``name`` and rewrite its file."""
        known = self._rows.get(name)
        if known is None:
            known = self._stored_rows(name)
        known = known + rows
        path = layout.table_path(name, self._part())
        self.put_artifact(path, layout.encode_table(known))
        self._rows[name] = known
        self._table_written(name, path)

    def log_image(self, name: str, png: bytes) -> None:
        """Store the PNG ``png`` as the image ``name``."""
        self.put_artifact(layout.image_path(name, self._part()), png)


class DriverWriter(Writer):
    """Writes to the store with ``MlflowClient``; series, texts and tables continue what the
    store holds for the run."""

    def __init__(self, client: MlflowClient, run_id: str):
        super().__init__()
        self.client, self.run_id = client, run_id
        self.reader = RunReader(client, run_id)
        self._tables_listed: set[str] = set()

    def _stored_next_step(self, name: str) -> int:
        return self.reader.next_step(name)

    def _stored_texts(self, tag: str) -> list[str]:
        raw = self.reader.get_run().data.tags.get(tag)
        return list(json.loads(raw)) if raw else []

    def _stored_rows(self, name: str) -> list[dict]:
        return self.reader.table_rows(layout.table_path(name))

    def _part(self) -> None:
        return None

    def _write_metrics(self, name: str, first_step: int, values: list[float], timestamp: int) -> None:
        from mlflow.entities import Metric

        for start in range(0, len(values), MAX_METRICS_PER_BATCH):
            chunk = values[start : start + MAX_METRICS_PER_BATCH]
            metrics = [Metric(name, v, timestamp, first_step + start + i) for i, v in enumerate(chunk)]
            self.client.log_batch(self.run_id, metrics=metrics)

    def _table_written(self, name: str, path: str) -> None:
        # once per table: what mlflow.log_table does, so the MLflow UI offers the file as a table
        if name in self._tables_listed:
            return
        logged = json.loads(self.reader.get_run().data.tags.get(_LOGGED_ARTIFACTS_TAG, "[]"))
        entry = {"path": path, "type": "table"}
        if entry not in logged:
            self.client.set_tag(self.run_id, _LOGGED_ARTIFACTS_TAG, json.dumps([*logged, entry]))
        self._tables_listed.add(name)

    def set_tag(self, key: str, value: str) -> None:
        """Set the tag ``key`` of the run on the store."""
        self.client.set_tag(self.run_id, key, value)

    def put_artifact(self, path: str, data: bytes) -> None:
        """Write ``data`` to the run's artifact ``path`` on the store."""
        write_artifact_bytes(self.client, self.run_id, path, data)

    def upload_file(self, name: str, local_path: str) -> None:
        """Upload a copy of the local file, named ``name``, with ``MlflowClient.log_artifact``."""
        directory, base = posixpath.split(name)
        with tempfile.TemporaryDirectory(prefix="spark-tracking-upload-") as tmp:
            local = os.path.join(tmp, base)  # the artifact takes the name, not the file's name
            shutil.copyfile(local_path, local)
            self.client.log_artifact(self.run_id, local, artifact_path=directory or None)


class TaskWriter(Writer):
    """Appends to this Spark task's forwarding buffer (``spark_tracking.api``); the relay logs
    it to the run bound to the job. Nothing is read from the store: every series, text list
    and table starts empty in each task, and tables and images are the task's own files."""

    def __init__(self, part: layout.Part):
        super().__init__()
        self.part = part
        self._verified: set[str] = set()

    def check_run(self, run_id: str) -> None:
        """Refuse a ``Run`` for another run than the task's: the relay would log its calls to
        the task's run, silently."""
        if run_id in self._verified:
            return
        bound = api.current_run_id()
        if bound is not None and bound != run_id:
            raise RuntimeError(
                f"Run {run_id} is not the run this Spark task logs to ({bound}): tasks log to the "
                f"run active on the driver when the job was submitted. Submit the job inside "
                f"`with mlflow.start_run(run_id={run_id!r})`, or use Run.get_context() in the task."
            )
        self._verified.add(run_id)

    def _stored_next_step(self, name: str) -> int:
        return 0

    def _stored_texts(self, tag: str) -> list[str]:
        return []

    def _stored_rows(self, name: str) -> list[dict]:
        return []

    def _part(self) -> layout.Part:
        return self.part

    def _write_metrics(self, name: str, first_step: int, values: list[float], timestamp: int) -> None:
        for i, v in enumerate(values):
            api.log_metric(name, v, step=first_step + i, timestamp=timestamp)

    def set_tag(self, key: str, value: str) -> None:
        """Forward the tag ``key`` to the task's run."""
        api.set_tag(key, value)

    def put_artifact(self, path: str, data: bytes) -> None:
        """Forward ``data`` as the artifact ``path`` of the task's run."""
        api.log_artifact_bytes(path, data)


# One writer per process and run, so a new Run object for the same run (Run.get_context() in
# every call) continues its series: ("driver", tracking URI, run id) on the driver; ("task",
# worker, pid) in a task, where only the current task's writer is kept.
_writers: dict[tuple, Writer] = {}
_writers_lock = threading.Lock()


def writer_for(key: tuple, make: Callable[[], Writer]) -> Writer:
    """The writer of ``key``, made by ``make`` on first use; a task's key replaces
    the writer of the previous task in this worker."""
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            if key[0] == "task":  # a new task in a reused worker: forget the previous one
                for old in [k for k in _writers if k[0] == "task"]:
                    del _writers[old]
            writer = _writers[key] = make()
        return writer
