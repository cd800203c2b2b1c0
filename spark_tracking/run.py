"""The Azure ML run vocabulary (``Run.get_context()``, ``run.log``, ``run.log_row``, ...) on MLflow.

Code written for AML's ``azureml.core.Run`` keeps working: every call becomes plain MLflow on
the run, so the results are visible in AML studio, the MLflow UI and ``spark-tracking show``.
The same calls work inside Spark tasks, where they go through ``spark_tracking.api`` and are
forwarded to the driver's run (metrics as ``<key>/worker_<n>`` plus their mean ``<key>``).

How each call is stored (docs/vocabulary.md has the table):

- ``log(name, number)``: a point of the MLflow metric ``name``. Each call is the next step
  (0, 1, 2, ...), so repeated calls build a series. On the driver the series continues after
  the steps already in the store; in a task it counts from 0 per task attempt, so the workers'
  steps line up and the driver's mean is taken step by step.
- ``log(name, text)``: MLflow metrics are numbers, so text goes to the tag ``aml.text.<name>``
  holding a JSON list of every text value logged under that name (MLflow's tag limit of 8000
  characters applies to the list). In tasks the list is per task; tasks logging the same name
  overwrite each other's tag (the last one wins).
- ``log_list(name, values)``: numbers become one series (steps continuing as for ``log``),
  written in one request; texts extend ``aml.text.<name>``.
- ``log_row(name, **columns)`` / ``log_table(name, {col: [...]})``: rows appended to a table
  stored as an ``mlflow.log_table``-compatible JSON artifact (pandas ``split`` orientation:
  ``{"columns": [...], "data": [[...], ...]}``): ``aml/tables/<name>.json`` from the driver
  (also listed in the ``mlflow.loggedArtifacts`` tag, as ``mlflow.log_table`` does, so the
  MLflow UI shows it as a table), and ``aml/tables/<name>/stage_<s>/worker_<w>.json`` from a
  task (that task's rows; a retried task replaces its failed attempt's rows). Tables are not
  metrics: they never count against a store's metric quotas.
- ``log_image(name, path=|plot=)``: a PNG artifact ``aml/images/<name>.png`` (driver) or
  ``aml/images/<name>/stage_<s>/worker_<w>.png`` (task).
- ``tag(key, value)``: the MLflow tag ``key`` (``value=None`` stores an empty string, as AML).
- ``upload_file(name, path)``: the artifact ``name`` (a run-relative path).
- ``get_metrics()``: rebuilt in AML's shape: a metric with one point is a ``float``, a series
  a list of floats in step order; text a ``str`` or list of ``str``; a table a dict of column
  lists (JSON types kept: ints stay ints; missing cells are ``None``); an image its artifact
  path (or a list of paths, one per task).
- ``parent``: the run named by the tag ``mlflow.parentRunId`` (MLflow's nested runs).
- ``complete()``: ends the run with status FINISHED.

Reading the store (``get_metrics``, ``get_file_names``, ``parent``, ``complete``) is for the
driver: executors hold no credentials. On the driver the calls use ``MlflowClient`` on the
run's id, so a ``Run`` need not be the active run; ``get_metrics`` first flushes what tasks
forwarded, so it sees everything logged before it was called.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import api
from .validation import InvalidInput, check_key, metric_value, tag_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

__all__ = ["IMAGES_DIR", "TABLES_DIR", "TEXT_TAG_PREFIX", "InvalidInput", "Run"]

#: tag prefix of text values logged with ``run.log(name, "text")``
TEXT_TAG_PREFIX = "aml.text."
#: artifact folder of tables (``log_row`` / ``log_table``)
TABLES_DIR = "aml/tables"
#: artifact folder of images (``log_image``)
IMAGES_DIR = "aml/images"
_PARENT_TAG = "mlflow.parentRunId"
_LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILE_NAME_RE = re.compile(r"^[\w.\- :]+$")
_PART_RE = re.compile(r"^stage_(\d+)/worker_(\d+)\.(json|png)$")


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- per-process state: next steps, text lists, task rows ------------------------------------
# Kept per scope: ("driver", uri, run_id) on the driver, seeded from the store on first use, so
# a new Run object continues a series; ("task", worker) in a task, where there is no store to
# read and everything starts empty. Only the current task's scope is kept in a worker.


class _Scope:
    __slots__ = ("rows", "steps", "tables_listed", "texts", "verified")

    def __init__(self):
        self.verified: set[str] = set()
        self.steps: dict[str, int] = {}
        self.texts: dict[str, list[str]] = {}
        self.rows: dict[str, list[dict]] = {}
        self.tables_listed: set[str] = set()


_scopes: dict[tuple, _Scope] = {}
_scopes_lock = threading.Lock()


def _scope(key: tuple) -> _Scope:
    with _scopes_lock:
        scope = _scopes.get(key)
        if scope is None:
            if key[0] == "task":  # a new task in a reused worker: forget the previous one
                for old in [k for k in _scopes if k[0] == "task"]:
                    del _scopes[old]
            scope = _scopes[key] = _Scope()
        return scope


# -- validation ------------------------------------------------------------------------------


def _check_file_name(name, kind: str) -> str:
    """Names that become one artifact file name: no folders, MLflow's characters."""
    check_key(name, kind)
    if not _FILE_NAME_RE.match(name) or name in (".", ".."):
        raise InvalidInput(
            f"{kind} name {name!r} becomes an artifact file name: use letters, digits, "
            "underscores (_), dashes (-), periods (.), spaces and colons, no slashes"
        )
    return name


def _cell(table: str, column: str, value):
    """A table cell as a JSON value (numbers, text, bool, None); numpy scalars unwrapped."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if item is not None:
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError):
            pass
        else:
            if value is None or isinstance(value, (bool, int, float, str)):
                return value
    raise InvalidInput(
        f"table {table!r} column {column!r} got {value!r} ({type(value).__name__}); a cell must be "
        "a number, a string, a bool or None"
    )


def _classify(name: str, values: list) -> tuple[str, list]:
    """('number', floats) or ('text', strs) for log/log_list values; refuses anything else."""
    if values and all(isinstance(v, str) for v in values):
        return "text", list(values)
    numbers = []
    for v in values:
        if isinstance(v, str):
            raise InvalidInput(f"log_list({name!r}) mixes text and numbers; log them under two names")
        if isinstance(v, bool) or v is None:
            raise InvalidInput(
                f"run.log({name!r}) got {v!r} ({type(v).__name__}); a value must be a number "
                "(int or float, NaN and inf allowed) or a string. Log a flag as 0/1 or as text."
            )
        try:
            numbers.append(metric_value(name, v))
        except InvalidInput:
            raise InvalidInput(
                f"run.log({name!r}) got {v!r} ({type(v).__name__}); a value must be a number "
                "(int or float, NaN and inf allowed) or a string"
            ) from None
    return "number", numbers


def _table_json(columns: list[str], rows: list[dict]) -> bytes:
    """pandas ``split`` orientation, what ``mlflow.log_table`` writes for a .json table."""
    return json.dumps({"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}).encode()


def _columns_of(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for c in row:
            if c not in columns:
                columns.append(c)
    return columns


def _read_table(data: bytes) -> list[dict]:
    doc = json.loads(data)
    columns = doc.get("columns", [])
    return [dict(zip(columns, values)) for values in doc.get("data", [])]


def _to_png(name: str, path=None, plot=None) -> bytes:
    if (path is None) == (plot is None):
        raise InvalidInput(
            f"log_image({name!r}) takes exactly one of path= (a PNG file) or plot= (a matplotlib figure or pyplot)"
        )
    if path is not None:
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InvalidInput(f"log_image({name!r}): cannot read {path!r}: {exc.strerror}") from None
        if not data.startswith(_PNG_SIGNATURE):
            raise InvalidInput(f"log_image({name!r}): {path!r} is not a PNG file; save the image as PNG")
        return data
    savefig = getattr(plot, "savefig", None)
    if savefig is None:
        raise InvalidInput(
            f"log_image({name!r}): plot= must be a matplotlib Figure (or pyplot), not {type(plot).__name__}"
        )
    buf = io.BytesIO()
    savefig(buf, format="png")
    return buf.getvalue()


def _shape(values: list):
    """AML's shape: one value as itself, several as a list."""
    return values[0] if len(values) == 1 else list(values)


class Run:
    """An MLflow run with Azure ML's ``Run`` vocabulary.

    Get one with :meth:`Run.get_context` (the current run: the driver's active run, or inside
    a Spark task the run the task forwards to), :meth:`Run.start_logging` (a new interactive
    run) or ``Run(run_id)``. A ``Run`` sent to Spark tasks (in a closure) logs there through
    the forwarding relay to the run bound to the job.

    Driver-side calls use the tracking URI MLflow resolves (``tracking_uri=`` overrides it:
    argument > ``mlflow.set_tracking_uri`` / ``MLFLOW_TRACKING_URI`` as configured by
    ``spark_tracking.configure``).
    """

    def __init__(self, run_id: str | None = None, *, tracking_uri: str | None = None):
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise InvalidInput(f"run id {run_id!r} must be a non-empty string")
        self._id = run_id
        self._tracking_uri = tracking_uri
        self._client_obj: MlflowClient | None = None

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def get_context(cls) -> Run:
        """The current run. Inside a Spark task bound to a driver run: that run (its id is
        asked of the relay on first use of ``run.id``). On the driver: the active MLflow run,
        started (as ``mlflow.log_metric`` would) when there is none."""
        if api.in_task():
            return cls(None)
        import mlflow

        run = mlflow.active_run() or mlflow.start_run()
        return cls(run.info.run_id)

    @classmethod
    def start_logging(
        cls, run_name: str | None = None, *, tags: Mapping[str, Any] | None = None, experiment_name: str | None = None
    ) -> Run:
        """Start an interactive run (``mlflow.start_run``) and return it; it becomes the active
        run, so Spark jobs submitted afterwards forward to it. When a run is already active the
        new one is its child (nested run). ``experiment_name`` default: the session's."""
        if api.in_task():
            raise RuntimeError(
                "Run.start_logging() starts a run on the driver; inside a Spark task "
                "use Run.get_context(), which logs to the driver's run"
            )
        import mlflow

        experiment_id = None
        if experiment_name is not None:
            experiment = mlflow.get_experiment_by_name(experiment_name)
            experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(experiment_name)
        run = mlflow.start_run(
            run_name=run_name,
            nested=mlflow.active_run() is not None,
            experiment_id=experiment_id,
            tags={k: tag_value(k, v) for k, v in (tags or {}).items()} or None,
        )
        return cls(run.info.run_id)

    def child_run(self, name: str | None = None) -> Run:
        """A new run whose parent is this one (tag ``mlflow.parentRunId``), in the same
        experiment. It is not made active; log to it through the returned ``Run``."""
        self._driver_only("child_run()")
        client = self._client()
        parent = client.get_run(self.id)
        tags = {_PARENT_TAG: self.id}
        child = client.create_run(parent.info.experiment_id, tags=tags, run_name=name)
        return Run(child.info.run_id, tracking_uri=self._tracking_uri)

    # -- identity ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The MLflow run id."""
        if self._id is None:
            run_id = api.current_run_id()
            if run_id is None:
                raise RuntimeError(
                    "this Spark task's run is unknown: the relay did not answer "
                    "(see the executor log for spark_tracking warnings)"
                )
            self._id = run_id
        return self._id

    @property
    def parent(self) -> Run | None:
        """The parent run (tag ``mlflow.parentRunId``), or None for a top-level run."""
        self._driver_only("run.parent")
        parent_id = self._client().get_run(self.id).data.tags.get(_PARENT_TAG)
        return Run(parent_id, tracking_uri=self._tracking_uri) if parent_id else None

    @property
    def name(self) -> str | None:
        """The run name (tag ``mlflow.runName``)."""
        self._driver_only("run.name")
        return self._client().get_run(self.id).info.run_name

    def __repr__(self) -> str:
        return f"Run(id={self._id!r})" if self._id else "Run(<this task's run>)"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self):
        # a Run sent to tasks carries its id only; the client and caches stay on the driver
        return (Run, (self._id,), {"_tracking_uri": self._tracking_uri})

    def __setstate__(self, state):
        self._tracking_uri = state.get("_tracking_uri")
        self._client_obj = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not api.in_task():
            self.complete() if exc_type is None else self.fail()

    # -- plumbing ----------------------------------------------------------------------------

    def _client(self):
        if self._client_obj is None:
            from mlflow import MlflowClient

            self._client_obj = MlflowClient(self._tracking_uri)
        return self._client_obj

    def _driver_only(self, what: str) -> None:
        if api.in_task():
            raise RuntimeError(
                f"{what} reads the tracking store, which Spark tasks cannot reach "
                "(executors hold no credentials); call it on the driver"
            )

    def _scope(self) -> tuple[_Scope, tuple | None]:
        """This process's state for the run, and the worker (stage, worker id) in a task."""
        if api.in_task():
            from .forwarding import executor

            binding = executor.current_binding()
            assert binding is not None, "in_task() means a binding"
            w = binding.worker
            worker_id = w[4] if w[4] is not None else w[1]
            scope = _scope(("task", tuple(w), os.getpid()))
            if self._id is not None and self._id not in scope.verified:
                self._check_bound_run()
                scope.verified.add(self._id)
            return scope, (w[0], worker_id)
        return _scope(("driver", self._client().tracking_uri, self.id)), None

    def _check_bound_run(self) -> None:
        # the relay logs a task's calls to the run bound to its job; a Run sent to the task
        # for another run would silently log to the wrong one
        bound = api.current_run_id()
        if bound is not None and bound != self._id:
            raise RuntimeError(
                f"Run {self._id} is not the run this Spark task logs to ({bound}): tasks log to the "
                f"run active on the driver when the job was submitted. Submit the job inside "
                f"`with mlflow.start_run(run_id={self._id!r})`, or use Run.get_context() in the task."
            )

    def _next_steps(self, scope: _Scope, name: str, count: int) -> int:
        first = scope.steps.get(name)
        if first is None:
            first = 0
            if not api.in_task():  # continue the series already in the store
                history = self._client().get_metric_history(self.id, name)
                first = max((m.step for m in history), default=-1) + 1
        scope.steps[name] = first + count
        return first

    def _put_artifact(self, path: str, data: bytes) -> None:
        if api.in_task():
            self._scope()  # checks the run
            api.log_artifact_bytes(path, data)
            return
        from .forwarding.sink import write_artifact_bytes

        write_artifact_bytes(self._client(), self.id, path, data)

    # -- logging -----------------------------------------------------------------------------

    def log(self, name: str, value, description: str = "") -> None:
        """Log a number (the next point of the series ``name``) or a string (kept in the tag
        ``aml.text.<name>``). ``description`` is accepted for AML compatibility and unused."""
        check_key(name, "metric")
        self._log_values(name, [value])

    def log_list(self, name: str, value: Iterable, description: str = "") -> None:
        """Log a list of numbers (one series, one request) or of strings under ``name``."""
        check_key(name, "metric")
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise InvalidInput(f"log_list({name!r}) takes a list of numbers or strings, not {type(value).__name__}")
        values = list(value)
        if not values:
            raise InvalidInput(f"log_list({name!r}) got an empty list; nothing to log")
        self._log_values(name, values)

    def _log_values(self, name: str, values: list) -> None:
        kind, clean = _classify(name, values)
        scope, _ = self._scope()
        if kind == "text":
            self._log_text(scope, name, clean)
            return
        ts = _now_ms()
        first = self._next_steps(scope, name, len(clean))
        if api.in_task():
            for i, v in enumerate(clean):
                api.log_metric(name, v, step=first + i, timestamp=ts)
            return
        from mlflow.entities import Metric

        client = self._client()
        for start in range(0, len(clean), 1000):  # MLflow's log_batch limit
            client.log_batch(
                self.id,
                metrics=[Metric(name, v, ts, first + start + i) for i, v in enumerate(clean[start : start + 1000])],
            )

    def _log_text(self, scope: _Scope, name: str, texts: list[str]) -> None:
        key = TEXT_TAG_PREFIX + name
        check_key(key, "tag")
        known = scope.texts.get(name)
        if known is None:
            known = []
            if not api.in_task():
                raw = self._client().get_run(self.id).data.tags.get(key)
                known = list(json.loads(raw)) if raw else []
        value = tag_value(name, json.dumps(known + texts))
        scope.texts[name] = known + texts
        if api.in_task():
            api.set_tag(key, value)
        else:
            self._client().set_tag(self.id, key, value)

    def log_row(self, name: str, description: str | None = None, **columns) -> None:
        """Append one row to the table ``name``: ``run.log_row("metrics", epoch=1, acc=0.9)``."""
        _check_file_name(name, "table")
        if not columns:
            raise InvalidInput(f"log_row({name!r}) got no columns; pass them as keywords, e.g. epoch=1")
        self._append_rows(name, [{c: _cell(name, c, v) for c, v in columns.items()}])

    def log_table(self, name: str, value: Mapping[str, Iterable], description: str = "") -> None:
        """Append the rows of ``{column: [values...]}`` (columns of equal length) to the
        table ``name`` (the same table ``log_row`` builds)."""
        _check_file_name(name, "table")
        if not isinstance(value, Mapping) or not value:
            raise InvalidInput(
                f"log_table({name!r}) takes a non-empty dict of column name -> list "
                f"of values, not {type(value).__name__}"
            )
        cols = {}
        for c, vals in value.items():
            if not isinstance(c, str) or isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
                raise InvalidInput(f"log_table({name!r}) column {c!r} must be a string name with a list of values")
            cols[c] = list(vals)
        lengths = {c: len(v) for c, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise InvalidInput(
                f"log_table({name!r}) columns have different lengths {lengths}; every column needs one value per row"
            )
        n = next(iter(lengths.values()))
        self._append_rows(name, [{c: _cell(name, c, cols[c][i]) for c in cols} for i in range(n)])

    def _append_rows(self, name: str, rows: list[dict]) -> None:
        scope, worker = self._scope()
        if worker is None:
            path = f"{TABLES_DIR}/{name}.json"
            known = scope.rows.get(name)
            if known is None:
                known = self._download_table(path)
        else:
            path = f"{TABLES_DIR}/{name}/stage_{worker[0]}/worker_{worker[1]}.json"
            known = scope.rows.get(name, [])
        known = known + rows
        self._put_artifact(path, _table_json(_columns_of(known), known))
        scope.rows[name] = known
        if worker is None and name not in scope.tables_listed:
            self._list_as_logged_table(path)
            scope.tables_listed.add(name)

    def _download_table(self, path: str) -> list[dict]:
        data = self._read_artifact(path)
        return _read_table(data) if data is not None else []

    def _list_as_logged_table(self, path: str) -> None:
        # what mlflow.log_table does, so the MLflow UI offers the file as a table
        client = self._client()
        logged = json.loads(client.get_run(self.id).data.tags.get(_LOGGED_ARTIFACTS_TAG, "[]"))
        entry = {"path": path, "type": "table"}
        if entry not in logged:
            client.set_tag(self.id, _LOGGED_ARTIFACTS_TAG, json.dumps([*logged, entry]))

    def log_image(self, name: str, path=None, plot=None, description: str = "") -> None:
        """Log a PNG file (``path=``) or a matplotlib figure (``plot=``, a Figure or pyplot)
        as the image ``name``: the artifact ``aml/images/<name>.png``."""
        _check_file_name(name, "image")
        data = _to_png(name, path, plot)
        _, worker = self._scope()
        if worker is None:
            self._put_artifact(f"{IMAGES_DIR}/{name}.png", data)
        else:
            self._put_artifact(f"{IMAGES_DIR}/{name}/stage_{worker[0]}/worker_{worker[1]}.png", data)

    def tag(self, key: str, value=None) -> None:
        """Set the MLflow tag ``key`` (``value=None``: an empty string, as AML's tag)."""
        check_key(key, "tag")
        text = tag_value(key, value)
        if api.in_task():
            self._scope()  # checks the run
            api.set_tag(key, text)
        else:
            self._client().set_tag(self.id, key, text)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags."""
        for key, value in tags.items():
            self.tag(key, value)

    def upload_file(self, name: str, path_or_stream) -> None:
        """Store a local file (a path or a binary stream) as the artifact ``name``, a
        run-relative path such as ``outputs/model.pkl``."""
        if (
            not isinstance(name, str)
            or not name
            or name.startswith("/")
            or name.endswith("/")
            or ".." in name.split("/")
        ):
            raise InvalidInput(f"upload_file name {name!r} must be a relative artifact path like 'outputs/model.pkl'")
        name = posixpath.normpath(name)
        if hasattr(path_or_stream, "read"):
            data = path_or_stream.read()
            if isinstance(data, str):
                data = data.encode()
            self._put_artifact(name, data)
            return
        path = os.fspath(path_or_stream)
        if not os.path.isfile(path):
            raise InvalidInput(f"upload_file({name!r}): {path!r} is not a file")
        if api.in_task():
            with open(path, "rb") as fh:
                self._put_artifact(name, fh.read())
            return
        directory, base = posixpath.split(name)
        with tempfile.TemporaryDirectory(prefix="spark-tracking-upload-") as tmp:
            local = os.path.join(tmp, base)  # the artifact takes the name, not the file's name
            shutil.copyfile(path, local)
            self._client().log_artifact(self.id, local, artifact_path=directory or None)

    # -- reading (driver) --------------------------------------------------------------------

    def _flush_forwarded(self) -> None:
        if not api.flush(60.0):
            logger.warning(
                "spark_tracking: not everything forwarded from tasks reached the store "
                "yet; get_metrics() may miss the newest points"
            )

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """Every metric of the run as AML returns them: name -> value (one point) or list of
        values (a series, in step order); texts as str / list of str; tables as a dict of
        column lists; images as their artifact path(s). ``name``: only that one."""
        self._driver_only("get_metrics()")
        self._flush_forwarded()
        client = self._client()
        run = client.get_run(self.id)
        out: dict[str, Any] = {}
        for key in sorted(run.data.metrics):
            if name is not None and key != name:
                continue
            history = sorted(client.get_metric_history(self.id, key), key=lambda m: (m.step, m.timestamp))
            out[key] = _shape([m.value for m in history])
        for tag, raw in sorted(run.data.tags.items()):
            if tag.startswith(TEXT_TAG_PREFIX):
                key = tag[len(TEXT_TAG_PREFIX) :]
                if name is None or key == name:
                    out[key] = _shape(json.loads(raw))
        out.update(self._tables(name))
        out.update(self._images(name))
        return out

    def _list(self, path: str) -> list:
        try:
            return self._client().list_artifacts(self.id, path)
        except Exception:  # noqa: BLE001 - artifact stores raise different errors for a missing folder
            return []

    def _walk(self, path: str) -> list[str]:
        files: list[str] = []
        for entry in self._list(path):
            files.extend(self._walk(entry.path) if entry.is_dir else [entry.path])
        return files

    def _read_artifact(self, path: str) -> bytes | None:
        directory = posixpath.dirname(path)
        if path not in {e.path for e in self._list(directory)}:
            return None
        # one small file per table part: MLflow's per-download progress bar would be noise
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory(prefix="spark-tracking-read-") as tmp:
            local = self._client().download_artifacts(self.id, path, tmp)
            with open(local, "rb") as fh:
                return fh.read()

    @staticmethod
    def _parts(files: list[str], base: str, ext: str) -> list[str]:
        """Task-written files under ``base``, in (stage, worker) order."""
        found = []
        for f in files:
            m = _PART_RE.match(f[len(base) + 1 :]) if f.startswith(base + "/") else None
            if m and m.group(3) == ext:
                found.append((int(m.group(1)), int(m.group(2)), f))
        return [f for _, _, f in sorted(found)]

    def _tables(self, only: str | None) -> dict[str, dict]:
        tables = {}
        for entry in self._list(TABLES_DIR):
            base = posixpath.basename(entry.path)
            table = base[:-5] if not entry.is_dir and base.endswith(".json") else base if entry.is_dir else None
            if table is None or (only is not None and table != only) or table in tables:
                continue
            rows = self._download_table(f"{TABLES_DIR}/{table}.json")
            folder = f"{TABLES_DIR}/{table}"
            for part in self._parts(self._walk(folder), folder, "json"):
                rows += _read_table(self._read_artifact(part) or b"{}")
            columns = _columns_of(rows)
            tables[table] = {c: [row.get(c) for row in rows] for c in columns}
        return tables

    def _images(self, only: str | None) -> dict[str, Any]:
        images: dict[str, list[str]] = {}
        for entry in self._list(IMAGES_DIR):
            base = posixpath.basename(entry.path)
            if entry.is_dir:
                paths = self._parts(self._walk(entry.path), entry.path, "png")
                if paths:
                    images.setdefault(base, []).extend(paths)
            elif base.endswith(".png"):
                images.setdefault(base[:-4], []).insert(0, entry.path)
        return {k: _shape(v) for k, v in sorted(images.items()) if only is None or k == only}

    def get_file_names(self) -> list[str]:
        """Every artifact file of the run, as run-relative paths, sorted."""
        self._driver_only("get_file_names()")
        self._flush_forwarded()
        return sorted(self._walk(""))

    def get_tags(self) -> dict[str, str]:
        """The run's tags (MLflow's system tags included)."""
        self._driver_only("get_tags()")
        return dict(self._client().get_run(self.id).data.tags)

    def get_status(self) -> str:
        """RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
        self._driver_only("get_status()")
        return self._client().get_run(self.id).info.status

    def complete(self) -> None:
        """End the run with status FINISHED (the active run is ended with ``mlflow.end_run``)."""
        self._end("FINISHED")

    def fail(self) -> None:
        """End the run with status FAILED."""
        self._end("FAILED")

    def _end(self, status: str) -> None:
        if api.in_task():
            raise RuntimeError("a Spark task cannot end the driver's run; call complete() on the driver")
        import mlflow

        api.flush(60.0)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.id:
            mlflow.end_run(status)
        else:
            self._client().set_terminated(self.id, status)

    def get_portal_url(self) -> str:
        """Where to look at the run: AML studio for an AML store, else the MLflow UI."""
        self._driver_only("get_portal_url()")
        from .portal import get_portal_url

        return get_portal_url(self.id, self._client().tracking_uri)

    def show_details(self, **options) -> None:
        """A live view of this run in the notebook (a text summary elsewhere), refreshed while
        Spark tasks log to it: ``spark_tracking.RunDetails(self, **options).show()``. Keep a
        ``RunDetails`` yourself to ``wait()`` for the run's end or ``stop()`` the view."""
        self._driver_only("show_details()")
        from .live import RunDetails

        options.setdefault("tracking_uri", self._tracking_uri)
        RunDetails(self, **options).show()
