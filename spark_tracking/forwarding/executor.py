"""Executor side: the hot path of a logging call inside a Spark task, and the shipper.

A call validates its input and appends a tuple to an in-memory deque: no network, no lock
shared with the shipper (deque appends and pops are atomic), no ``import mlflow``. A daemon
thread (``spark-tracking-shipper``) ships the deque to the driver relay in batches; when the
relay cannot be reached, or the deque passes ``buffer_max_points``, points go to a spill file
on local disk and are shipped from there later (by this worker or the next one on the node).

Binding — which driver and which run — comes from the Spark local properties the driver set
for the job (``spark_tracking.relay``, ``.secret``, ``.binding``), read through the task's
TaskContext. In processes a task starts (torchrun ranks, subprocesses), which have no
TaskContext, it comes from environment variables the task's process sets for its children
(``SPARK_TRACKING_RELAY``, ``SPARK_TRACKING_RELAY_SECRET``, ``SPARK_TRACKING_BINDING``,
``SPARK_TRACKING_WORKER``; the rank comes from ``RANK`` when set).

End of task: PySpark resets the task context (``TaskContext._setTaskContext(None)``) after
the task's output is written and before the task reports success. spark_tracking wraps that
classmethod, there being no public hook, and flushes there: when a task ends, its points are
in the driver's custody (or, after ``task_flush_timeout``, in the spill file). Where the
wrapper cannot be installed, points still ship within ``ship_interval`` and at worker exit.

Fork safety: PySpark forks Python workers from a daemon; a process that finds itself with a
new pid drops the parent's buffer (the parent ships it) and starts its own shipper.
"""

from __future__ import annotations

import atexit
import base64
import glob
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections import deque

from .. import validation
from ..validation import InvalidInput
from . import protocol

logger = logging.getLogger(__name__)

PROP_RELAY = "spark_tracking.relay"
PROP_SECRET = "spark_tracking.secret"
PROP_BINDING = "spark_tracking.binding"
ENV_RELAY = "SPARK_TRACKING_RELAY"
ENV_SECRET = "SPARK_TRACKING_RELAY_SECRET"
ENV_BINDING = "SPARK_TRACKING_BINDING"
ENV_WORKER = "SPARK_TRACKING_WORKER"

_FRAME_POINTS = 5000  # points per frame to the relay (well under the frame limit)
_MAX_ARTIFACT_BYTES = 4 * 1024 * 1024  # per artifact from a task, when the relay's frames allow it


def _frame_budget() -> int:
    """Bytes of content a frame to the relay may carry: three quarters of the relay's limit
    (``relay_max_frame_bytes``), the rest for JSON. A larger frame is refused on every retry."""
    return _setting("relay_max_frame_bytes", protocol.MAX_FRAME_BYTES) * 3 // 4


def max_task_artifact_bytes() -> int:
    """The largest artifact a task can forward: alone in a frame once base64 (4 bytes of 3)."""
    return min(_MAX_ARTIFACT_BYTES, _frame_budget() * 3 // 4)


def _setting(name: str, default):
    from ..config import setting

    raw = os.environ.get(setting(name).env)
    return setting(name).parse(raw) if raw else default


class Binding:
    """Where a task's points go: relay address, secret, driver thread binding, worker id."""

    __slots__ = ("relay", "secret", "binding", "worker", "from_task", "run", "_for_runs")

    def __init__(self, relay: str, secret: str, binding: str, worker: list, from_task: bool, run: str | None = None):
        self.relay, self.secret, self.binding, self.worker, self.from_task = relay, secret, binding, worker, from_task
        self.run = run  # None: the run the driver thread had active; else this explicit run id
        self._for_runs: dict = {}

    def for_run(self, run_id: str | None) -> "Binding":
        """The same binding, aimed at an explicit run id (MlflowClient(...).log_*(run_id, ...))."""
        if run_id is None:
            return self
        derived = self._for_runs.get(run_id)
        if derived is None:
            derived = self._for_runs[run_id] = Binding(self.relay, self.secret, self.binding, self.worker,
                                                        self.from_task, run_id)
        return derived

    def __repr__(self) -> str:  # never shows the secret
        return f"Binding(relay={self.relay!r}, binding={self.binding!r}, worker={self.worker!r})"


class _Marker:
    """Put in the deque by flush(): set once everything before it is in the driver's custody."""

    __slots__ = ("event", "ok", "done_binding")

    def __init__(self, done_binding: Binding | None = None):
        self.event = threading.Event()
        self.ok = True
        self.done_binding = done_binding


_UNSET = object()
_buf: deque = deque()
_wake = threading.Event()
_task_context_cls = None
_cached_ctx = _UNSET
_cached_binding: Binding | None = None
_good_keys: set = set()
_pid = os.getpid()
_shipper: "_Shipper | None" = None
_shipper_lock = threading.Lock()
_secrets: dict[str, str] = {}  # relay address -> secret, in memory only (spill files hold none)
_counters = {"shipped": 0, "spilled": 0, "send_failures": 0, "dropped": 0, "flush_timeouts": 0}
_batch_trigger = 2000
_max_points = 100_000


# -- binding ---------------------------------------------------------------------------------

def current_binding() -> Binding | None:
    """The binding of the running task (cached per task), or of a process a task started."""
    global _task_context_cls
    cls = _task_context_cls
    if cls is None:
        module = sys.modules.get("pyspark.taskcontext")
        if module is not None:
            cls = _task_context_cls = module.TaskContext
    ctx = cls._taskContext if cls is not None else None
    if ctx is _cached_ctx:
        return _cached_binding
    return _rebind(ctx)


# -- Spark Connect hook points (spark_tracking.forwarding.connect) ---------------------------

def _property(ctx, name: str) -> str | None:
    """A binding property of the task: set by the driver, or carried by a Spark Connect job tag."""
    value = ctx.getLocalProperty(name)
    if value or name == PROP_SECRET:  # the secret never travels in tags
        return value
    from . import connect

    return connect.task_property(ctx, name)


def _open_connection(relay: str, secret: str, timeout: float = 10.0):
    """The connection to the relay, or a Spark Connect drop binding's folder (``drop:<dir>``)."""
    if relay.startswith("drop:"):
        from . import connect

        return connect.task_connection(relay)
    return _Connection(relay, secret, timeout)
# -- end of Spark Connect hook points --------------------------------------------------------


def _rebind(ctx) -> Binding | None:
    global _cached_ctx, _cached_binding
    binding = None
    if ctx is not None:
        relay = _property(ctx, PROP_RELAY)
        if relay:
            rank = ctx.partitionId() if type(ctx).__name__ == "BarrierTaskContext" else None
            worker = [ctx.stageId(), ctx.partitionId(), ctx.attemptNumber(), ctx.taskAttemptId(), rank]
            binding = Binding(relay, ctx.getLocalProperty(PROP_SECRET) or os.environ.get(ENV_SECRET, ""),
                              _property(ctx, PROP_BINDING) or "", worker, True)
        else:
            binding = _session_binding(ctx)
    elif os.environ.get(ENV_RELAY):
        try:
            stage, partition, attempt, task_id = (int(x) for x in os.environ.get(ENV_WORKER, "0:0:0:0").split(":"))
        except ValueError:
            stage = partition = attempt = task_id = 0
        rank = os.environ.get("RANK")
        worker = [stage, partition, attempt, task_id, int(rank) if rank and rank.isdigit() else None]
        binding = Binding(os.environ[ENV_RELAY], os.environ.get(ENV_SECRET, ""),
                          os.environ.get(ENV_BINDING, ""), worker, False)
    _cached_ctx, _cached_binding = ctx, binding
    if binding is not None:
        _on_bind(binding)
    return binding


def _session_binding(ctx) -> Binding | None:
    """A task of a job from a driver thread never bound: the session's relay, from the file the
    driver added with ``SparkContext.addFile`` (``protocol.SESSION_FILE_PREFIX``), or None."""
    try:
        from pyspark.files import SparkFiles

        found = sorted(glob.glob(os.path.join(SparkFiles.getRootDirectory(), protocol.SESSION_FILE_PREFIX + "*.json")))
        if not found:
            return None
        with open(found[-1], encoding="utf-8") as fh:
            session = json.load(fh)
    except Exception:
        logger.debug("spark_tracking: no session file in this task", exc_info=True)
        return None
    rank = ctx.partitionId() if type(ctx).__name__ == "BarrierTaskContext" else None
    worker = [ctx.stageId(), ctx.partitionId(), ctx.attemptNumber(), ctx.taskAttemptId(), rank]
    return Binding(session["relay"], session.get("secret") or os.environ.get(ENV_SECRET, ""),
                   protocol.SESSION_BINDING, worker, True)


def _on_bind(binding: Binding) -> None:
    global _batch_trigger, _max_points
    _secrets[binding.relay] = binding.secret
    _ensure_shipper()
    _max_points = _setting("buffer_max_points", 100_000) or 1
    _batch_trigger = max(1, min(2000, _max_points))
    if binding.from_task:
        install_task_hooks()


# -- hot path --------------------------------------------------------------------------------

def _now_ms() -> int:
    return int(time.time() * 1000)


def _after_append() -> None:
    n = len(_buf)
    if n >= _max_points:
        _spill_buffer()
    elif not _wake.is_set():
        _wake.set()


def log_metric(key, value, step=None, timestamp=None) -> bool:
    """Append one point if this process is bound to a driver run; False otherwise."""
    b = current_binding()
    if b is None:
        return False
    if key not in _good_keys:
        validation.check_key(key)
        if len(_good_keys) < 100_000:
            _good_keys.add(key)
    kind = type(value)
    if kind is not float and kind is not int:
        value = validation.metric_value(key, value)
    if step is None:
        step = 0
    elif type(step) is not int:
        step = validation.step_value(step)
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    elif type(timestamp) is not int:
        timestamp = validation.timestamp_value(timestamp)
    _buf.append((b, key, value, timestamp, step))
    if len(_buf) >= _batch_trigger:
        _after_append()
    return True


def log_metrics(metrics, step=None, timestamp=None) -> bool:
    b = current_binding()
    if b is None:
        return False
    timestamp = _now_ms() if timestamp is None else validation.timestamp_value(timestamp)
    step = validation.step_value(step)
    checked = [(validation.check_key(k), validation.metric_value(k, v)) for k, v in metrics.items()]
    _buf.extend((b, k, v, timestamp, step) for k, v in checked)
    if len(_buf) >= _batch_trigger:
        _after_append()
    return True


def _log_pairs(kind: str, pairs, value_rule) -> bool:
    b = current_binding()
    if b is None:
        return False
    name = "param" if kind == "p" else "tag"
    checked = [(validation.check_key(k, name), value_rule(k, v)) for k, v in pairs.items()]
    _buf.extend((b, kind, k, v) for k, v in checked)
    _wake.set()
    return True


def log_params(params) -> bool:
    return _log_pairs("p", params, validation.param_value)


def set_tags(tags) -> bool:
    return _log_pairs("t", tags, validation.tag_value)


def log_artifact_bytes(artifact_path: str, data: bytes) -> bool:
    b = current_binding()
    if b is None:
        return False
    if not isinstance(artifact_path, str) or not artifact_path or artifact_path.startswith("/") or ".." in artifact_path.split("/"):
        raise InvalidInput(f"artifact path {artifact_path!r} must be a relative path like 'tables/rows.json'")
    data = bytes(data)
    limit = max_task_artifact_bytes()
    if len(data) > limit:
        raise InvalidInput(
            f"artifact {artifact_path!r} is {len(data)} bytes; a Spark task forwards at most "
            f"{limit} bytes ({limit / 2**20:g} MiB) per artifact through the driver. Write larger files to "
            f"shared storage (a Unity Catalog volume, /dbfs) and log them from the driver with "
            f"mlflow.log_artifact, or split them")
    _buf.append((b, "a", artifact_path, base64.b64encode(data).decode("ascii")))
    _wake.set()
    return True


# -- flush, stats ----------------------------------------------------------------------------

def flush(timeout: float | None = 30.0, done: Binding | None = None) -> bool:
    """Wait until everything logged so far is in the driver's custody. True when it is."""
    if _shipper is None or not _shipper.is_alive():
        if not _buf and done is None:
            return True
        _ensure_shipper()
    marker = _Marker(done)
    _buf.append(marker)
    _wake.set()
    if not marker.event.wait(timeout):
        _counters["flush_timeouts"] += 1
        return False
    return marker.ok


def stats() -> dict:
    return dict(_counters, buffered=sum(1 for item in list(_buf) if not isinstance(item, _Marker)))


def resolve_run_id(timeout: float = 10.0) -> str | None:
    """Ask the relay which run this task logs to (a round trip; not for hot loops)."""
    b = current_binding()
    if b is None:
        return None
    conn = _open_connection(b.relay, b.secret, timeout)
    try:
        return conn.request({"op": "resolve", "b": b.binding, "w": b.worker}).get("run")
    finally:
        conn.close()


def _on_task_end() -> None:
    """Called when PySpark resets the task context: hand this task's points to the driver."""
    global _cached_ctx, _cached_binding
    b = _cached_binding
    try:
        if b is not None and b.from_task:
            if not flush(_setting("task_flush_timeout", 30.0), done=b):
                logger.warning("spark_tracking: the driver did not take this task's points within "
                               "task_flush_timeout; they stay in the spill file and ship later")
            # only if MLflow ran in this task: importing task_store imports mlflow, and mlflow
            # loading our plugins while task_store is half-imported leaves the worker unrouted
            task_store = sys.modules.get(f"{__package__}.task_store")
            if task_store is not None:
                task_store.end_task_runs()
    except Exception:
        logger.warning("spark_tracking: end-of-task flush failed", exc_info=True)
    finally:
        _clear_exported_binding()
        _cached_ctx, _cached_binding = _UNSET, None


_secret_exported = False  # True when ENV_SECRET came from a job property (not the cluster)


def _clear_exported_binding() -> None:
    global _secret_exported
    for key in (ENV_RELAY, ENV_BINDING, ENV_WORKER):
        os.environ.pop(key, None)
    if _secret_exported:
        os.environ.pop(ENV_SECRET, None)
        _secret_exported = False


def _export_binding(task_context) -> None:
    """At task start: hand the task's binding to processes it starts (torchrun ranks, ...)."""
    try:
        relay = _property(task_context, PROP_RELAY)
    except Exception:
        return
    global _secret_exported
    if not relay:
        _clear_exported_binding()
        return
    secret = task_context.getLocalProperty(PROP_SECRET)
    if secret:
        os.environ[ENV_SECRET] = secret
        _secret_exported = True
    os.environ.update({
        ENV_RELAY: relay,
        ENV_BINDING: _property(task_context, PROP_BINDING) or "",
        ENV_WORKER: f"{task_context.stageId()}:{task_context.partitionId()}:{task_context.attemptNumber()}:"
                    f"{task_context.taskAttemptId()}",
    })


_hook_installed = False


def install_task_hooks() -> None:
    """Hook task start (export the binding to child processes) and task end (flush).

    Installed by the startup hook when a PySpark daemon/worker starts, when MLflow loads our
    plugins in a worker, and at a task's first log call. Idempotent; never raises."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    try:
        from pyspark.taskcontext import TaskContext

        original = TaskContext.__dict__["_setTaskContext"].__func__

        def _setTaskContext(cls, task_context):
            if cls is TaskContext:
                if task_context is None:
                    _on_task_end()
                else:
                    _export_binding(task_context)
            original(cls, task_context)

        TaskContext._setTaskContext = classmethod(_setTaskContext)
        current = TaskContext._taskContext
        if current is not None:
            _export_binding(current)
    except Exception:
        logger.info("spark_tracking: no task hooks on this PySpark; points ship within "
                    "ship_interval and at worker exit", exc_info=True)


# -- spill files -----------------------------------------------------------------------------

def _spill_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), "spark_tracking_spill")
    os.makedirs(path, exist_ok=True)
    return path


def _item_to_json(item) -> list:
    b = item[0]
    return [b.relay, b.binding, b.worker, b.run, *item[1:]]


def _relay_tag(relay: str) -> str:
    """Spill files are named after their driver relay: a worker only claims files of drivers it
    knows (other Spark applications on the same node leave each other's files alone)."""
    import hashlib

    return hashlib.sha1(relay.encode("utf-8")).hexdigest()[:16]


def _spill(items: list) -> None:
    if not items:
        return
    by_relay: dict[str, list] = {}
    for item in items:
        by_relay.setdefault(item[0].relay, []).append(item)
    for relay, group in by_relay.items():
        path = os.path.join(_spill_dir(), f"{_relay_tag(relay)}-{time.time_ns():020d}-{os.getpid()}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            for item in group:
                fh.write(json.dumps(_item_to_json(item)))
                fh.write("\n")
    _counters["spilled"] += len(items)


def _spill_buffer() -> None:
    """The deque is over its bound: move its points (not flush markers) to disk."""
    items, markers = [], []
    while _buf:
        try:
            item = _buf.popleft()
        except IndexError:
            break
        (markers if isinstance(item, _Marker) else items).append(item)
    _spill(items)
    _buf.extend(markers)
    logger.warning("spark_tracking: %d points spilled to %s (buffer_max_points=%d reached)",
                   len(items), _spill_dir(), _max_points)


def _load_spilled() -> list:
    """Claim spill files of drivers this process knows (ours or a dead worker's), oldest first."""
    items = []
    paths = [p for relay in list(_secrets) for p in glob.glob(os.path.join(_spill_dir(), f"{_relay_tag(relay)}-*.jsonl"))]
    for path in sorted(paths):
        claimed = path + f".{os.getpid()}.claimed"
        try:
            os.rename(path, claimed)
        except OSError:
            continue  # another worker took it
        with open(claimed, encoding="utf-8") as fh:
            for line in fh:
                relay, binding, worker, run, *rest = json.loads(line)
                secret = _secrets.get(relay)
                if secret is None:
                    _counters["dropped"] += 1
                    continue
                items.append((Binding(relay, secret, binding, worker, False, run), *rest))
        os.remove(claimed)
    missing = _counters["dropped"]
    if missing:
        logger.debug("spark_tracking: %d spilled points belong to a driver session this worker "
                     "does not know", missing)
    return items


# -- the shipper -----------------------------------------------------------------------------

class _Connection:
    def __init__(self, relay: str, secret: str, timeout: float = 10.0):
        host, _, port = relay.rpartition(":")
        self.address = (host, int(port))
        self.secret = secret
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.seq = 0

    def _connect(self) -> None:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = protocol.recv_frame(sock)
            sock.sendall(protocol.encode({"auth": protocol.auth_digest(self.secret, hello["nonce"]),
                                          "v": protocol.VERSION}))
            if not protocol.recv_frame(sock).get("ok"):
                raise ConnectionError("relay refused the session secret")
        except Exception:
            sock.close()
            raise
        self.sock = sock

    def request(self, message: dict) -> dict:
        if self.sock is None:
            self._connect()
        self.seq += 1
        message["seq"] = self.seq
        try:
            self.sock.sendall(protocol.encode(message))
            reply = protocol.recv_frame(self.sock)
        except Exception:
            self.close()
            raise
        if reply.get("ack") != self.seq:
            self.close()
            raise ConnectionError(f"relay answered {reply!r} to request {self.seq}")
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def _group_key(b: Binding) -> tuple:
    return (b.relay, b.binding, tuple(b.worker), b.run)


class _Shipper(threading.Thread):
    def __init__(self):
        super().__init__(name="spark-tracking-shipper", daemon=True)
        self.interval = _setting("ship_interval", 0.2)
        self.frame_bytes = _frame_budget()
        self.connections: dict[tuple, _Connection] = {}
        self.pending: list = []  # items taken from the deque but not yet acknowledged
        self.next_spill_check = 0.0
        self.spill_seen = 0

    def run(self) -> None:
        while True:
            _wake.wait(self.interval)
            _wake.clear()
            try:
                self.drain()
            except Exception:  # never die: the next round retries
                logger.warning("spark_tracking: shipping failed", exc_info=True)

    def take_spilled(self, force: bool = False) -> None:
        """Spilled points are older than anything still in the deque: they go first."""
        now = time.monotonic()
        if force or now >= self.next_spill_check or self.spill_seen != _counters["spilled"]:
            self.next_spill_check = now + 5.0
            self.spill_seen = _counters["spilled"]
            self.pending[:0] = _load_spilled()

    def drain(self) -> None:
        self.take_spilled()
        while True:
            try:
                item = _buf.popleft()
            except IndexError:
                break
            if isinstance(item, _Marker):
                self.take_spilled(force=True)
                item.ok = self.send_pending()
                if item.ok and item.done_binding is not None:
                    item.ok = self.send_done(item.done_binding)
                item.event.set()
                continue
            self.pending.append(item)
            if len(self.pending) >= _FRAME_POINTS:
                self.send_pending()
        self.send_pending()

    def send_pending(self) -> bool:
        """Send what is pending, grouped by binding, in order. False (items spilled) on failure."""
        ok = True
        while self.pending:
            first = self.pending[0][0]
            key = _group_key(first)
            group, rest, size = [], [], 0
            for item in self.pending:
                same = item[0] is first or _group_key(item[0]) == key
                cost = 100 if len(item) == 5 else len(item[2]) + len(item[3]) + 50  # metrics flat, text by size
                if same and len(group) < _FRAME_POINTS and (not group or size + cost <= self.frame_bytes):
                    group.append(item)
                    size += cost
                else:
                    rest.append(item)
            if not self.send_group(first, group):
                _spill(self.pending)
                self.pending = []
                return False
            self.pending = rest
        return ok

    def send_group(self, b: Binding, group: list) -> bool:
        message = {"op": "points", "b": b.binding, "w": b.worker, "m": [], "p": [], "t": [], "a": []}
        if b.run is not None:
            message["r"] = b.run
        for item in group:
            if len(item) == 5:
                message["m"].append(item[1:])
            else:
                message[item[1]].append(item[2:])
        if self.request(b, message):
            _counters["shipped"] += len(group)
            return True
        return False

    def send_done(self, b: Binding) -> bool:
        return self.request(b, {"op": "done", "b": b.binding, "w": b.worker})

    def request(self, b: Binding, message: dict) -> bool:
        key = (b.relay, b.secret)
        delay = 0.05
        for attempt in range(4):
            conn = self.connections.get(key)
            if conn is None:
                conn = self.connections[key] = _open_connection(b.relay, b.secret)
            try:
                conn.request(message)
                return True
            except Exception as exc:
                _counters["send_failures"] += 1
                logger.debug("spark_tracking: send to relay %s failed (%s), attempt %d", b.relay, exc, attempt + 1)
                if attempt < 3:
                    time.sleep(delay)  # backoff between reconnects, in the shipper thread only
                    delay *= 4
        return False


def _ensure_shipper() -> None:
    global _shipper, _pid, _wake
    with _shipper_lock:
        if os.getpid() != _pid:  # forked: the parent ships what it buffered
            _pid = os.getpid()
            _buf.clear()
            _wake = threading.Event()
            _shipper = None
        if _shipper is None or not _shipper.is_alive():
            _shipper = _Shipper()
            _shipper.start()


def _after_fork_in_child() -> None:
    """A forked process starts empty: the parent ships what it buffered."""
    global _pid, _wake, _shipper, _cached_ctx, _cached_binding, _shipper_lock
    _pid = os.getpid()
    _buf.clear()
    _wake = threading.Event()
    _shipper = None
    _shipper_lock = threading.Lock()
    _cached_ctx, _cached_binding = _UNSET, None


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _ship_at_exit() -> None:
    if _shipper is not None and _shipper.is_alive() and os.getpid() == _pid and _buf:
        flush(timeout=5.0)


def forward_batch(run_id: str | None, metrics=(), params=(), tags=()) -> bool:
    """Forward MLflow entities (already validated by MLflow's client) to ``run_id`` (None: the
    run the driver thread had active). False when this process is not bound."""
    b = current_binding()
    if b is None:
        return False
    b = b.for_run(run_id)
    _buf.extend((b, m.key, m.value, m.timestamp, m.step or 0) for m in metrics)
    if params:
        _buf.extend((b, "p", p.key, str(p.value)) for p in params)
    if tags:
        _buf.extend((b, "t", t.key, str(t.value)) for t in tags)
    if params or tags or len(_buf) >= _batch_trigger:  # metrics wake the shipper in batches, as log_metric does
        _after_append()
    return True
