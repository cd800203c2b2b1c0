"""Wire protocol between Spark tasks and the driver relay.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object).
JSON keeps NaN and ±Infinity as MLflow allows them. Frames over the relay's limit close the
connection before their body is read.

Authentication, on every connection, before anything else:

1. relay → client ``{"nonce": <32 random bytes, hex>}``
2. client → relay ``{"auth": HMAC-SHA256(secret, nonce) hex, "v": 1}``
3. relay → client ``{"ok": true}``, or the connection is closed.

The per-session secret never crosses the wire; the relay compares in constant time.

Then request/response, one at a time per connection (the client waits for each reply).
Every request carries ``"id"``: a string unique per logical request for the life of the
sending process and UNCHANGED when the request is re-sent after a timeout or a reconnect (the
task side uses ``<random hex>:<n>``; a spilled frame keeps its id on disk). The relay never
dispatches an id twice: a repeat of an id in flight waits for the first dispatch's reply, a
repeat of a recently completed id gets the stored reply. ``"seq"`` numbers the requests of one
connection (the reply's ``"ack"`` echoes it).

The worker list ``"w"`` is ``[stage, partition, attempt, task_id, rank, stage_attempt]``:
``rank`` is the barrier rank or a started process's ``RANK``, else null; ``stage_attempt`` is
the task's stage attempt (0 where PySpark does not tell it: 3.5-4.3 do not give Python tasks
``stageAttemptNumber()``; the driver may know better). A relay also accepts the five-item list
of older clients (stage_attempt 0). The worker id of per-worker series is ``rank`` when set,
else ``partition``.

``{"id": i, "seq": n, "op": "points", "b": binding, "w": worker, ["r": run_id,]
"m": [[key, value, timestamp_ms, step], ...], "p": [[key, value], ...], "t": [[key, value],
...], "a": [[artifact_path, base64], ...]}`` → ``{"ack": n, "run": run_id}`` once the driver
has custody (the points are in its sink and will be delivered or spooled to disk), or
``{"ack": n, "error": text}`` (refused: the task splits the frame and drops, with a count,
what is refused alone — never re-sent as is). ``"r"`` names an explicit run; without it the
run active in the driver thread that bound the job.
``{"id": i, "seq": n, "op": "resolve", "b": ..., "w": ...}`` → ``{"ack": n, "run": run_id}``.
``{"id": i, "seq": n, "op": "done", "b": ..., "w": ..., ["e": error]}``: the task ended; →
``{"ack": n}``. The driver marks that worker done for every run it logged to; it never creates
a run for it. ``"e"`` (``DONE_ERROR``) is there when the task's function raised: one line,
``<exception type>: <first line of its message>``, at most ``MAX_ERROR_CHARS`` (``error_line``;
never a traceback or its locals). The driver reports it to its observers (the live view) as
the task attempt's failure, whether or not Spark retries the task.

Binding, from the driver to tasks (Spark local properties, ``PROP_*``) and from a task to the
processes it starts (environment, ``ENV_*``): relay address, session secret (only when the
executors do not have it in their environment), binding ``<thread token>:<store index>``,
``PROP_MAX_FRAME``: the relay's ``relay_max_frame_bytes``, so that a Spark-conf value
reaches tasks too, and ``PROP_SYSTEM_METRICS``: the sampling interval of workers' system
metrics when they are on for the run. ``ENV_WORKER`` is ``stage:partition:attempt:task_id[:stage_attempt]``.

Run operations a task requests (``RUN_OPS``; ``forwarding.driver.run_ops`` answers them on the
driver, which holds the credentials). Each carries "b", "w" and "id" like every request;
replies are ``{"ack": n, "v": value}`` or ``{"ack": n, "error": text}``. Runs and other MLflow
entities travel as ``{"$e": proto message name, "p": base64 of the serialized proto}``.

- ``{"op": "get_run", "r": run_id}`` → ``{"v": run}``; without "r": the run the task's driver
  thread has active (what ``mlflow.start_run()`` with no arguments hands out in a task).
- ``{"op": "create_run", "x": experiment_id, "u": user_id, "s": start_time_ms,
  "t": [[key, value], ...], "n": run_name}`` → ``{"v": run}``: a real run, a child of the
  task's driver run (tag ``mlflow.parentRunId``) unless "t" names a parent; in its parent's
  experiment unless "x" names one other than MLflow's default "0".
- ``{"op": "update_run", "r": run_id, "s": status, "e": end_time_ms, "n": run_name}`` →
  ``{"v": run_info}``.
- ``{"op": "store_call", "m": method, "a": [args...]}`` → ``{"v": result}``: one of
  ``STORE_CALLS`` (logged models, run inputs/outputs, metric history) on the driver's store.
- ``{"op": "artifact_chunk", "u": upload_id, "o": offset, "d": base64}`` → ``{"v": bytes
  held}``: part of a file (at most 4 MiB raw, less under a lowered ``relay_max_frame_bytes``),
  written to a file on the driver's disk at that offset (a re-sent chunk rewrites the same bytes).
- ``{"op": "artifact_commit", "u": upload_id, "k": "runs" | "models", "i": run or model id,
  "p": relative artifact path, "z": size}`` → ``{"v": true}`` once the file is in the
  artifact store of that run or logged model.
- ``{"op": "artifact_list", "k": ..., "i": ..., "p": path or null}`` → ``{"v": [file_info,
  ...]}``; ``{"op": "artifact_read", "u": read_id, "k": ..., "i": ..., "p": path, "o": offset,
  "n": length}`` → ``{"v": base64}``, shorter than "n" at the end of the file (reads such as
  ``log_table`` appending to a table, or loading a model, inside a task).

Jobs from driver threads that were never bound (hyperopt's dispatcher, thread pools) carry no
local properties. The driver adds a file ``SESSION_FILE_PREFIX<n>.json`` to the Spark session
(``SparkContext.addFile``) holding ``{"relay": address}`` (and ``"secret"`` when executors do
not have it in their environment); their tasks send ``SESSION_BINDING`` as "b" and the driver
answers for the session's active run (see ``forwarding.driver.forwarder``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct

VERSION = 2
HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 8 * 1024 * 1024
SESSION_BINDING = "*"


def thread_token(binding: str) -> str:
    """The driver thread's token in a binding ``<thread token>.<count>:<store index>`` (the
    count is new at each run start of that thread; ``forwarding.driver.run_watch``)."""
    return binding.partition(":")[0].partition(".")[0]


SESSION_FILE_PREFIX = "spark-tracking-session-"
#: operations tasks request on the driver's store (see above); answered by ``forwarding.driver.run_ops``
RUN_OPS = frozenset(
    {
        "get_run",
        "create_run",
        "update_run",
        "store_call",
        "artifact_chunk",
        "artifact_commit",
        "artifact_list",
        "artifact_read",
    }
)
#: tracking-store methods a task may call through "store_call" (reads and writes a task's
#: MLflow code makes besides runs, metrics, params and tags: MLflow 3 logged models, inputs,
#: experiments)
STORE_CALLS = frozenset(
    {
        "create_logged_model",
        "get_logged_model",
        "finalize_logged_model",
        "set_logged_model_tags",
        "delete_logged_model_tag",
        "log_logged_model_params",
        "log_outputs",
        "log_inputs",
        "record_logged_model",
        "get_metric_history",
        "search_logged_models",
        # experiments: the task's code names them (mlflow.set_experiment, Lightning's MLFlowLogger)
        "get_experiment_by_name",
        "get_experiment",
        "create_experiment",
        "search_experiments",
        "set_experiment_tag",
        "delete_experiment",
        "restore_experiment",
        "rename_experiment",
    }
)


#: the field of a "done" request naming the error the task's function raised (see above)
DONE_ERROR = "e"
#: the longest error line a "done" carries
MAX_ERROR_CHARS = 300

PROP_RELAY = "spark_tracking.relay"
PROP_SECRET = "spark_tracking.secret"
PROP_BINDING = "spark_tracking.binding"
PROP_MAX_FRAME = "spark_tracking.max_frame"
#: system metrics of the job's workers: the sampling interval in seconds, set by the driver when
#: system metrics logging is on for the run (absent or empty: off; ``forwarding.task.system_metrics``)
PROP_SYSTEM_METRICS = "spark_tracking.system_metrics"
ENV_RELAY = "SPARK_TRACKING_RELAY"
ENV_SECRET = "SPARK_TRACKING_RELAY_SECRET"
ENV_BINDING = "SPARK_TRACKING_BINDING"
ENV_WORKER = "SPARK_TRACKING_WORKER"
ENV_MAX_FRAME = "SPARK_TRACKING_MAX_FRAME"
#: the relay secret for a Spark Connect server this process starts (``remote("local[2]")``,
#: ``pyspark --remote local``): the startup hook puts a fresh one in the environment of every
#: process that is not a Spark worker, so a server the process starts later, and that server's
#: Python workers, inherit it; the client uses it once it sees the server holds it
#: (``forwarding.driver.connect``), and tasks read it when ``ENV_SECRET`` is not set. It never
#: travels in job tags or properties.
ENV_LOCAL_SECRET = "SPARK_TRACKING_LOCAL_RELAY_SECRET"
#: the tracking URI of the task store (``forwarding.task.store``), MLflow's in a bound task and in
#: every process it starts, from their first instruction; the URI it stands in front of is kept in
#: ``ENV_DELEGATE_URI``
TASK_STORE_SCHEME = "spark-tracking-task"
TASK_STORE_URI = TASK_STORE_SCHEME + ":"
ENV_DELEGATE_URI = "SPARK_TRACKING_TASK_DELEGATE_URI"
#: ``PROP_SYSTEM_METRICS`` as a task exports it to the processes it starts (torchrun ranks)
ENV_SYSTEM_METRICS = "SPARK_TRACKING_TASK_SYSTEM_METRICS"
#: MLflow's tag naming a run's parent run
PARENT_TAG = "mlflow.parentRunId"
#: the scheme of artifact URIs in a bound task (the task store hands them out)
ARTIFACT_SCHEME = "spark-tracking-artifacts"
#: largest file a task can log as an artifact (a model of several hundred MB fits)
MAX_TASK_ARTIFACT_BYTES = 2 * 1024**3

# Spark Connect: the binding travels as a job tag (``forwarding.driver.connect``), which tasks
# read from the local property ``spark.job.tags`` (``forwarding.task.connect``)
TAG_PREFIX = "spark_tracking_v1_"
JOB_TAGS = "spark.job.tags"
#: a Spark Connect session's conf naming its binding for jobs of threads that carry no tag (a
#: thread pool's): Spark sets every SQL conf whose key starts with "spark" as a local property
#: of the jobs of each SQL execution (``SQLExecution.withSQLConfPropagated``, Spark 3.5-4.1),
#: so tasks read it like a tag; encoded as a tag (``encode_tag``), never the secret
SESSION_TAG_CONF = "spark.sparktracking.session_binding"
#: relay address of a drop binding: ``drop:<folder>`` (empty folder: no place to drop)
DROP = "drop:"
#: the run id a drop binding hands to ``mlflow.start_run()`` in a task: the client decides the
#: real run when it moves the files in
DROP_RUN = "spark-tracking-pending"


class ProtocolError(Exception):
    """A frame that cannot be decoded; the connection that sent it is closed."""


#: messages are built by this package, never circular: no check (a third of a points frame's cost)
_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def encode(message: dict) -> bytes:
    """One frame: the length header, then ``message`` as compact UTF-8 JSON."""
    body = _JSON.encode(message).encode("utf-8")
    return HEADER.pack(len(body)) + body


def encoded_size(value) -> int:
    """Bytes ``value`` takes inside a frame (UTF-8 JSON, as :func:`encode` writes it)."""
    return len(_JSON.encode(value).encode("utf-8"))


def decode_body(body: bytes) -> dict:
    """The message in a frame's body; :class:`ProtocolError` unless it is a JSON object."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def check_length(length: int, limit: int = MAX_FRAME_BYTES) -> None:
    """:class:`ProtocolError` when a frame announces more than ``limit`` bytes."""
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")


def auth_digest(secret: str, nonce: str) -> str:
    """The answer to the relay's challenge ``nonce``: HMAC-SHA256 of it under ``secret``, in hex."""
    return hmac.new(secret.encode("utf-8"), nonce.encode("ascii"), hashlib.sha256).hexdigest()


def check_auth(secret: str, nonce: str, message: dict) -> bool:
    """True when ``message['auth']`` answers ``nonce`` with ``secret`` (compared in constant time)."""
    offered = message.get("auth")
    if not isinstance(offered, str):
        return False
    return hmac.compare_digest(offered.encode("utf-8", "replace"), auth_digest(secret, nonce).encode("ascii"))


# -- blocking socket helpers (client side) ----------------------------------------------------


def recv_exactly(sock, n: int, before_recv=None) -> bytes:
    """``n`` bytes from ``sock``; ``before_recv()`` (if given) runs before each ``recv`` (it may
    wait for the socket to be readable, or raise to give up)."""
    chunks = []
    while n:
        if before_recv is not None:
            before_recv()
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("relay closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock, limit: int = MAX_FRAME_BYTES, before_recv=None) -> dict:
    """The next message on blocking ``sock``; ``limit`` and ``before_recv`` as in
    :func:`check_length` and :func:`recv_exactly`."""
    (length,) = HEADER.unpack(recv_exactly(sock, HEADER.size, before_recv))
    check_length(length, limit)
    return decode_body(recv_exactly(sock, length, before_recv))


def encode_tag(payload: dict) -> str:
    """One Connect tag carrying the binding: base64url has no comma (Spark's tag separator)."""
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return TAG_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_tags(job_tags: str | None) -> dict | None:
    """The binding payload among a job's tags (``spark.job.tags``), or None."""
    if not job_tags or TAG_PREFIX not in job_tags:
        return None
    for tag in job_tags.split(","):
        at = tag.find(TAG_PREFIX)
        if at < 0:
            continue
        body = tag[at + len(TAG_PREFIX) :]
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, TypeError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("b"), str):
            return payload
    return None


def error_line(error) -> str:
    """One line for a task's error: an exception as ``<type>: <its message's first line>``, a
    string as its first non-blank line; stripped and cut to ``MAX_ERROR_CHARS``. "" for
    anything else. Used on both sides: what a task sends and what the driver accepts."""
    if isinstance(error, BaseException):
        message = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    elif isinstance(error, str):
        text = next((line.strip() for line in error.splitlines() if line.strip()), "")
    else:
        return ""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
