"""Wire protocol between Spark tasks and the driver relay.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object).
JSON keeps NaN and ±Infinity as MLflow allows them. Frames over the relay's limit close the
connection before their body is read.

Authentication, on every connection, before anything else:

1. relay → client ``{"nonce": <32 random bytes, hex>}``
2. client → relay ``{"auth": HMAC-SHA256(secret, nonce) hex, "v": 1}``
3. relay → client ``{"ok": true}``, or the connection is closed.

The per-session secret never crosses the wire; the relay compares in constant time.

Then request/response, one at a time per connection (the client waits for each ack):

``{"seq": n, "op": "points", "b": binding, "w": [stage, partition, attempt, task_id, rank],
"m": [[key, value, timestamp_ms, step], ...], "p": [[key, value], ...], "t": [[key, value],
...], "a": [[artifact_path, base64], ...]}`` → ``{"ack": n, "run": run_id}`` once the driver
holds the points (in its sink queue or its disk spool), or ``{"ack": n, "error": text}``.
``{"seq": n, "op": "resolve", "b": ..., "w": ...}`` → ``{"ack": n, "run": run_id}``.
``{"seq": n, "op": "done", "b": ..., "w": ...}``: the task ended; → ``{"ack": n}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

VERSION = 1
HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 8 * 1024 * 1024


class ProtocolError(Exception):
    """A frame that cannot be decoded; the connection that sent it is closed."""


def encode(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def check_length(length: int, limit: int = MAX_FRAME_BYTES) -> None:
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")


def auth_digest(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode("utf-8"), nonce.encode("ascii"), hashlib.sha256).hexdigest()


def check_auth(secret: str, nonce: str, message: dict) -> bool:
    offered = message.get("auth")
    if not isinstance(offered, str):
        return False
    return hmac.compare_digest(offered.encode("utf-8", "replace"), auth_digest(secret, nonce).encode("ascii"))


# -- blocking socket helpers (client side) ----------------------------------------------------

def recv_exactly(sock, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("relay closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock, limit: int = MAX_FRAME_BYTES) -> dict:
    (length,) = HEADER.unpack(recv_exactly(sock, HEADER.size))
    check_length(length, limit)
    return decode_body(recv_exactly(sock, length))
