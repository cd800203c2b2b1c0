"""The driver relay: a TCP server (asyncio, one daemon thread) that takes points from tasks.

Security: every connection must answer an HMAC challenge with the per-session secret
(constant-time compare) within ``AUTH_TIMEOUT`` seconds, before any other frame is read;
frames are bounded (``relay_max_frame_bytes``; 1 KiB before authentication); at most
``relay_max_connections`` connections at once. A malformed or truncated frame closes that
connection and nothing else. The relay listens on the driver's address only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from concurrent.futures import Future
from typing import Protocol

from . import protocol

logger = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
_PRE_AUTH_LIMIT = 1024


class Handler(Protocol):
    """What the relay does with authenticated requests (blocking calls, run off the loop)."""

    def points(self, binding: str, worker: list, message: dict) -> tuple[str | None, Future | None]:
        """Take custody; return the run id and a future settled once the points are delivered
        or held for retry (the ack waits for it at most ``ack_wait`` seconds)."""

    def resolve(self, binding: str, worker: list) -> str | None: ...

    def done(self, binding: str, worker: list) -> Future | None: ...

    def run_op(self, op: str, binding: str, worker: list, message: dict) -> dict:
        """One of ``protocol.RUN_OPS`` (runs, logged models, artifacts a task asks for)."""


class Relay:
    def __init__(self, secret: str, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 max_connections: int = 1024, max_frame_bytes: int = protocol.MAX_FRAME_BYTES,
                 ack_wait: float = 2.0):
        self.secret = secret
        self.handler = handler
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.max_frame_bytes = max_frame_bytes
        self.ack_wait = ack_wait
        self.counters = {"connections": 0, "refused_connections": 0, "auth_failures": 0,
                         "protocol_errors": 0, "requests": 0}
        self.open_connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._writers: set = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "Relay":
        self._thread = threading.Thread(target=self._run, name="spark-tracking-relay", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port, limit=self.max_frame_bytes + 8)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown():
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(timeout)

    async def _read_frame(self, reader: asyncio.StreamReader, limit: int) -> dict:
        header = await reader.readexactly(protocol.HEADER.size)
        (length,) = protocol.HEADER.unpack(header)
        protocol.check_length(length, limit)
        return protocol.decode_body(await reader.readexactly(length))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            self.counters["refused_connections"] += 1
            writer.close()
            return
        self.open_connections += 1
        self.counters["connections"] += 1
        self._writers.add(writer)
        try:
            nonce = secrets.token_hex(32)
            writer.write(protocol.encode({"nonce": nonce, "v": protocol.VERSION}))
            await writer.drain()
            hello = await asyncio.wait_for(self._read_frame(reader, _PRE_AUTH_LIMIT), AUTH_TIMEOUT)
            if not protocol.check_auth(self.secret, nonce, hello):
                self.counters["auth_failures"] += 1
                logger.warning("spark_tracking relay: refused a connection from %s without the "
                               "session secret", writer.get_extra_info("peername"))
                return
            writer.write(protocol.encode({"ok": True}))
            await writer.drain()
            loop = asyncio.get_running_loop()
            while True:
                try:
                    message = await self._read_frame(reader, self.max_frame_bytes)
                except asyncio.IncompleteReadError:
                    return  # the client closed (between or inside a frame)
                self.counters["requests"] += 1
                reply, settled = await loop.run_in_executor(None, self._dispatch, message)
                if settled is not None:
                    try:  # live delivery: ack once the store has the points, or after ack_wait
                        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(settled)), self.ack_wait)
                    except asyncio.TimeoutError:
                        pass
                writer.write(protocol.encode(reply))
                await writer.drain()
        except protocol.ProtocolError as exc:
            self.counters["protocol_errors"] += 1
            logger.warning("spark_tracking relay: closed a connection: %s", exc)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            self.counters["auth_failures"] += 1
        except (ConnectionError, OSError):
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()

    def _dispatch(self, message: dict) -> tuple[dict, Future | None]:
        seq = message.get("seq")
        op = message.get("op")
        binding = message.get("b")
        worker = message.get("w")
        if not isinstance(binding, str) or not _valid_worker(worker):
            return {"ack": seq, "error": "request needs a binding string and a worker list"}, None
        try:
            if op == "points":
                run, settled = self.handler.points(binding, worker, message)
                return {"ack": seq, "run": run}, settled
            if op == "resolve":
                return {"ack": seq, "run": self.handler.resolve(binding, worker)}, None
            if op == "done":
                return {"ack": seq}, self.handler.done(binding, worker)
            if op in protocol.RUN_OPS:
                return {"ack": seq, **self.handler.run_op(op, binding, worker, message)}, None
            return {"ack": seq, "error": f"unknown op {op!r}"}, None
        except Exception as exc:
            logger.warning("spark_tracking relay: request failed", exc_info=True)
            return {"ack": seq, "error": f"{type(exc).__name__}: {exc}"}, None


def _valid_worker(worker) -> bool:
    return (isinstance(worker, list) and len(worker) == 5
            and all(isinstance(x, int) and not isinstance(x, bool) for x in worker[:4])
            and (worker[4] is None or isinstance(worker[4], int)))
