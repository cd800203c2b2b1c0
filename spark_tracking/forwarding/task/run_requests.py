"""A task's requests to the driver (``protocol.RUN_OPS``): one operation on the driver's store,
re-sent with the same id after a lost connection, and the error a task sees when the relay
never answers. The task store and the task artifact repository both ask through here."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from mlflow.exceptions import MlflowException

from .. import protocol
from ..records import decode
from . import executor, transport


class DriverUnreachable(ConnectionError):
    """The driver relay did not answer a task's request. ``address``: the relay's (None when
    there is no relay to ask); ``cause``: the last connection error."""

    def __init__(self, text: str, address: str | None = None, cause: BaseException | None = None):
        super().__init__(text)
        self.address, self.cause = address, cause


#: what a task cannot do without the driver, by request
_NEEDS_DRIVER = {
    "create_run": "create a run (mlflow.start_run with a name, nested=True, tags or a parent; "
    "MlflowClient().create_run)",
    "get_run": "read a run",
    "update_run": "end a run",
    "store_call": "call the driver's store",
    "artifact_chunk": "send an artifact",
    "artifact_commit": "send an artifact",
    "artifact_list": "list artifacts",
    "artifact_read": "read an artifact",
}


def _unreachable(address: str, op: str, cause: BaseException | None) -> DriverUnreachable:
    """The error of a request the relay at ``address`` never answered: cause, fix, and what
    happens to what the task logged."""
    return DriverUnreachable(
        f"spark_tracking: the driver's relay is unreachable at {address} ({cause}), so this task "
        f"cannot {_NEEDS_DRIVER.get(op, repr(op))}. Fix: keep the driver (and its spark_tracking "
        "session) running while tasks run, and make that address reachable from the executors: set "
        "relay_host (spark.sparktracking.relay_host or SPARK_TRACKING_RELAY_HOST) to an address of "
        "the driver they can reach and let relay_port through the firewall. What this task logged "
        "before is kept: its points wait in its buffer and spill file and reach the driver's run "
        "once the relay answers.",
        address,
        cause,
    )


_connections = threading.local()


def rewrite_artifact_uris(message) -> None:
    """Runs and logged models in a task store their artifacts through the driver."""
    name = message.DESCRIPTOR.full_name
    if name == "mlflow.Run":
        message = message.info
        name = "mlflow.RunInfo"
    if name == "mlflow.RunInfo":
        message.artifact_uri = f"{protocol.ARTIFACT_SCHEME}:/runs/{message.run_id or message.run_uuid}"
    elif name == "mlflow.LoggedModel":
        message.info.artifact_uri = f"{protocol.ARTIFACT_SCHEME}:/models/{message.info.model_id}"


def request(op: str, fields: dict, timeout: float = 30.0, attempts: int = 3):
    """One run operation on the driver (``protocol.RUN_OPS``), re-sent with the same id after a
    lost connection; the decoded value of the reply. Raises DriverUnreachable."""
    b = executor.current_binding()
    if b is None:
        raise DriverUnreachable("this process is not bound to a driver run")
    if b.relay.startswith(protocol.DROP):  # Spark Connect with no driver to reach: nobody to ask
        raise DriverUnreachable(
            "spark_tracking: this Spark Connect task has no driver to reach; its "
            "points go to task_drop_dir (docs/connect.md)"
        )
    message = {"op": op, "b": b.binding, "w": b.worker, "id": f"{uuid.uuid4().hex}:{op}", **fields}
    key = (os.getpid(), b.relay, b.secret)
    pool: dict = _connections.__dict__  # (pid, relay, secret) -> this thread's connection
    delay, error = 0.05, None
    for attempt in range(attempts):
        conn = pool.get(key)
        if conn is None:
            conn = pool[key] = transport.open_connection(b.relay, b.secret, timeout)  # Spark Connect: drop:<dir>
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            reply = conn.request(dict(message))
        except (OSError, socket.timeout) as exc:  # ConnectionError included
            if isinstance(exc, transport.Refused) and conn.sock is not None:
                # the relay answered with an error (the connection stays open): the driver
                # refused the request, re-sending it cannot help
                raise MlflowException(f"spark_tracking: the driver refused {op!r}: {exc}") from None
            conn.close()
            error = exc
            if attempt + 1 < attempts:
                time.sleep(delay)  # backoff before reconnecting, in the requesting task only
                delay *= 4
            continue
        return decode(reply.get("v"), rewrite_artifact_uris)
    raise _unreachable(b.relay, op, error)
