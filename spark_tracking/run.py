"""The Azure ML run vocabulary (``Run.get_context()``, ``run.log``, ``run.log_row``, ...) on MLflow.

Code written for AML's ``azureml.core.Run`` keeps working: every call becomes plain MLflow on
the run, so the results are visible in AML studio, the MLflow UI and ``spark-tracking show``.
Where each call's data is stored is :mod:`spark_tracking.layout`; docs/vocabulary.md has the
table of calls for users.

A ``Run`` writes through one writer per process and run, chosen once
(:mod:`spark_tracking.run_writers`): on the driver a
:class:`~spark_tracking.run_writers.DriverWriter` (``MlflowClient`` on the store; a series
continues after the steps already stored, a table after its stored rows), inside a Spark task a
:class:`~spark_tracking.run_writers.TaskWriter` (the task's forwarding buffer through
:mod:`spark_tracking.api`; steps count from 0 per task, so the workers' steps line up for the
driver's mean). What a call is given is checked first (:mod:`spark_tracking.run_inputs`).
Reading the store (``get_metrics``, ``get_file_names``, ``parent``, ...) is for the driver,
through :class:`~spark_tracking.store.RunReader`: executors hold no credentials.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import api, layout
from .forwarding.protocol import PARENT_TAG
from .layout import IMAGES_DIR, TABLES_DIR, TEXT_TAG_PREFIX
from .run_inputs import check_file_name, classify_values, image_png, table_cell
from .run_writers import DriverWriter, TaskWriter, Writer, writer_for
from .store import RunReader
from .validation import InvalidInput, check_key, tag_value

if TYPE_CHECKING:
    from mlflow import MlflowClient


logger = logging.getLogger(__name__)

__all__ = ["IMAGES_DIR", "TABLES_DIR", "TEXT_TAG_PREFIX", "InvalidInput", "Run"]


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
        tags = {PARENT_TAG: self.id}
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
        parent_id = self._client().get_run(self.id).data.tags.get(PARENT_TAG)
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

    def _client(self) -> MlflowClient:
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

    def _reader(self, what: str) -> RunReader:
        self._driver_only(what)
        return RunReader(self._client(), self.id)

    def _writer(self) -> Writer:
        """This process's writer for the run: the task's inside a Spark task, else the driver's."""
        if api.in_task():
            from .forwarding.task import executor

            binding = executor.current_binding()
            assert binding is not None, "in_task() means a binding"
            worker = binding.worker
            part = (int(worker[0]), layout.worker_id(worker))
            writer = writer_for(("task", tuple(worker), os.getpid()), lambda: TaskWriter(part))
            assert isinstance(writer, TaskWriter)
            if self._id is not None:
                writer.check_run(self._id)
            return writer
        client = self._client()
        return writer_for(("driver", client.tracking_uri, self.id), lambda: DriverWriter(client, self.id))

    # -- logging -----------------------------------------------------------------------------

    def log(self, name: str, value, description: str = "") -> None:
        """Log a number (the next point of the series ``name``: each call is the next step,
        0, 1, 2, ...) or a string (added to the tag ``aml.text.<name>``, a JSON list of every
        text logged under that name). ``description`` is accepted for AML compatibility and
        unused."""
        check_key(name, "metric")
        self._log_values(name, [value])

    def log_list(self, name: str, value: Iterable, description: str = "") -> None:
        """Log a list of numbers (the next steps of the series ``name``, in one request) or of
        strings (added to the text list ``name``)."""
        check_key(name, "metric")
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise InvalidInput(f"log_list({name!r}) takes a list of numbers or strings, not {type(value).__name__}")
        values = list(value)
        if not values:
            raise InvalidInput(f"log_list({name!r}) got an empty list; nothing to log")
        self._log_values(name, values)

    def _log_values(self, name: str, values: list) -> None:
        kind, clean = classify_values(name, values)
        writer = self._writer()
        if kind == "text":
            writer.log_texts(name, clean)
        else:
            writer.log_numbers(name, clean)

    def log_row(self, name: str, description: str | None = None, **columns) -> None:
        """Append one row to the table ``name``: ``run.log_row("metrics", epoch=1, acc=0.9)``.
        A table is an ``mlflow.log_table``-compatible JSON artifact (never metrics, so it costs
        no metric quota); a task writes its own rows to its own file."""
        check_file_name(name, "table")
        if not columns:
            raise InvalidInput(f"log_row({name!r}) got no columns; pass them as keywords, e.g. epoch=1")
        self._writer().append_rows(name, [{c: table_cell(name, c, v) for c, v in columns.items()}])

    def log_table(self, name: str, value: Mapping[str, Iterable], description: str = "") -> None:
        """Append the rows of ``{column: [values...]}`` (columns of equal length) to the
        table ``name`` (the same table ``log_row`` builds)."""
        check_file_name(name, "table")
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
        self._writer().append_rows(name, [{c: table_cell(name, c, cols[c][i]) for c in cols} for i in range(n)])

    def log_image(self, name: str, path=None, plot=None, description: str = "") -> None:
        """Log a PNG file (``path=``) or a matplotlib figure (``plot=``, a Figure or pyplot)
        as the image ``name``, a PNG artifact."""
        check_file_name(name, "image")
        self._writer().log_image(name, image_png(name, path, plot))

    def tag(self, key: str, value=None) -> None:
        """Set the MLflow tag ``key`` (``value=None``: an empty string, as AML's tag)."""
        check_key(key, "tag")
        self._writer().set_tag(key, tag_value(key, value))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags (see :meth:`tag`)."""
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
            self._writer().put_artifact(name, data.encode() if isinstance(data, str) else data)
            return
        path = os.fspath(path_or_stream)
        if not os.path.isfile(path):
            raise InvalidInput(f"upload_file({name!r}): {path!r} is not a file")
        self._writer().upload_file(name, path)

    # -- reading (driver) --------------------------------------------------------------------

    def _flush_forwarded(self) -> None:
        if not api.flush(60.0):
            logger.warning(
                "spark_tracking: not everything forwarded from tasks reached the store "
                "yet; get_metrics() may miss the newest points"
            )

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """Every metric of the run as AML returns them, ``name``: only that one. A metric with
        one point is a ``float``, a series a list of floats in step order; text a ``str`` or a
        list of ``str``; a table a dict of column lists (JSON types kept: ints stay ints; a
        missing cell is None; the driver's rows first, then the tasks' in stage/worker order);
        an image its artifact path (a list of paths when several tasks logged it). Flushes
        what tasks forwarded first, so it sees everything logged before it was called."""
        reader = self._reader("get_metrics()")
        self._flush_forwarded()
        run = reader.get_run()
        out: dict[str, Any] = {k: _shape([v for _, v in p]) for k, p in reader.metrics(run, only=name).items()}
        out.update((k, _shape(v)) for k, v in reader.texts(run, only=name).items())
        out.update(reader.tables(only=name))
        out.update((k, _shape(v)) for k, v in reader.images(only=name).items())
        return out

    def get_file_names(self) -> list[str]:
        """Every artifact file of the run, as run-relative paths, sorted."""
        reader = self._reader("get_file_names()")
        self._flush_forwarded()
        return sorted(reader.files())

    def get_tags(self) -> dict[str, str]:
        """The run's tags (MLflow's system tags included)."""
        return dict(self._reader("get_tags()").get_run().data.tags)

    def get_status(self) -> str:
        """RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
        return self._reader("get_status()").get_run().info.status

    def complete(self) -> None:
        """End the run with status FINISHED (the active run is ended with ``mlflow.end_run``),
        after flushing what tasks forwarded."""
        self._end("FINISHED")

    def fail(self) -> None:
        """End the run with status FAILED (see :meth:`complete`)."""
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
        """Where to look at the run: AML studio for an AML store, the server's UI for another
        MLflow server, the ``spark-tracking ui`` address for the embedded store."""
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
