"""The driver sink: turns points received from tasks into ``log_batch`` calls on the store.

One daemon thread (``spark-tracking-sink``) works in rounds: it takes every submission that
arrived, names per-worker series and folds the aggregate, cuts requests within MLflow's
limits (``batch_max_metrics`` ≤ 1000 metrics, 100 params+tags, 1 MB; AML: ≤ 250 values of
one metric), respects ``rate_limit`` and sends. A request the store refuses as invalid is
split so one bad value never rejects the rest. A request that fails in transport is retried
with exponential backoff and jitter; when retries are used up it goes to the durable spool
and is retried from there. When a round ends, every submission in it is settled (delivered,
or held for retry), which is when the relay acknowledges the task.

Worker identity (see README "Forwarding"): when a stage has more than one task, worker ``w``
(the barrier rank or the partition id) logs ``<key>/worker_<w>`` and the sink adds the mean
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
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
from collections import defaultdict, deque
from typing import Callable

from .. import validation
from . import observers

logger = logging.getLogger(__name__)

RUN_POINTS_CAP = 1_000_000  # Databricks-hosted MLflow: metric points per run
RUN_POINTS_WARNING = 900_000

class Submission:
    """What one relay request hands the sink: points of one task, a task end, or a flush."""

    __slots__ = ("kind", "run_id", "worker", "metrics", "params", "tags", "artifacts", "future")

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
    """

    def __init__(self, directory: str, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._n = 0

    def used_bytes(self) -> int:
        try:
            return sum(e.stat().st_size for e in os.scandir(self.directory) if e.name.endswith(".json"))
        except FileNotFoundError:
            return 0

    def write(self, request: dict) -> str | None:
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
        try:
            return sorted(os.path.join(self.directory, n) for n in os.listdir(self.directory) if n.endswith(".json"))
        except FileNotFoundError:
            return []

    @staticmethod
    def read(path: str) -> dict:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)


def strip_userinfo(uri: str) -> str:
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

    def __init__(self, store, timeout: float = 30.0):
        from mlflow.protos.service_pb2 import LogBatch

        self.store = store
        self.timeout = timeout
        self.endpoint, self.method = store._METHOD_TO_INFO[LogBatch]

    def log_batch(self, run_id, metrics, params, tags) -> None:
        from mlflow.utils.rest_utils import http_request

        # The JSON MLflow's LogBatch message maps to, built directly: the protobuf round trip
        # costs more CPU than the request itself. Non-finite doubles as proto3 JSON spells them.
        body = {
            "run_id": run_id,
            "metrics": [{"key": k, "value": v if math.isfinite(v) else _NON_FINITE[str(v)],
                         "timestamp": ts, "step": step} for k, v, ts, step in metrics],
            "params": [{"key": k, "value": v} for k, v in params],
            "tags": [{"key": k, "value": v} for k, v in tags],
        }
        try:
            response = http_request(self.store.get_host_creds(), self.endpoint, self.method, max_retries=0,
                                    timeout=self.timeout, raise_on_status=False, json=body)
        except Exception as exc:  # connection refused, timeout, DNS, TLS
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
        from mlflow.entities import Metric, Param, RunTag

        try:
            self.client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics],
                                  params=[Param(k, v) for k, v in params], tags=[RunTag(k, v) for k, v in tags],
                                  synchronous=True)
        except Exception as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}", invalid=is_invalid_request(exc)) from None


def writer_for(client):
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if hasattr(store, "get_host_creds") and hasattr(type(store), "_METHOD_TO_INFO"):
        return RestWriter(store)
    return ClientWriter(client)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _retry_after(value) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_invalid_request(exc: BaseException) -> bool:
    """True when the store refused the content (4xx semantics), not the transport."""
    code = getattr(exc, "error_code", None)
    return code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST",
                    "INVALID_STATE", "RESOURCE_ALREADY_EXISTS")



class Sink:
    def __init__(self, client, tracking_uri: str, spool: Spool, stage_tasks: Callable[[int], int | None],
                 batch_max_metrics: int = 1000, max_values_per_key: int | None = None,
                 rate_limit: float = 0.0, aggregate: bool = True, max_attempts: int = 4,
                 clock=time.monotonic, sleep=time.sleep, linger: float = 0.02):
        self.client = client
        self.writer = writer_for(client)
        self.tracking_uri = tracking_uri
        self.spool = spool
        self.stage_tasks = stage_tasks
        self.batch_max_metrics = min(batch_max_metrics, validation.MAX_METRICS_PER_BATCH)
        self.max_values_per_key = max_values_per_key
        self.limiter = RateLimiter(rate_limit, clock, sleep)
        self.aggregate = aggregate
        self.max_attempts = max_attempts
        self.clock, self.sleep = clock, sleep
        self.linger = linger
        self.queue: deque[Submission] = deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.counters = defaultdict(int)
        self.dropped = defaultdict(int)
        self._agg: dict[tuple, dict] = {}
        self._stage_done: dict[tuple, set] = defaultdict(set)
        self._high_water: dict[tuple, tuple] = {}
        self._params: dict[str, dict] = defaultdict(dict)
        self._run_points: dict[str, int] = defaultdict(int)
        self._spool_retry_at = 0.0
        self._down_until = 0.0  # after a transport failure: straight to the spool until then
        self._thread = threading.Thread(target=self._loop, name="spark-tracking-sink", daemon=True)
        self._stopping = False
        self._thread.start()

    # -- custody -----------------------------------------------------------------------------

    def submit(self, sub: Submission) -> concurrent.futures.Future:
        self.counters["received"] += len(sub.metrics) + len(sub.params) + len(sub.tags) + len(sub.artifacts)
        self.queue.append(sub)
        self.wake.set()
        observers.notify(sub)  # the live view (spark_tracking.live); a no-op when none is registered
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
        out = dict(self.counters)
        out["dropped"] = dict(self.dropped)
        out["queued"] = len(self.queue)
        out["spool_files"] = len(self.spool.files())
        return out

    def stop(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stopping = True
        self.wake.set()
        self._thread.join(timeout)

    # -- the sink thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self.wake.wait(1.0)
            self.wake.clear()
            if self.linger and self.queue:
                time.sleep(self.linger)  # let concurrent submissions coalesce into one round
            try:
                self._round()
            except Exception:
                logger.exception("spark_tracking sink: round failed")

    def _round(self) -> None:
        subs: list[Submission] = []
        while self.queue:
            subs.append(self.queue.popleft())
        pending: dict[str, dict] = {}
        flushing = False
        for sub in subs:
            if sub.kind == "flush":
                flushing = True
                self._close_aggregates(pending, lambda key: True)
            elif sub.kind == "done":
                self._task_done(sub, pending)
            else:
                self._take(sub, pending)
        ok = self._send_all(pending)
        if flushing or self.clock() >= self._spool_retry_at:
            ok = self._drain_spool() and ok
        for sub in subs:
            sub.future.set_result(ok if sub.kind == "flush" else True)

    def _worker_id(self, worker: list) -> int:
        return worker[4] if worker[4] is not None else worker[1]

    def _take(self, sub: Submission, pending: dict) -> None:
        run = sub.run_id
        stage, partition, attempt = sub.worker[0], sub.worker[1], sub.worker[2]
        wid = self._worker_id(sub.worker)
        out = pending.setdefault(run, {"metrics": [], "params": {}, "tags": {}, "artifacts": []})
        expected = self.stage_tasks(stage)
        multi = sub.worker[4] is not None or expected is None or expected > 1
        for key, value, ts, step in sub.metrics:
            hw_key = (run, stage, partition, key)
            hw = self._high_water.get(hw_key)
            if hw is not None and hw[0] != attempt and step <= hw[1]:
                self.dropped["duplicate_attempt"] += 1
                continue
            self._high_water[hw_key] = (attempt, step if hw is None else max(hw[1], step))
            if not multi:
                out["metrics"].append((key, value, ts, step))
                continue
            out["metrics"].append((f"{key}/worker_{wid}", value, ts, step))
            if self.aggregate:
                agg_key = (run, stage, key, step)
                values = self._agg.setdefault(agg_key, {})
                values[wid] = (value, ts)
                if expected is not None and len(values) >= expected:
                    self._emit_aggregate(agg_key, pending)
        seen = self._params[run]
        for key, value in sub.params:
            if key in seen and seen[key] != value:
                self.dropped["param_conflict"] += 1
                logger.warning("spark_tracking: param %r of run %s was logged as %r and a task "
                               "logged %r; MLflow keeps the first value, the second is dropped",
                               key, run, seen[key], value)
                continue
            seen[key] = value
            out["params"][key] = value
        for key, value in sub.tags:
            out["tags"][key] = value
        out["artifacts"].extend(sub.artifacts)

    def _task_done(self, sub: Submission, pending: dict) -> None:
        """A task ended: once every task of its stage has, close the stage's open aggregates."""
        run, stage = sub.run_id, sub.worker[0]
        done = self._stage_done[(run, stage)]
        done.add(sub.worker[1])
        expected = self.stage_tasks(stage)
        if expected is not None and len(done) >= expected:
            self._close_aggregates(pending, lambda key: key[0] == run and key[1] == stage)

    def _emit_aggregate(self, agg_key: tuple, pending: dict) -> None:
        values = self._agg.pop(agg_key)
        run, _stage, key, step = agg_key
        nums = [v for v, _ in values.values()]
        mean = sum(nums) / len(nums)
        ts = max(t for _, t in values.values())
        pending.setdefault(run, {"metrics": [], "params": {}, "tags": {}, "artifacts": []})["metrics"].append(
            (key, mean, ts, step))
        self.counters["aggregated"] += 1

    def _close_aggregates(self, pending: dict, select) -> None:
        for agg_key in [k for k in self._agg if select(k)]:
            self._emit_aggregate(agg_key, pending)

    # -- requests ----------------------------------------------------------------------------

    def _requests(self, run: str, data: dict) -> list[dict]:
        """Cut one run's pending data into log_batch requests within the store's limits."""
        requests: list[dict] = []
        metrics = data["metrics"]
        entries = [("p", k, v) for k, v in data["params"].items()] + [("t", k, v) for k, v in data["tags"].items()]
        current = {"run_id": run, "metrics": [], "params": [], "tags": []}
        size = 0
        per_key: dict[str, int] = defaultdict(int)

        def close():
            nonlocal current, size
            if current["metrics"] or current["params"] or current["tags"]:
                requests.append(current)
            current = {"run_id": run, "metrics": [], "params": [], "tags": []}
            size = 0
            per_key.clear()

        for point in metrics:
            cost = len(point[0]) + 48
            if (len(current["metrics"]) >= self.batch_max_metrics or size + cost > 900_000
                    or (self.max_values_per_key and per_key[point[0]] >= self.max_values_per_key)):
                close()
            current["metrics"].append(list(point))
            per_key[point[0]] += 1
            size += cost
        for kind, key, value in entries:
            cost = len(key) + len(value) + 16
            if (len(current["params"]) + len(current["tags"]) >= validation.MAX_PARAMS_TAGS_PER_BATCH
                    or size + cost > 900_000):
                close()
            current["params" if kind == "p" else "tags"].append([key, value])
            size += cost
        close()
        return requests

    def _send_all(self, pending: dict) -> bool:
        """Deliver this round's requests after anything spooled earlier (order per series)."""
        requests = [r for run, data in pending.items() for r in self._requests(run, data)]
        ok = True
        if requests and (self.clock() < self._down_until or not self._drain_spool()):
            for request in requests:
                self._to_spool(request)
            requests, ok = [], False
        for i, request in enumerate(requests):
            if not self._deliver(request):
                if self.clock() < self._down_until:  # the store went down: keep order
                    for rest in requests[i + 1:]:
                        self._to_spool(rest)
                    ok = False
                    break
                ok = False
        for run, data in pending.items():
            for path, b64 in data["artifacts"]:
                ok = self._deliver_artifact(run, path, b64) and ok
        return ok

    def _log_batch(self, request: dict) -> None:
        self.limiter.acquire()
        self.writer.log_batch(request["run_id"], request["metrics"], request["params"], request["tags"])
        self.counters["requests"] += 1

    def _deliver(self, request: dict, spool_on_failure: bool = True) -> bool:
        """Send one request with retries; split it when refused; spool it when unreachable."""
        delay = 0.5
        for attempt in range(self.max_attempts):
            try:
                self._log_batch(request)
                n = len(request["metrics"]) + len(request["params"]) + len(request["tags"])
                self.counters["sent"] += n
                self._count_run_points(request["run_id"], len(request["metrics"]))
                return True
            except StoreError as exc:
                if exc.invalid:
                    return self._split_refused(request, exc)
                if attempt + 1 == self.max_attempts:
                    logger.warning("spark_tracking sink: store unreachable after %d attempts (%s); "
                                   "spooling to %s", self.max_attempts, exc, self.spool.directory)
                    break
                self.counters["retried"] += 1
                wait = exc.retry_after
                if wait is None:
                    wait = delay * (1 + random.random())  # exponential backoff with jitter
                    delay *= 2
                self.sleep(min(wait, 60.0))
        self._down_until = self.clock() + 5.0
        if spool_on_failure:
            self._to_spool(request)
        return False

    def _count_run_points(self, run: str, n: int) -> None:
        """Managed stores cap a run (Databricks: 1M metric points): say so before the cap."""
        before = self._run_points[run]
        after = self._run_points[run] = before + n
        if before < RUN_POINTS_WARNING <= after:
            logger.warning("spark_tracking: run %s has %d metric points; managed MLflow stores cap a run "
                           "at %d. Log less often (every k steps) or start a new run.", run, after, RUN_POINTS_CAP)

    def _split_refused(self, request: dict, exc: BaseException) -> bool:
        entries = ([("metrics", m) for m in request["metrics"]] + [("params", p) for p in request["params"]]
                   + [("tags", t) for t in request["tags"]])
        if len(entries) <= 1:
            kind = entries[0][0] if entries else "request"
            self.dropped["rejected_by_store"] += 1
            logger.warning("spark_tracking sink: the store refused %s %r of run %s: %s",
                           kind[:-1], entries[0][1][0] if entries else "", request["run_id"], exc)
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
        except Exception as exc:
            self.dropped["artifact_failed"] += 1
            logger.warning("spark_tracking sink: artifact %r of run %s could not be stored: %s", path, run, exc)
            return False

    def _to_spool(self, request: dict) -> None:
        record = dict(request, tracking_uri=strip_userinfo(self.tracking_uri))
        n = len(request["metrics"]) + len(request["params"]) + len(request["tags"])
        if self.spool.write(record) is None:
            self.dropped["spool_full"] += n
            logger.warning("spark_tracking sink: spool %s is full (spool_max_bytes); %d values dropped",
                           self.spool.directory, n)
        else:
            self.counters["spooled"] += n
        self._spool_retry_at = self.clock() + 5.0

    def _drain_spool(self) -> bool:
        """Deliver spooled requests, oldest first; True when the spool is empty afterwards."""
        files = self.spool.files()
        for path in files:
            try:
                record = Spool.read(path)
            except (OSError, ValueError):
                continue
            if record.get("tracking_uri") != strip_userinfo(self.tracking_uri):
                continue  # another store's; `spark-tracking replay` delivers it
            request = {k: record[k] for k in ("run_id", "metrics", "params", "tags")}
            try:
                self._log_batch(request)
            except StoreError as exc:
                if exc.invalid:
                    os.remove(path)
                    self._split_refused(request, exc)
                    continue
                self._spool_retry_at = self._down_until = self.clock() + 5.0
                return False
            os.remove(path)
            self.counters["sent"] += len(request["metrics"]) + len(request["params"]) + len(request["tags"])
            self.counters["replayed"] += 1
        return True
