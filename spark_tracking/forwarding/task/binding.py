"""Which driver and which run a Spark task's points go to: the task's :class:`Binding`.

Sources, first that applies:

1. the running task's TaskContext: the Spark local properties the driver set for the job
   (``protocol.PROP_RELAY``, ``PROP_SECRET`` — or ``SPARK_TRACKING_RELAY_SECRET`` in the
   executor's environment —, ``PROP_BINDING``, ``PROP_MAX_FRAME``);
2. in processes a task started (torchrun ranks, ``subprocess``, ``multiprocessing`` spawn),
   which have no TaskContext: the environment the task's Python worker exported for them at
   task start (``protocol.ENV_*``). Their worker id is their ``RANK`` when set.

Settings a worker needs (``buffer_max_points``, ``ship_interval``, ``task_flush_timeout``,
``relay_max_frame_bytes``) are read through :mod:`spark_tracking.config` like on the driver
(environment > config file > default; there is no Spark conf in a worker), except that the
frame limit the driver's relay uses reaches tasks through ``PROP_MAX_FRAME``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ... import layout
from ..._compat import pyspark as compat
from .. import protocol
from ..records import Worker

logger = logging.getLogger(__name__)


class TaskSettings(NamedTuple):
    """The settings of the task side, resolved once per binding."""

    buffer_max_points: int = 100_000
    ship_interval: float = 0.2
    task_flush_timeout: float = 30.0
    max_frame_bytes: int = protocol.MAX_FRAME_BYTES

    @classmethod
    def resolve(cls, max_frame: str | None = None, environ: Mapping[str, str] | None = None) -> TaskSettings:
        """Through the one resolver (no Spark conf in workers); ``max_frame``: the driver's
        ``PROP_MAX_FRAME`` local property, which wins over the worker's own value."""
        from ...config import Config, ConfigError

        try:
            cfg = Config.resolve(spark_conf={}, environ=environ)
            values = cls(
                max(1, cfg.buffer_max_points), cfg.ship_interval, cfg.task_flush_timeout, cfg.relay_max_frame_bytes
            )
        except ConfigError as exc:  # a worker keeps logging; the driver reports config errors
            logger.warning("spark_tracking: task settings fall back to defaults: %s", exc)
            values = cls()
        if max_frame and max_frame.isdigit() and int(max_frame) > 0:
            values = values._replace(max_frame_bytes=int(max_frame))
        return values


class Binding:
    """Where a task's points go: relay address, secret, driver thread binding, the task's
    :class:`~spark_tracking.forwarding.records.Worker`."""

    __slots__ = (
        "_for_runs",
        "binding",
        "from_task",
        "key_suffix",
        "relay",
        "run",
        "secret",
        "settings",
        "worker",
    )

    def __init__(
        self,
        relay: str,
        secret: str,
        binding: str,
        worker: Worker,
        from_task: bool,
        run: str | None = None,
        settings: TaskSettings | None = None,
    ):
        self.relay, self.secret, self.binding, self.from_task = relay, secret, binding, from_task
        self.worker = Worker(*worker)
        self.run = run  # None: the run the driver thread had active; else this explicit run id
        self.settings = settings or TaskSettings()
        #: what the driver's sink may append to a metric key of this worker
        self.key_suffix = layout.worker_key_suffix(layout.worker_id(worker))
        self._for_runs: dict = {}

    def for_run(self, run_id: str | None) -> Binding:
        """The same binding, aimed at an explicit run id (MlflowClient(...).log_*(run_id, ...))."""
        if run_id is None:
            return self
        derived = self._for_runs.get(run_id)
        if derived is None:
            derived = self._for_runs[run_id] = Binding(
                self.relay, self.secret, self.binding, self.worker, self.from_task, run_id, self.settings
            )
        return derived

    @property
    def group(self) -> tuple:
        """Points of bindings with equal groups travel in one frame."""
        return (self.relay, self.binding, self.worker, self.run)

    def __repr__(self) -> str:  # never shows the secret
        return f"Binding(relay={self.relay!r}, binding={self.binding!r}, worker={self.worker!r})"


def _property(ctx, name: str) -> str | None:
    """A binding property of the task: set by the driver, or carried by a Spark Connect job tag
    (``forwarding.connect``; never the secret)."""
    value = ctx.getLocalProperty(name)
    if value:
        return value
    from . import connect

    return connect.task_property(ctx, name)


def from_task_context(ctx) -> Binding | None:
    """The binding a running task's local properties give; for a job of a driver thread never
    bound, the session's relay from the file the driver added (``SparkContext.addFile``,
    ``protocol.SESSION_FILE_PREFIX``); else None."""
    relay = _property(ctx, protocol.PROP_RELAY)
    if not relay:
        return _session_binding(ctx)
    secret = ctx.getLocalProperty(protocol.PROP_SECRET) or _environ_secret(os.environ)
    return Binding(
        relay,
        secret,
        _property(ctx, protocol.PROP_BINDING) or "",
        _worker(ctx),
        True,
        settings=TaskSettings.resolve(_property(ctx, protocol.PROP_MAX_FRAME)),
    )


def _environ_secret(environ: Mapping[str, str]) -> str:
    """The relay secret in the environment: the cluster's (``ENV_SECRET``), else the one a Spark
    Connect client passed to the server it started (``ENV_LOCAL_SECRET``)."""
    return environ.get(protocol.ENV_SECRET) or environ.get(protocol.ENV_LOCAL_SECRET, "")


def _worker(ctx) -> Worker:
    rank = ctx.partitionId() if compat.is_barrier(ctx) else None
    return Worker(
        ctx.stageId(),
        ctx.partitionId(),
        ctx.attemptNumber(),
        ctx.taskAttemptId(),
        rank,
        compat.stage_attempt_number(ctx),
    )


def _session_binding(ctx) -> Binding | None:
    import glob
    import json

    try:
        from pyspark import SparkFiles

        found = sorted(glob.glob(os.path.join(SparkFiles.getRootDirectory(), protocol.SESSION_FILE_PREFIX + "*.json")))
        if not found:
            return None
        with open(found[-1], encoding="utf-8") as fh:
            session = json.load(fh)
    except Exception:
        logger.debug("spark_tracking: no session file in this task", exc_info=True)
        return None
    return Binding(
        session["relay"],
        session.get("secret") or _environ_secret(os.environ),
        protocol.SESSION_BINDING,
        _worker(ctx),
        True,
        settings=TaskSettings.resolve(),
    )


def from_environ(environ: Mapping[str, str] | None = None) -> Binding | None:
    """The binding a task exported to a process it started, or None."""
    environ = os.environ if environ is None else environ
    relay = environ.get(protocol.ENV_RELAY)
    if not relay:
        return None
    try:
        parts = [int(x) for x in environ.get(protocol.ENV_WORKER, "0:0:0:0").split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (4, 5):
        parts = [0, 0, 0, 0]
    stage, partition, attempt, task_id = parts[:4]
    stage_attempt = parts[4] if len(parts) == 5 else 0
    rank = environ.get("RANK", "")
    worker = Worker(stage, partition, attempt, task_id, int(rank) if rank.isdigit() else None, stage_attempt)
    return Binding(
        relay,
        _environ_secret(environ),
        environ.get(protocol.ENV_BINDING, ""),
        worker,
        False,
        settings=TaskSettings.resolve(environ.get(protocol.ENV_MAX_FRAME), environ),
    )


class ChildExport:
    """The binding a task's Python worker hands to the processes it starts, via environment.

    Set when a task starts, removed when it ends (a reused worker's next task may be unbound).
    The secret is exported only when it came from a job property; when the executor has it in
    its environment (the cluster's secret scope) it is already there.

    A bound task also names the task store in ``MLFLOW_TRACKING_URI`` (``protocol.TASK_STORE_URI``;
    the URI it replaces goes to ``protocol.ENV_DELEGATE_URI``), so that a process it starts reads
    the forwarding store from its first instruction: PyTorch Lightning's ``MLFlowLogger`` takes
    its default ``tracking_uri`` from that variable when Lightning is imported, before mlflow
    (checked: lightning 2.6.6, ``os.getenv("MLFLOW_TRACKING_URI")`` as the argument's default);
    with the node's own store there, every torchrun rank opened and migrated a SQLite store under
    the executor's HOME at once. It stays after the task (like the routing the task store's
    plugin makes when MLflow is imported in a worker): outside a bound task the task store
    passes every call to the URI it replaced."""

    def __init__(self, environ=None):
        self.environ = os.environ if environ is None else environ
        self.secret_exported = False

    def export(self, ctx) -> None:
        """At task start: the task's binding into the environment (or none, for an unbound job)."""
        try:
            relay = _property(ctx, protocol.PROP_RELAY)
        except Exception:  # noqa: BLE001 - a context not filled in yet (3.5/4.0 barrier tasks): next hook
            return
        if not relay:
            self.clear()
            return
        secret = ctx.getLocalProperty(protocol.PROP_SECRET)
        if secret:
            self.environ[protocol.ENV_SECRET] = secret
            self.secret_exported = True
        values = {
            protocol.ENV_RELAY: relay,
            protocol.ENV_BINDING: _property(ctx, protocol.PROP_BINDING) or "",
            protocol.ENV_WORKER: f"{ctx.stageId()}:{ctx.partitionId()}:{ctx.attemptNumber()}:"
            f"{ctx.taskAttemptId()}:{compat.stage_attempt_number(ctx)}",
        }
        max_frame = _property(ctx, protocol.PROP_MAX_FRAME)
        if max_frame:
            values[protocol.ENV_MAX_FRAME] = max_frame
        uri = self.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri.startswith(protocol.TASK_STORE_SCHEME):
            values[protocol.ENV_DELEGATE_URI] = uri
            values["MLFLOW_TRACKING_URI"] = protocol.TASK_STORE_URI
        system_metrics = ctx.getLocalProperty(protocol.PROP_SYSTEM_METRICS)
        if system_metrics:
            values[protocol.ENV_SYSTEM_METRICS] = system_metrics
        else:
            self.environ.pop(protocol.ENV_SYSTEM_METRICS, None)
        self.environ.update(values)

    def clear(self) -> None:
        """At task end: remove what :meth:`export` set."""
        for key in (
            protocol.ENV_RELAY,
            protocol.ENV_BINDING,
            protocol.ENV_WORKER,
            protocol.ENV_MAX_FRAME,
            protocol.ENV_SYSTEM_METRICS,
        ):
            self.environ.pop(key, None)
        if self.secret_exported:
            self.environ.pop(protocol.ENV_SECRET, None)
            self.secret_exported = False


# -- the binding of this process, cached per task (the hot path reads it on every call) -------

_UNSET = object()
_read_ctx = None  # compat.task_context_reader(), once pyspark.taskcontext is loaded
_cached_ctx = _UNSET
_cached: Binding | None = None
#: called with each new binding (the executor starts its shipper and task hooks there)
on_bind: Callable[[Binding], None] | None = None


def current() -> Binding | None:
    """The binding of the running task (cached per task), or of a process a task started."""
    global _read_ctx
    read = _read_ctx
    if read is None:
        read = _read_ctx = compat.task_context_reader() or _no_context
    ctx = read()
    if ctx is _cached_ctx:
        return _cached
    return _rebind(ctx)


def _no_context():
    global _read_ctx
    _read_ctx = None  # look again next call: pyspark may load later
    return None


def _rebind(ctx) -> Binding | None:
    global _cached_ctx, _cached
    try:
        binding = from_task_context(ctx) if ctx is not None else from_environ()
    except Exception:
        logger.debug("spark_tracking: task context not readable yet", exc_info=True)
        return None
    _cached_ctx, _cached = ctx, binding
    if binding is not None and on_bind is not None:
        on_bind(binding)
    return binding


def cached() -> Binding | None:
    """The binding cached for the running task, without looking (None when none)."""
    return _cached


def forget() -> None:
    """The task ended (or the process forked): look again at the next call."""
    global _cached_ctx, _cached
    _cached_ctx, _cached = _UNSET, None
