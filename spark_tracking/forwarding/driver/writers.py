"""How the sink talks to a store: one ``log_batch`` per call with no hidden retries (the sink
owns the retry policy), the errors that tell a refusal from an outage, and the rate limit."""

from __future__ import annotations

import math
import os
import tempfile
import time

from ..._compat import mlflow as mlflow_compat


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
    otherwise a transport failure (retry), with the server's Retry-After when it sent one.
    ``answered``: the store answered with an internal error (MLflow's INTERNAL_ERROR, or an
    exception of a local store) rather than not answering — an outage, or content it fails on
    (a step beyond 64 bits on SQLite): the sink asks the store again to tell them apart."""

    def __init__(self, message: str, invalid: bool = False, retry_after: float | None = None, answered: bool = False):
        super().__init__(message)
        self.invalid, self.retry_after, self.answered = invalid, retry_after, answered


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
            raise StoreError(
                f"HTTP {status}: {text}",
                retry_after=_retry_after(response.headers.get("Retry-After")),
                answered=status == 500 and '"INTERNAL_ERROR"' in text,
            )
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
            code = getattr(exc, "error_code", None)
            raise StoreError(
                f"{type(exc).__name__}: {exc}",
                invalid=is_invalid_request(exc),
                answered=code == "INTERNAL_ERROR" or (code is None and not isinstance(exc, OSError)),
            ) from None


def writer_for(client):
    """The writer for ``client``'s store: :class:`RestWriter` over HTTP(S), else :class:`ClientWriter`."""
    store = mlflow_compat.tracking_store(client)
    route = mlflow_compat.rest_log_batch_route(store) if store is not None else None
    return RestWriter(store, route) if route is not None else ClientWriter(client)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _retry_after(value, now=time.time) -> float | None:
    """Seconds a ``Retry-After`` header asks for: a number of seconds or an HTTP-date
    (RFC 9110 §10.2.3; ``now()`` is the wall clock the date is measured from)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError, IndexError):  # not a date either: back off as usual
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
