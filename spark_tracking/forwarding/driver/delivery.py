"""Delivery of the sink's requests to one store: the retry policy (exponential backoff with
jitter, the server's Retry-After), the spool when the store cannot be reached, splitting a
request the store refuses so one bad value never rejects the rest, a run the store refuses as
a whole, and the caps managed stores put on a run (params, metric points).

A request that fails in transport is retried; when retries are used up it goes to the durable
spool (``spool.Spool``) and is retried from there, after anything spooled earlier (order per
series).
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections import deque

from .batches import entities
from .bounded import BoundedDict
from .spool import Spool, strip_userinfo
from .tally import Tally
from .writers import RateLimiter, StoreError, is_invalid_request, write_artifact_bytes, writer_for

logger = logging.getLogger(__name__)

RUN_POINTS_CAP = 1_000_000  # Databricks-hosted MLflow: metric points per run
RUN_POINTS_WARNING = RUN_POINTS_CAP * 9 // 10
#: the longest Retry-After the sink thread sleeps through; a longer one sends what comes to the
#: spool until it has passed (the thread keeps taking submissions, flush and stop answer)
MAX_SLEEP = 10.0


class Delivery:
    """Sends requests to the store behind ``client`` (see the module docstring).

    ``unsent`` holds a round's requests not yet delivered or spooled; ``lock`` (the sink's)
    guards them and ``evacuated`` (set once the sink stopped and moved custody to the spool)."""

    def __init__(
        self,
        client,
        tracking_uri: str,
        spool: Spool,
        lock: threading.Lock,
        max_params_per_run: int | None = None,
        rate_limit: float = 0.0,
        max_attempts: int = 4,
        clock=time.monotonic,
        sleep=time.sleep,
        max_runs: int = 1024,
    ):
        self.client = client
        self.writer = writer_for(client)
        self.tracking_uri = tracking_uri
        self.spool = spool
        self.lock = lock
        self.max_params_per_run = max_params_per_run
        self.limiter = RateLimiter(rate_limit, clock, sleep)
        self.max_attempts = max_attempts
        self.clock, self.sleep = clock, sleep
        self.tally = Tally(max_runs)  # received, sent, spooled, dropped: the session's and per run
        self.counters, self.dropped = self.tally.counters, self.tally.dropped
        self.run_points: BoundedDict = BoundedDict(max_runs)  # run -> metric points sent
        self.run_params: BoundedDict = BoundedDict(max_runs)  # run -> param keys it holds (capped stores)
        self.refused_runs: BoundedDict = BoundedDict(max_runs)  # run -> the store's refusal
        self.unsent: deque[dict] = deque()
        self.evacuated = False
        self.spool_retry_at = 0.0
        self.down_until = 0.0  # after a transport failure: straight to the spool until then
        self.wait_until = 0.0  # the store asked to wait until then (Retry-After): no request before

    def send_all(self, pending: dict) -> bool:
        """Deliver this round's requests after anything spooled earlier (order per series)."""
        ok = True
        if self.unsent and (self.clock() < self.down_until or not self.drain_spool()):
            self.spool_unsent()
            ok = False
        while self.unsent and not self.evacuated:
            request = self.unsent[0]
            delivered = self.deliver(request, spool_on_failure=False)
            with self.lock:
                if self.unsent and self.unsent[0] is request:
                    self.unsent.popleft()
            if not delivered:
                ok = False
                if self.clock() < self.down_until:  # the store went down: keep order
                    self.spool_unsent()
                    break
        for run, data in pending.items():
            for path, b64 in data["artifacts"]:
                ok = self._deliver_artifact(run, path, b64) and ok
        return ok

    def spool_unsent(self) -> None:
        """Move the round's undelivered requests to the spool (order kept)."""
        with self.lock:
            while self.unsent and not self.evacuated:
                self.to_spool(self.unsent.popleft())

    def _log_batch(self, request: dict) -> None:
        if self.max_params_per_run is not None and request["params"]:
            self._cap_params(request, self.max_params_per_run)
            if not entities(request):
                return
        self.limiter.acquire()
        self.writer.log_batch(request["run_id"], request["metrics"], request["params"], request["tags"])
        self.counters["requests"] += 1

    def _cap_params(self, request: dict, cap: int) -> None:
        """Keep the run within ``max_params_per_run`` (AML: 200): a param the run has no room
        for is dropped, counted and named in a warning, instead of the store refusing the whole
        request. The run's params are read from the store first, and again on each request once
        the run nears half the cap (the driver logs params of its own)."""
        run = request["run_id"]
        held = self.run_params.get(run)
        if held is None or len(held) + len(request["params"]) > cap // 2:
            # past half the cap, read the run again: the driver logs params of its own
            held = self.run_params[run] = self._params_in_store(run) | (held or set())
        kept, over = [], []
        for pair in request["params"]:
            if pair[0] in held or len(held) < cap:
                held.add(pair[0])
                kept.append(pair)
            else:
                over.append(pair[0])
        if over:
            request["params"] = kept
            self.tally.drop("param_cap", len(over), run)
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

    def deliver(self, request: dict, spool_on_failure: bool = True, suspect: bool = False) -> bool:
        """Send one request with retries; split it when refused; spool it when unreachable.
        True when the store took all of it. ``suspect``: part of a request the store failed on
        while it took other requests, so an internal error is a refusal of this content."""
        run = request["run_id"]
        if run in self.refused_runs:
            return self._drop_for_run(request)
        delay = 0.5
        for attempt in range(self.max_attempts):
            try:
                self._log_batch(request)
                self.tally.count("sent", entities(request), run)
                self._count_run_points(run, len(request["metrics"]))
                return True
            except StoreError as exc:
                if exc.invalid or (suspect and exc.answered):
                    return self.refused(request, exc, suspect)
                if attempt + 1 == self.max_attempts:
                    if exc.answered and self.store_answers(run):
                        return self.refused(request, exc, suspect=True)
                    logger.warning(
                        "spark_tracking sink: store unreachable after %d attempts (%s); spooling to %s",
                        self.max_attempts,
                        exc,
                        self.spool.directory,
                    )
                    break
                wait = exc.retry_after
                if wait is not None and wait > MAX_SLEEP:  # honoured in full, without blocking the sink
                    self.wait_until = self.clock() + wait
                    logger.warning(
                        "spark_tracking sink: the store asked to wait %.0f s before the next request "
                        "(Retry-After); spooling to %s until then",
                        wait,
                        self.spool.directory,
                    )
                    break
                self.counters["retried"] += 1
                if wait is None:
                    wait = delay * (1 + random.random())  # exponential backoff with jitter
                    delay *= 2
                self.sleep(wait)
        self.down_until = max(self.clock() + 5.0, self.wait_until)
        if spool_on_failure:
            with self.lock:
                if not self.evacuated:
                    self.to_spool(request)
        else:
            self.spool_unsent()
        return False

    def store_answers(self, run: str) -> bool:
        """Whether the store takes an empty request for ``run`` now: an internal error it keeps
        giving for one request while it answers this is about the content, not an outage."""
        try:
            self.writer.log_batch(run, [], [], [])
        except StoreError:
            return False
        return True

    def _count_run_points(self, run: str, n: int) -> None:
        """Managed stores cap a run (Databricks: 1M metric points): say so before the cap."""
        before = self.run_points.get(run, 0)
        after = self.run_points[run] = before + n
        if before < RUN_POINTS_WARNING <= after:
            logger.warning(
                "spark_tracking: run %s has %d metric points; managed MLflow stores cap a run "
                "at %d. Log less often (every k steps) or start a new run.",
                run,
                after,
                RUN_POINTS_CAP,
            )

    def refused(self, request: dict, exc: BaseException, suspect: bool = False) -> bool:
        """The store refused a request: the whole run (deleted, unknown), or some entries."""
        if request["params"]:
            self.run_params.pop(request["run_id"], None)  # params the driver logged since: read again
        if entities(request) > 1:
            reason = self._run_refusal(request["run_id"])
            if reason is not None:
                self.refused_runs[request["run_id"]] = reason
                logger.warning(
                    "spark_tracking sink: the store refuses every write to run %s (%s); what tasks "
                    "log to it is dropped and counted in stats()['dropped']['run_refused']. Log to "
                    "an active run (restore it, or start a new one).",
                    request["run_id"],
                    reason,
                )
                return self._drop_for_run(request)
        return self._split_refused(request, exc, suspect)

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
        self.tally.drop("run_refused", entities(request), request["run_id"])
        return False

    def _split_refused(self, request: dict, exc: BaseException, suspect: bool = False) -> bool:
        entries = (
            [("metrics", m) for m in request["metrics"]]
            + [("params", p) for p in request["params"]]
            + [("tags", t) for t in request["tags"]]
        )
        if len(entries) <= 1:
            kind = entries[0][0] if entries else "request"
            self.tally.drop("rejected_by_store", 1, request["run_id"])
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
            ok = self.deliver(sub, suspect=suspect) and ok
        return ok

    def _deliver_artifact(self, run: str, path: str, b64: str) -> bool:
        try:
            write_artifact_bytes(self.client, run, path, base64.b64decode(b64))
            self.counters["artifacts"] += 1
            return True
        except Exception as exc:  # noqa: BLE001 - counted as dropped, with a warning
            self.tally.drop("artifact_failed", 1, run)
            logger.warning("spark_tracking sink: artifact %r of run %s could not be stored: %s", path, run, exc)
            return False

    def to_spool(self, request: dict) -> None:
        """Write one request to the spool, or count it dropped when the spool is full."""
        record = dict(request, tracking_uri=strip_userinfo(self.tracking_uri))
        n = entities(request)
        if self.spool.write(record) is None:
            self.tally.drop("spool_full", n, request["run_id"])
            logger.warning(
                "spark_tracking sink: spool %s is full (spool_max_bytes); %d values dropped", self.spool.directory, n
            )
        else:
            self.tally.count("spooled", n, request["run_id"])
        self.spool_retry_at = max(self.clock() + 5.0, self.wait_until)

    def drain_spool(self) -> bool:
        """Deliver spooled requests, oldest first; True when none of ours is left. A file
        another process claimed is theirs to deliver."""
        if self.clock() < self.wait_until:
            return False
        ours = strip_userinfo(self.tracking_uri)
        for path in self.spool.files():
            if self.evacuated:
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
                if exc.invalid or (exc.answered and self.store_answers(request["run_id"])):
                    self.spool.remove(claimed)
                    self.refused(request, exc, suspect=not exc.invalid)
                    continue
                self.spool.release(claimed)
                self.spool_retry_at = self.down_until = self.clock() + 5.0
                return False
            except BaseException:
                self.spool.release(claimed)
                raise
            self.spool.remove(claimed)
            self.tally.count("sent", entities(request), request["run_id"])
            self.counters["replayed"] += 1
        return True
