"""The driver sink: turns points received from tasks into ``log_batch`` calls on the store.

One daemon thread (``spark-tracking-sink``) works in rounds: it takes every submission that
arrived, names per-worker series and folds the aggregate, cuts requests within MLflow's
limits (``batch_max_metrics`` ≤ 1000 metrics, 100 params+tags, 1 MB; AML: ≤ 250 values of
one metric, and a run's params beyond 200 dropped with a warning), respects ``rate_limit``
and sends. A request the store refuses as invalid is split so one bad value never rejects
the rest. A request that fails in transport is retried
with exponential backoff and jitter; when retries are used up it goes to the durable spool
and is retried from there. When a round ends, every submission in it is settled (delivered,
or held for retry), which is when the relay acknowledges the task.

Worker identity (docs/forwarding.md, ``layout``): when a stage has more than one task, worker ``w``
(the barrier rank or the partition id) logs its own series (``layout.worker_metric_key``) and the sink adds the mean
across workers at each step as plain ``<key>``, emitted once every task of the stage reported
that step (or, for what is left, when the stage ends or on flush). A single-task stage logs
plain ``<key>`` only, as a local run would.

Retried and speculative task attempts: per (run, stage, partition, key) a point is kept only
when its step is above the highest step already kept from another attempt, so each step of a
worker's series is stored once — by the attempt that logged it first.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from collections import defaultdict, deque
from typing import Any, Callable

from ... import layout, validation
from ..._compat import mlflow as mlflow_compat
from ..files import pid_alive
from . import observers
from .bounded import BoundedDict

logger = logging.getLogger(__name__)

RUN_POINTS_CAP = 1_000_000  # Databricks-hosted MLflow: metric points per run
RUN_POINTS_WARNING = RUN_POINTS_CAP * 9 // 10


class Submission:
    """What one relay request hands the sink: points of one task, a task end, or a flush."""

    __slots__ = ("artifacts", "future", "kind", "metrics", "params", "run_id", "tags", "worker")

    def __init__(self, kind: str, run_id=None, worker=None, metrics=(), params=(), tags=(), artifacts=()):
        self.kind = kind  # "points" | "done" | "flush"
        self.run_id, self.worker = run_id, worker
        self.metrics, self.params, self.tags, self.artifacts = metrics, params, tags, artifacts
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class RateLimiter:
    """Token bucket: at most ``rate`` acquisitions per second (0 = unlimited)."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate
        self.clock, self.sleep = clock, sleep
        self.next_free = 0.0

    def acquire(self) -> None:
        """Wait until the next acquisition is allowed (returns at once when ``rate`` is 0)."""
        if self.rate <= 0:
            return
        now = self.clock()
        if self.next_free > now:
            self.sleep(self.next_free - now)
            now = self.next_free
        self.next_free = max(now, self.next_free) + 1.0 / self.rate


class Spool:
    """Durable, bounded folder of requests the store has not taken yet (JSON files).

    Each file is written to a temporary name, fsynced and renamed, so a crash of the driver
    leaves whole files only. ``spark-tracking replay`` (or the next sink) delivers them; the
    timestamps inside are those of the original log calls, so a replay is idempotent in
    MLflow's SQL store. Files hold no secrets (the tracking URI is stored without user info).

    Several processes may drain one folder (two notebooks on a driver, ``replay`` during a
    job): a process claims a file by renaming it to ``<name>.claim-<pid>`` before reading it
    (atomic: one process wins, the other skips it), deletes it once the store took it and
    renames it back when the store could not be reached. A claim whose process is gone is
    claimed again. Files the store refused are moved to ``refused/`` with the reason beside.
    """

    def __init__(self, directory: str, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._n = 0

    def used_bytes(self) -> int:
        """Bytes the spooled files take (claimed ones included); 0 when the folder does not exist."""
        try:
            return sum(e.stat().st_size for e in os.scandir(self.directory) if _spooled_name(e.name))
        except FileNotFoundError:
            return 0

    def write(self, request: dict) -> str | None:
        """Write ``request`` as a new spool file (fsynced, then renamed into place) and return its
        path; None, writing nothing, when it would take the folder past ``max_bytes``."""
        body = json.dumps(request).encode("utf-8")
        if self.used_bytes() + len(body) > self.max_bytes:
            return None
        os.makedirs(self.directory, exist_ok=True)
        self._n += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._n:06d}.json"
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        path = os.path.join(self.directory, name)
        os.replace(tmp, path)
        return path

    def files(self) -> list[str]:
        """Files to deliver, oldest first: unclaimed ones and claims of processes that are gone."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            original = _spooled_name(name)
            if original and (original == name or not pid_alive(int(name.rsplit("-", 1)[1]))):
                found.append((original, name))
        return [os.path.join(self.directory, name) for _, name in sorted(found)]

    def claim(self, path: str) -> str | None:
        """Take a file for this process; None when another process took it first."""
        original = _spooled_name(os.path.basename(path))
        claimed = os.path.join(self.directory, f"{original}.claim-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        return claimed

    def release(self, claimed: str) -> None:
        """Give a claimed file back (the store could not be reached)."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(claimed, os.path.join(self.directory, _claimed_name(claimed)))

    def remove(self, claimed: str) -> None:
        """The store took a claimed file."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(claimed)

    def set_aside(self, claimed: str, reason: str) -> str:
        """Move a claimed file the store refused to ``refused/`` (with ``<name>.reason.txt``)."""
        folder = os.path.join(self.directory, "refused")
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, _claimed_name(claimed))
        with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
            fh.write(reason + "\n")
        os.replace(claimed, target)
        return target

    @staticmethod
    def read(path: str) -> dict:
        """The request a spool file holds."""
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)


def _spooled_name(name: str) -> str | None:
    """The spool file a directory entry stands for (itself or its claim), else None."""
    if name.endswith(".json") and not name.startswith("."):
        return name
    base, sep, pid = name.rpartition(".claim-")
    if sep and base.endswith(".json") and pid.isdigit():
        return base
    return None


def _claimed_name(claimed: str) -> str:
    """The spool file a claim (made by ``Spool.claim``) stands for."""
    name = _spooled_name(os.path.basename(claimed))
    assert name is not None, claimed
    return name


def strip_userinfo(uri: str) -> str:
    """``uri`` without user name and password (``https://user:pw@host/`` becomes ``https://host/``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri


def write_artifact_bytes(client, run_id: str, artifact_path: str, data: bytes) -> None:
    """Store bytes as the artifact ``artifact_path`` of a run, through MLflow's client."""
    directory, name = os.path.split(artifact_path)
    with tempfile.TemporaryDirectory(prefix="spark-tracking-artifact-") as tmp:
        local = os.path.join(tmp, name)
        with open(local, "wb") as fh:
            fh.write(data)
        client.log_artifact(run_id, local, artifact_path=directory or None)


class StoreError(Exception):
    """A log_batch the store did not take. ``invalid``: it refused the content (split it);
    otherwise a transport failure (retry), with the server's Retry-After when it sent one."""

    def __init__(self, message: str, invalid: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.invalid, self.retry_after = invalid, retry_after


class RestWriter:
    """log_batch over MLflow's REST API with no hidden retries: the sink owns the policy
    (backoff with jitter, Retry-After, spool), so an outage never blocks it for minutes in
    MLflow's HTTP retry loop. Used for every store MLflow talks to over HTTP(S)."""

    def __init__(self, store, route: tuple[str, str], timeout: float = 30.0):
        self.store = store
        self.timeout = timeout
        self.endpoint, self.method = route

    def log_batch(self, run_id, metrics, params, tags) -> None:
        """Send one log_batch; :class:`StoreError` when the store did not take it (``invalid`` for
        a 400, 404, 409 or 413; ``retry_after`` from a 429 or 5xx)."""
        # The JSON MLflow's LogBatch message maps to, built directly: the protobuf round trip
        # costs more CPU than the request itself. Non-finite doubles as proto3 JSON spells them.
        body = {
            "run_id": run_id,
            "metrics": [
                {"key": k, "value": v if math.isfinite(v) else _NON_FINITE[str(v)], "timestamp": ts, "step": step}
                for k, v, ts, step in metrics
            ],
            "params": [{"key": k, "value": v} for k, v in params],
            "tags": [{"key": k, "value": v} for k, v in tags],
        }
        try:
            response = mlflow_compat.rest_request(self.store, self.endpoint, self.method, self.timeout, body)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, DNS, TLS: retried
            raise StoreError(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 200:
            return
        text = response.text[:300]
        if status in (429, 503) or status >= 500:
            raise StoreError(f"HTTP {status}: {text}", retry_after=_retry_after(response.headers.get("Retry-After")))
        raise StoreError(f"HTTP {status}: {text}", invalid=status in (400, 404, 409, 413))


class ClientWriter:
    """log_batch through MlflowClient, for stores that are not HTTP (SQLite, files, plugins)."""

    def __init__(self, client):
        self.client = client

    def log_batch(self, run_id, metrics, params, tags) -> None:
        """Send one log_batch through the client; :class:`StoreError` when the store did not take it."""
        from mlflow.entities import Metric, Param, RunTag

        try:
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics],
                params=[Param(k, v) for k, v in params],
                tags=[RunTag(k, v) for k, v in tags],
                synchronous=True,
            )
        except Exception as exc:  # noqa: BLE001 - whatever the store raised: refused (split) or retried
            raise StoreError(f"{type(exc).__name__}: {exc}", invalid=is_invalid_request(exc)) from None


def writer_for(client):
    """The writer for ``client``'s store: :class:`RestWriter` over HTTP(S), else :class:`ClientWriter`."""
    store = mlflow_compat.tracking_store(client)
    route = mlflow_compat.rest_log_batch_route(store) if store is not None else None
    return RestWriter(store, route) if route is not None else ClientWriter(client)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _retry_after(value) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_invalid_request(exc: BaseException) -> bool:
    """True when the store refused the content (4xx semantics), not the transport."""
    code = getattr(exc, "error_code", None)
    return code in (
        "INVALID_PARAMETER_VALUE",
        "BAD_REQUEST",
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_STATE",
        "RESOURCE_ALREADY_EXISTS",
    )


def attempt_of(worker: list) -> tuple:
    """Which attempt of a task logged: (stage attempt, task attempt, task id). Spark restarts
    the task attempt at 0 in each stage attempt; the task id tells any two attempts apart."""
    return (worker[5] if len(worker) > 5 else 0, worker[2], worker[3])


class StageState:
    """What the sink keeps per (run, stage): the high-water step per worker series and the
    attempt that owns it, the tasks that ended, the open means and how far means were written."""

    __slots__ = ("agg", "done", "high_water", "mean_through")

    def __init__(self):
        self.high_water: dict[tuple, tuple] = {}  # (worker id, key) -> (attempt, highest step)
        self.done: set[int] = set()  # partitions whose task ended
        self.agg: dict[tuple, dict] = {}  # (key, step) -> {worker id: (value, timestamp)}
        self.mean_through: dict[str, int] = {}  # key -> highest step whose mean was written


def _new_pending() -> dict:
    return {"metrics": [], "params": {}, "tags": {}, "artifacts": []}


def _entities(request: dict) -> int:
    return len(request["metrics"]) + len(request["params"]) + len(request["tags"])


class Sink:
    """Delivers what tasks forwarded to one tracking store (see the module docstring).

    ``stage_tasks(stage)`` gives a stage's number of tasks (None: unknown yet);
    ``stages_finished(stages)`` gives those of ``stages`` Spark no longer runs (their means are
    written then, whether or not each task reported its end). Per-(run, stage) state is kept for
    the ``max_stages`` most recent stages, per-run state for the ``max_runs`` most recent runs.
    The driver makes one per store, from the settings named in ``Forwarder.sink_index``.
    """

    def __init__(
        self,
        client,
        tracking_uri: str,
        spool: Spool,
        stage_tasks: Callable[[int], int | None],
        batch_max_metrics: int = validation.MAX_METRICS_PER_BATCH,
        max_values_per_key: int | None = None,
        max_params_per_run: int | None = None,
        rate_limit: float = 0.0,
        aggregate: bool = True,
        max_attempts: int = 4,
        clock=time.monotonic,
        sleep=time.sleep,
        linger: float = 0.02,
        stages_finished: Callable[[set], set] | None = None,
        max_stages: int = 1024,
        max_runs: int = 1024,
    ):
        self.client = client
        self.writer = writer_for(client)
        self.tracking_uri = tracking_uri
        self.spool = spool
        self.stage_tasks = stage_tasks
        self.stages_finished = stages_finished
        self.batch_max_metrics = min(batch_max_metrics, validation.MAX_METRICS_PER_BATCH)
        self.max_values_per_key = max_values_per_key
        self.max_params_per_run = max_params_per_run
        self.limiter = RateLimiter(rate_limit, clock, sleep)
        self.aggregate = aggregate
        self.max_attempts = max_attempts
        self.clock, self.sleep = clock, sleep
        self.linger = linger
        self.queue: deque[Submission] = deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()  # state and custody: the sink thread outside store calls, stop()
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self._stages: BoundedDict = BoundedDict(max_stages)  # (run, stage) -> StageState
        self._params: BoundedDict = BoundedDict(max_runs)  # run -> {param: value}
        self._run_points: BoundedDict = BoundedDict(max_runs)  # run -> metric points sent
        self._run_params: BoundedDict = BoundedDict(max_runs)  # run -> param keys it holds (capped stores)
        self._refused_runs: BoundedDict = BoundedDict(max_runs)  # run -> the store's refusal
        self._unsent: deque[dict] = deque()  # this round's requests not yet delivered or spooled
        self._evacuated = False
        self._next_stage_check = 0.0
        self._spool_retry_at = 0.0
        self._down_until = 0.0  # after a transport failure: straight to the spool until then
        self._thread = threading.Thread(target=self._loop, name="spark-tracking-sink", daemon=True)
        self._stopping = False
        self._thread.start()

    # -- custody -----------------------------------------------------------------------------

    def submit(self, sub: Submission) -> concurrent.futures.Future:
        """Take custody of ``sub`` (queued for the sink thread, or spooled once the sink has stopped);
        the returned future is settled once its content is delivered or spooled."""
        self.counters["received"] += len(sub.metrics) + len(sub.params) + len(sub.tags) + len(sub.artifacts)
        observers.notify(sub)  # the live view (spark_tracking.live); a no-op when none is registered
        if self._evacuated:  # stopped: straight to disk, custody is the same
            with self.lock:
                self._spool_submissions([sub])
            return sub.future
        self.queue.append(sub)
        self.wake.set()
        return sub.future

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Emit open aggregates and deliver everything queued; True when all reached the store."""
        marker = Submission("flush")
        self.queue.append(marker)
        self.wake.set()
        try:
            return bool(marker.future.result(timeout))
        except concurrent.futures.TimeoutError:
            return False

    def stats(self) -> dict:
        """The sink's counters (received, stored, spooled...), dropped points by reason, the queue
        length and the number of spool files."""
        out: dict[str, Any] = dict(self.counters)
        out["dropped"] = dict(self.dropped)
        out["queued"] = len(self.queue)
        out["spool_files"] = len(self.spool.files())
        return out

    def stop(self, timeout: float = 10.0) -> bool:
        """Deliver what is held within ``timeout``; write what the store did not take to the
        spool (with one warning saying how much and where). True when all was delivered."""
        delivered = self.flush(timeout)
        self._stopping = True
        self.wake.set()
        if not delivered:
            self._evacuate()
        self._thread.join(0 if not delivered else timeout)
        return delivered

    def _evacuate(self) -> None:
        """The store did not take everything in time: move all custody to the spool, now."""
        with self.lock:
            self._evacuated = True
            before = self.counters["spooled"], self.dropped["spool_full"]
            subs = list(self.queue)
            self.queue.clear()
            unsent, self._unsent = list(self._unsent), deque()
            for request in unsent:
                self._to_spool(request)
            self._spool_submissions(subs)
            spooled = self.counters["spooled"] - before[0]
            lost = self.dropped["spool_full"] - before[1]
        store = strip_userinfo(self.tracking_uri)
        if spooled or lost:
            logger.warning(
                "spark_tracking sink: the store at %s did not take %d values in time; they are in "
                "the spool %s: run `spark-tracking replay` once the store answers%s",
                store,
                spooled,
                self.spool.directory,
                f" ({lost} more did not fit: spool_max_bytes, dropped)" if lost else "",
            )
        elif self.spool.files():
            logger.warning(
                "spark_tracking sink: the store at %s did not take what waits in the spool %s: run "
                "`spark-tracking replay` once the store answers",
                store,
                self.spool.directory,
            )

    def _spool_submissions(self, subs: list) -> None:
        """Spool submissions as requests, means of open steps included (called with the lock)."""
        pending: dict[str, dict] = {}
        for sub in subs:
            self._apply(sub, pending)
        self._close_aggregates(pending, lambda run, stage: True)
        for run, data in pending.items():
            for request in self._requests(run, data):
                self._to_spool(request)
            if data["artifacts"]:
                self.dropped["artifact_failed"] += len(data["artifacts"])
                logger.warning(
                    "spark_tracking sink: %d artifacts of run %s were not stored before exit",
                    len(data["artifacts"]),
                    run,
                )
        for sub in subs:
            if not sub.future.done():
                sub.future.set_result(sub.kind != "flush")

    # -- the sink thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self.wake.wait(1.0)
            self.wake.clear()
            if self.linger and self.queue:
                time.sleep(self.linger)  # let concurrent submissions coalesce into one round
            self._round()

    def _round(self) -> None:
        finished = self._finished_stages()  # asked before taking the queue: see _finished_stages
        with self.lock:
            if self._evacuated:
                return
            subs: list[Submission] = []
            while self.queue:
                subs.append(self.queue.popleft())
            pending: dict[str, dict] = {}
            flushing = False
            for sub in subs:
                flushing = sub.kind == "flush" or flushing
                self._apply(sub, pending)
            if finished:
                self._close_aggregates(pending, lambda run, stage: stage in finished)
            self._unsent = deque(r for run, data in pending.items() for r in self._requests(run, data))
        ok = False
        try:
            ok = self._send_all(pending)
            if flushing or self.clock() >= self._spool_retry_at:
                ok = self._drain_spool() and ok
        except Exception:
            logger.exception("spark_tracking sink: round failed; its requests go to the spool")
            with self.lock:
                if not self._evacuated:
                    while self._unsent:
                        self._to_spool(self._unsent.popleft())
        finally:
            for sub in subs:
                if not sub.future.done():
                    sub.future.set_result(ok if sub.kind == "flush" else True)

    def _apply(self, sub: Submission, pending: dict) -> None:
        if sub.kind == "flush":
            self._close_aggregates(pending, lambda run, stage: True)
        elif sub.kind == "done":
            self._task_done(sub, pending)
        elif sub.kind == "points":
            self._take(sub, pending)

    def _finished_stages(self) -> set:
        """Stages with open means that Spark no longer runs (at most once a second).

        Asked before the round takes the queue: a task's points are acknowledged before the
        task reports its end to Spark, so they are in the queue by the time the stage is over."""
        if self.stages_finished is None or self.clock() < self._next_stage_check:
            return set()
        with self.lock:
            open_stages = {stage for (_, stage), state in self._stages.items() if state.agg}
        if not open_stages:
            return set()
        self._next_stage_check = self.clock() + 1.0
        try:
            return set(self.stages_finished(open_stages))
        except Exception:
            logger.debug("spark_tracking sink: stage status unavailable", exc_info=True)
            return set()

    def _stage(self, run: str, stage: int) -> StageState:
        state = self._stages.get((run, stage))
        if state is None:
            state = self._stages[(run, stage)] = StageState()
        return state

    def _take(self, sub: Submission, pending: dict) -> None:
        run, worker = sub.run_id, sub.worker
        stage = worker[0]
        state = self._stage(run, stage)
        wid, who = layout.worker_id(worker), attempt_of(worker)
        out = pending.setdefault(run, _new_pending())
        expected = self.stage_tasks(stage)
        multi = worker[4] is not None or expected is None or expected > 1
        # the mean waits for one value per task; with ranks, how many there are is known only
        # when the stage ends (a task may start several ranks)
        mean_of = expected if worker[4] is None else None
        system_prefix = layout.SYSTEM_PREFIX
        for key, value, ts, step in sub.metrics:
            hw = state.high_water.get((wid, key))
            if hw is not None and hw[0] != who and step <= hw[1]:
                self.dropped["duplicate_attempt"] += 1
                continue
            state.high_water[(wid, key)] = (who, step if hw is None else max(hw[1], step))
            system = key.startswith(system_prefix)  # always per worker, never a mean (layout)
            if not multi and not system:
                out["metrics"].append((key, value, ts, step))
                continue
            out["metrics"].append((layout.worker_metric_key(key, wid), value, ts, step))
            if (
                self.aggregate
                and not system
                and ((key, step) in state.agg or step > state.mean_through.get(key, -1 << 63))
            ):
                values = state.agg.setdefault((key, step), {})
                values[wid] = (value, ts)
                if mean_of is not None and len(values) >= mean_of:
                    self._emit_mean(run, state, key, step, pending)
        seen = self._params.setdefault(run, {})
        for key, value in sub.params:
            if key in seen and seen[key] != value:
                self.dropped["param_conflict"] += 1
                logger.warning(
                    "spark_tracking: param %r of run %s was logged as %r and a task "
                    "logged %r; MLflow keeps the first value, the second is dropped",
                    key,
                    run,
                    seen[key],
                    value,
                )
                continue
            seen[key] = value
            out["params"][key] = value
        for key, value in sub.tags:
            out["tags"][key] = value
        out["artifacts"].extend(sub.artifacts)

    def _task_done(self, sub: Submission, pending: dict) -> None:
        """A task ended: once every task of its stage has, close the stage's open means."""
        run, stage = sub.run_id, sub.worker[0]
        state = self._stage(run, stage)
        state.done.add(sub.worker[1])
        expected = self.stage_tasks(stage)
        if expected is not None and len(state.done) >= expected:
            self._close_aggregates(pending, lambda r, s: r == run and s == stage)

    def _emit_mean(self, run: str, state: StageState, key: str, step: int, pending: dict) -> None:
        values = state.agg.pop((key, step))
        nums = [v for v, _ in values.values()]
        ts = max(t for _, t in values.values())
        pending.setdefault(run, _new_pending())["metrics"].append((key, sum(nums) / len(nums), ts, step))
        state.mean_through[key] = max(step, state.mean_through.get(key, step))
        self.counters["aggregated"] += 1

    def _close_aggregates(self, pending: dict, select: Callable[[str, int], bool]) -> None:
        for (run, stage), state in list(self._stages.items()):
            if state.agg and select(run, stage):
                for key, step in sorted(state.agg):
                    self._emit_mean(run, state, key, step, pending)

    # -- requests ----------------------------------------------------------------------------

    def _requests(self, run: str, data: dict) -> list[dict]:
        """Cut one run's pending data into log_batch requests within the store's limits: at most
        ``batch_max_metrics`` metrics, 100 params and tags, 1000 entities in all, and a JSON
        body under 1 MB (``validation``), plus ``max_values_per_key`` when set."""
        requests: list[dict] = []
        current: dict[str, Any] = {"run_id": run, "metrics": [], "params": [], "tags": []}
        size = 0
        per_key: dict[str, int] = defaultdict(int)
        key_cost: dict[str, int] = {}
        budget = validation.MAX_REQUEST_BYTES - 10_000  # the envelope and run id

        def close():
            nonlocal current, size
            if _entities(current):
                requests.append(current)
            current = {"run_id": run, "metrics": [], "params": [], "tags": []}
            size = 0
            per_key.clear()

        for point in data["metrics"]:
            key = point[0]
            cost = key_cost.get(key)
            if cost is None:  # the JSON of one metric: key, value, timestamp and step at full length
                cost = key_cost[key] = len(json.dumps(key)) + 110
            if (
                len(current["metrics"]) >= self.batch_max_metrics
                or _entities(current) >= validation.MAX_ENTITIES_PER_BATCH
                or size + cost > budget
                or (self.max_values_per_key and per_key[key] >= self.max_values_per_key)
            ):
                close()
            current["metrics"].append(list(point))
            per_key[key] += 1
            size += cost
        for kind, pairs in (("params", data["params"]), ("tags", data["tags"])):
            for key, value in pairs.items():
                cost = len(json.dumps(key)) + len(json.dumps(value)) + 30
                if (
                    len(current["params"]) + len(current["tags"]) >= validation.MAX_PARAMS_TAGS_PER_BATCH
                    or _entities(current) >= validation.MAX_ENTITIES_PER_BATCH
                    or size + cost > budget
                ):
                    close()
                current[kind].append([key, value])
                size += cost
        close()
        return requests

    def _send_all(self, pending: dict) -> bool:
        """Deliver this round's requests after anything spooled earlier (order per series)."""
        ok = True
        if self._unsent and (self.clock() < self._down_until or not self._drain_spool()):
            self._spool_unsent()
            ok = False
        while self._unsent and not self._evacuated:
            request = self._unsent[0]
            delivered = self._deliver(request, spool_on_failure=False)
            with self.lock:
                if self._unsent and self._unsent[0] is request:
                    self._unsent.popleft()
            if not delivered:
                ok = False
                if self.clock() < self._down_until:  # the store went down: keep order
                    self._spool_unsent()
                    break
        for run, data in pending.items():
            for path, b64 in data["artifacts"]:
                ok = self._deliver_artifact(run, path, b64) and ok
        return ok

    def _spool_unsent(self) -> None:
        with self.lock:
            while self._unsent and not self._evacuated:
                self._to_spool(self._unsent.popleft())

    def _log_batch(self, request: dict) -> None:
        if self.max_params_per_run is not None and request["params"]:
            self._cap_params(request, self.max_params_per_run)
            if not _entities(request):
                return
        self.limiter.acquire()
        self.writer.log_batch(request["run_id"], request["metrics"], request["params"], request["tags"])
        self.counters["requests"] += 1

    def _cap_params(self, request: dict, cap: int) -> None:
        """Keep the run within ``max_params_per_run`` (AML: 200): a param the run has no room
        for is dropped, counted and named in a warning, instead of the store refusing the whole
        request. The run's params are read from the store once (the driver logs its own)."""
        run = request["run_id"]
        held = self._run_params.get(run)
        if held is None:
            held = self._run_params[run] = self._params_in_store(run)
        kept, over = [], []
        for pair in request["params"]:
            if pair[0] in held or len(held) < cap:
                held.add(pair[0])
                kept.append(pair)
            else:
                over.append(pair[0])
        if over:
            request["params"] = kept
            self.dropped["param_cap"] += len(over)
            shown = ", ".join(repr(k) for k in over[:5]) + (f" and {len(over) - 5} more" if len(over) > 5 else "")
            logger.warning(
                "spark_tracking sink: run %s has %d params, the most its store keeps in a run; dropped %d "
                "param(s) that tasks logged: %s (counted in stats()['dropped']['param_cap']). Log fewer "
                "params per run, or put related values into one param.",
                run,
                len(held),
                len(over),
                shown,
            )

    def _params_in_store(self, run: str) -> set:
        try:
            return set(self.client.get_run(run).data.params)
        except Exception:  # cannot tell (the store is away): the store's refusal decides
            logger.debug("spark_tracking sink: params of run %s unreadable", run, exc_info=True)
            return set()

    def _deliver(self, request: dict, spool_on_failure: bool = True) -> bool:
        """Send one request with retries; split it when refused; spool it when unreachable.
        True when the store took all of it."""
        run = request["run_id"]
        if run in self._refused_runs:
            return self._drop_for_run(request)
        delay = 0.5
        for attempt in range(self.max_attempts):
            try:
                self._log_batch(request)
                self.counters["sent"] += _entities(request)
                self._count_run_points(run, len(request["metrics"]))
                return True
            except StoreError as exc:
                if exc.invalid:
                    return self._refused(request, exc)
                if attempt + 1 == self.max_attempts:
                    logger.warning(
                        "spark_tracking sink: store unreachable after %d attempts (%s); spooling to %s",
                        self.max_attempts,
                        exc,
                        self.spool.directory,
                    )
                    break
                self.counters["retried"] += 1
                wait = exc.retry_after
                if wait is None:
                    wait = delay * (1 + random.random())  # exponential backoff with jitter
                    delay *= 2
                self.sleep(min(wait, 60.0))
        self._down_until = self.clock() + 5.0
        if spool_on_failure:
            with self.lock:
                if not self._evacuated:
                    self._to_spool(request)
        else:
            self._spool_unsent()
        return False

    def _count_run_points(self, run: str, n: int) -> None:
        """Managed stores cap a run (Databricks: 1M metric points): say so before the cap."""
        before = self._run_points.get(run, 0)
        after = self._run_points[run] = before + n
        if before < RUN_POINTS_WARNING <= after:
            logger.warning(
                "spark_tracking: run %s has %d metric points; managed MLflow stores cap a run "
                "at %d. Log less often (every k steps) or start a new run.",
                run,
                after,
                RUN_POINTS_CAP,
            )

    def _refused(self, request: dict, exc: BaseException) -> bool:
        """The store refused a request: the whole run (deleted, unknown), or some entries."""
        if request["params"]:
            self._run_params.pop(request["run_id"], None)  # params the driver logged since: read again
        if _entities(request) > 1:
            reason = self._run_refusal(request["run_id"])
            if reason is not None:
                self._refused_runs[request["run_id"]] = reason
                logger.warning(
                    "spark_tracking sink: the store refuses every write to run %s (%s); what tasks "
                    "log to it is dropped and counted in stats()['dropped']['run_refused']. Log to "
                    "an active run (restore it, or start a new one).",
                    request["run_id"],
                    reason,
                )
                return self._drop_for_run(request)
        return self._split_refused(request, exc)

    def _run_refusal(self, run: str) -> str | None:
        """Why the store refuses all writes to ``run`` (deleted, unknown), or None: asked once,
        so a deleted run costs one extra call, not a split into a call per entry."""
        try:
            info = self.client.get_run(run).info
        except Exception as exc:  # noqa: BLE001 - a refusal says why; anything else: cannot tell
            if is_invalid_request(exc):
                return f"the run cannot be read: {str(exc)[:200]}"
            return None  # cannot tell (the store is away): split as usual
        if info.lifecycle_stage != "active":
            return f"run is {info.lifecycle_stage}"
        return None

    def _drop_for_run(self, request: dict) -> bool:
        self.dropped["run_refused"] += _entities(request)
        return False

    def _split_refused(self, request: dict, exc: BaseException) -> bool:
        entries = (
            [("metrics", m) for m in request["metrics"]]
            + [("params", p) for p in request["params"]]
            + [("tags", t) for t in request["tags"]]
        )
        if len(entries) <= 1:
            kind = entries[0][0] if entries else "request"
            self.dropped["rejected_by_store"] += 1
            logger.warning(
                "spark_tracking sink: the store refused %s %r of run %s: %s",
                kind[:-1],
                entries[0][1][0] if entries else "",
                request["run_id"],
                exc,
            )
            return False
        half = len(entries) // 2
        ok = True
        for part in (entries[:half], entries[half:]):
            sub = {"run_id": request["run_id"], "metrics": [], "params": [], "tags": []}
            for kind, item in part:
                sub[kind].append(item)
            ok = self._deliver(sub) and ok
        return ok

    def _deliver_artifact(self, run: str, path: str, b64: str) -> bool:
        try:
            write_artifact_bytes(self.client, run, path, base64.b64decode(b64))
            self.counters["artifacts"] += 1
            return True
        except Exception as exc:  # noqa: BLE001 - counted as dropped, with a warning
            self.dropped["artifact_failed"] += 1
            logger.warning("spark_tracking sink: artifact %r of run %s could not be stored: %s", path, run, exc)
            return False

    def _to_spool(self, request: dict) -> None:
        record = dict(request, tracking_uri=strip_userinfo(self.tracking_uri))
        n = _entities(request)
        if self.spool.write(record) is None:
            self.dropped["spool_full"] += n
            logger.warning(
                "spark_tracking sink: spool %s is full (spool_max_bytes); %d values dropped", self.spool.directory, n
            )
        else:
            self.counters["spooled"] += n
        self._spool_retry_at = self.clock() + 5.0

    def _drain_spool(self) -> bool:
        """Deliver spooled requests, oldest first; True when none of ours is left. A file
        another process claimed is theirs to deliver."""
        ours = strip_userinfo(self.tracking_uri)
        for path in self.spool.files():
            if self._evacuated:
                return False
            claimed = self.spool.claim(path)
            if claimed is None:
                continue  # another process took it
            try:
                record = Spool.read(claimed)
            except (OSError, ValueError) as exc:
                self.spool.set_aside(claimed, f"unreadable: {exc}")
                continue
            if record.get("tracking_uri") != ours:
                self.spool.release(claimed)
                continue  # another store's; `spark-tracking replay` delivers it
            request = {k: record[k] for k in ("run_id", "metrics", "params", "tags")}
            try:
                self._log_batch(request)
            except StoreError as exc:
                if exc.invalid:
                    self.spool.remove(claimed)
                    self._refused(request, exc)
                    continue
                self.spool.release(claimed)
                self._spool_retry_at = self._down_until = self.clock() + 5.0
                return False
            except BaseException:
                self.spool.release(claimed)
                raise
            self.spool.remove(claimed)
            self.counters["sent"] += _entities(request)
            self.counters["replayed"] += 1
        return True
