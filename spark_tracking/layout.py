"""Where spark_tracking puts what it logs in an MLflow run: the one owner of the stored layout.

Everything that writes or reads these names goes through this module (the driver sink, the
vocabulary ``Run``, ``spark-tracking show``, the demo), so the layout is defined once.

Metrics forwarded from Spark tasks:

- the **worker id** of a task is its barrier rank (``RANK`` in processes a task started), else
  its partition id: :func:`worker_id`;
- when a stage has more than one task, worker ``w`` logs the series ``<key>/worker_<w>``
  (:func:`worker_metric_key`) and the driver adds their mean, step by step, as plain
  ``<key>``; a single-task stage logs plain ``<key>``, as a local run would.
  :func:`group_metrics` reads a run's keys back into (mean, workers) groups.
- workers' **system metrics** (``forwarding.task.system_metrics``) keep MLflow's names under
  ``system/`` and are always per worker, ``system/<name>/worker_<w>``, never averaged: plain
  ``system/<name>`` is MLflow's own series of the driver's machine (:func:`is_system_metric`).

The Azure ML vocabulary (``spark_tracking.Run``):

- texts logged with ``run.log(name, "text")``: the tag ``aml.text.<name>``, a JSON list
  (:func:`text_tag`, :func:`text_name`);
- tables: ``aml/tables/<name>.json`` from the driver, ``aml/tables/<name>/stage_<s>/worker_<w>.json``
  from a task (:func:`table_path`), each in the JSON ``mlflow.log_table`` writes (pandas
  ``split`` orientation: ``{"columns": [...], "data": [[...], ...]}``; :func:`encode_table`,
  :func:`decode_table`);
- images: ``aml/images/<name>.png`` from the driver, ``aml/images/<name>/stage_<s>/worker_<w>.png``
  from a task (:func:`image_path`); :func:`task_parts` finds a table's or image's task files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

#: tag prefix of texts logged with ``run.log(name, "text")``
TEXT_TAG_PREFIX = "aml.text."
#: artifact folder of tables (``log_row`` / ``log_table``)
TABLES_DIR = "aml/tables"
#: artifact folder of images (``log_image``)
IMAGES_DIR = "aml/images"

#: prefix of MLflow's system metrics (``system/cpu_utilization_percentage``, ...)
SYSTEM_PREFIX = "system/"

#: (stage id, worker id) of a task, for the files it writes
Part = tuple[int, int]

_WORKER_KEY = re.compile(r"^(?P<base>.+)/worker_(?P<worker>\d+)$")
_PART = re.compile(r"^stage_(\d+)/worker_(\d+)\.(json|png)$")


def worker_id(worker: Sequence) -> int:
    """The worker id of a task from its worker list ``[stage, partition, attempt, task_id,
    rank, ...]`` (the forwarding protocol's ``"w"``): the rank when set, else the partition."""
    rank = worker[4]
    return int(rank) if rank is not None else int(worker[1])


def worker_key_suffix(worker: int) -> str:
    """What a worker's series adds to a metric key, ``/worker_<n>`` (it counts against
    MLflow's key length limit)."""
    return f"/worker_{worker}"


def worker_metric_key(key: str, worker: int) -> str:
    """The key of worker ``worker``'s series of the metric ``key``: ``<key>/worker_<n>``."""
    return key + worker_key_suffix(worker)


def is_system_metric(key: str) -> bool:
    """Whether ``key`` is a system metric (MLflow's ``system/`` names): a worker logs it as its
    own series even in a single-task stage, and no mean across workers is added."""
    return key.startswith(SYSTEM_PREFIX)


def split_metric_key(key: str) -> tuple[str, int | None]:
    """``("loss", 3)`` for ``loss/worker_3``; ``(key, None)`` for any other key."""
    m = _WORKER_KEY.match(key)
    return (m.group("base"), int(m.group("worker"))) if m else (key, None)


def group_metrics(keys: Iterable[str]) -> dict[str, tuple[str | None, list[tuple[int, str]]]]:
    """base key -> (the aggregate key if stored, [(worker, key)] in worker order).
    ``x/worker_<n>`` is a worker series of ``x``; every other key is its own aggregate."""
    groups: dict[str, tuple[str | None, list[tuple[int, str]]]] = {}
    for key in set(keys):
        base, worker = split_metric_key(key)
        agg, workers = groups.get(base, (None, []))
        if worker is not None:
            workers.append((worker, key))
        else:
            agg = key
        groups[base] = (agg, workers)
    return {base: (agg, sorted(workers)) for base, (agg, workers) in sorted(groups.items())}


def text_tag(name: str) -> str:
    """The tag that holds the texts logged under ``name``."""
    return TEXT_TAG_PREFIX + name


def text_name(tag: str) -> str | None:
    """The text name a tag holds, or None when the tag is not a text tag."""
    return tag[len(TEXT_TAG_PREFIX) :] if tag.startswith(TEXT_TAG_PREFIX) else None


def table_folder(name: str) -> str:
    """The folder of the task-written files of table ``name``."""
    return f"{TABLES_DIR}/{name}"


def table_path(name: str, part: Part | None = None) -> str:
    """The artifact of table ``name``: the driver's (``part=None``) or one task's."""
    return _artifact_path(TABLES_DIR, name, part, "json")


def image_path(name: str, part: Part | None = None) -> str:
    """The artifact of image ``name``: the driver's (``part=None``) or one task's."""
    return _artifact_path(IMAGES_DIR, name, part, "png")


def _artifact_path(folder: str, name: str, part: Part | None, ext: str) -> str:
    if part is None:
        return f"{folder}/{name}.{ext}"
    stage, worker = part
    return f"{folder}/{name}/stage_{stage}/worker_{worker}.{ext}"


def task_parts(files: Iterable[str], folder: str, ext: str) -> list[str]:
    """The task-written files among ``files`` under ``folder`` (a table's or image's folder,
    e.g. ``aml/tables/<name>``) with extension ``ext``, in (stage, worker) order."""
    found = []
    prefix = folder + "/"
    for f in files:
        m = _PART.match(f[len(prefix) :]) if f.startswith(prefix) else None
        if m and m.group(3) == ext:
            found.append((int(m.group(1)), int(m.group(2)), f))
    return [f for _, _, f in sorted(found)]


def table_columns(rows: Iterable[dict]) -> list[str]:
    """Every column of ``rows``, in the order they first appear."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def encode_table(rows: list[dict]) -> bytes:
    """A table file: pandas ``split`` orientation, what ``mlflow.log_table`` writes for .json."""
    columns = table_columns(rows)
    return json.dumps({"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}).encode()


def decode_table(data: bytes) -> list[dict]:
    """The rows of a table file, as {column: value} (a missing cell is None)."""
    doc = json.loads(data)
    columns = doc.get("columns", [])
    return [dict(zip(columns, values)) for values in doc.get("data", [])]
