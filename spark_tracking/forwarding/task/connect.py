"""Task side of forwarding on Spark Connect (see ``forwarding.driver.connect`` for the client).

A Spark Connect client cannot set Spark local properties; it tags its operations instead, and
the tasks of their jobs find the tags in the local property ``spark.job.tags``
(``protocol.decode_tags``). ``task_property`` reads the binding's properties from the tag when
the driver did not set them (the binding asks it for ``spark_tracking.relay`` and friends).
Never the secret: tasks take it from their environment (``SPARK_TRACKING_RELAY_SECRET``).

Where no driver is reachable the tag carries a *drop* binding (``drop:<folder>``):
``DropConnection`` stands in for the relay connection and writes what the task logs into
``task_drop_dir`` (or counts it as dropped, with a warning, when there is no folder).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import TextIO

from .. import protocol
from ..protocol import DROP, DROP_RUN, JOB_TAGS, SESSION_TAG_CONF, decode_tags

logger = logging.getLogger(__name__)


# -- task side -------------------------------------------------------------------------------

_last: list = [None, None]  # [task context, its payload]: tags are parsed once per task


def _payload(ctx) -> dict | None:
    """The binding of the task's job: its tag, else its Connect session's (``SESSION_TAG_CONF``:
    a job from a thread that never started a run, e.g. a thread pool's)."""
    if _last[0] is not ctx:
        try:
            payload = decode_tags(ctx.getLocalProperty(JOB_TAGS))
            if payload is None:
                payload = decode_tags(ctx.getLocalProperty(SESSION_TAG_CONF))
        except Exception:  # noqa: BLE001 - never break the task: no binding then
            payload = None
        _last[:] = [ctx, payload]
    return _last[1]


def task_property(ctx, name: str) -> str | None:
    """A binding property (``spark_tracking.relay``, ``.binding``, ``.max_frame``) of a task
    whose job a Spark Connect session tagged; None when it was not. Never the secret."""
    payload = _payload(ctx)
    if payload is None:
        return None
    if name == protocol.PROP_RELAY:
        return payload["r"] if payload.get("r") else DROP + str(payload.get("d") or "")
    if name == protocol.PROP_BINDING:
        return payload["b"]
    if name == protocol.PROP_MAX_FRAME:
        return str(payload["f"]) if payload.get("f") else None
    return None


def task_connection(relay: str):
    """What a task talks to for a drop binding (``drop:<folder>``); None for a real relay."""
    if not relay.startswith(DROP):
        return None
    return DropConnection(relay[len(DROP) :])


class DropConnection:
    """Stands in for the relay connection when no driver is reachable: each request becomes a
    line of a file in the drop folder (a task's file is complete once its "done" is written,
    fsynced and renamed to ``.jsonl``; a process a task started completes its file when it
    ends in order). Without a folder, points are counted as dropped and the worker logs why,
    once."""

    _warned = False
    dropped = 0
    sock = None  # no socket: callers that tune a relay connection's socket leave it alone

    def __init__(self, folder: str):
        self.folder = folder
        self.path: str | None = None
        self.fh: TextIO | None = None
        self.seq = 0

    def request(self, message: dict, timeout: float | None = None, on_wait=None) -> dict:
        """Take one request as the relay would; the reply has the relay's shape."""
        self.seq += 1
        op = message.get("op")
        if op == "resolve":
            return {"ack": self.seq, "run": DROP_RUN}
        if not self.folder:
            self._drop(message)
            return {"ack": self.seq, "run": DROP_RUN}
        if self.fh is None and op == "done":
            return {"ack": self.seq}  # nothing logged since the last file: nothing to hand over
        if self.fh is None:
            os.makedirs(self.folder, exist_ok=True)
            token = protocol.thread_token(str(message.get("b", ""))) or "unbound"
            self.path = os.path.join(self.folder, f"{token}-{os.getpid()}-{uuid.uuid4().hex}.jsonl")
            self.fh = open(self.path + ".part", "a", encoding="utf-8")  # noqa: SIM115 - open for the task's life
        self.fh.write(json.dumps({k: v for k, v in message.items() if k != "seq"}, separators=(",", ":")))
        self.fh.write("\n")
        if op == "done":
            self.close(complete=True)
        return {"ack": self.seq, "run": DROP_RUN}

    def _drop(self, message: dict) -> None:
        n = sum(len(message.get(k) or ()) for k in ("m", "p", "t", "a"))
        DropConnection.dropped += n
        if n and not DropConnection._warned:
            DropConnection._warned = True
            logger.warning(
                "spark_tracking: %d points logged in this Spark task were dropped: its Spark Connect "
                "session has no driver relay the task can reach (serverless compute, or no "
                "SPARK_TRACKING_RELAY_SECRET) and no task_drop_dir. Set SPARK_TRACKING_TASK_DROP_DIR "
                "to a folder both the client and the tasks can write (a Unity Catalog volume) "
                "before the run starts",
                n,
            )

    def close(self, complete: bool = True) -> None:
        """Close the open file and make it visible to the client (``.jsonl``): after a task's
        "done", and when the process's shipper shuts down in order — a process a task started
        (a torchrun rank, a subprocess) never sends "done", and what it wrote is all there is
        once its shipper has flushed. A process that dies leaves its ``.part`` file behind
        (its task is retried and logs again); ``complete=False`` does the same on purpose."""
        if self.fh is None:
            return
        fh, self.fh = self.fh, None
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        if complete:
            assert self.path is not None  # set with fh
            os.replace(self.path + ".part", self.path)
