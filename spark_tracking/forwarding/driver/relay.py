"""The driver relay: a TCP server (asyncio, one daemon thread) that takes points from tasks.

Security: every connection must answer an HMAC challenge with the per-session secret
(constant-time compare) within ``AUTH_TIMEOUT`` seconds, before any other frame is read;
frames are bounded (``relay_max_frame_bytes``; 1 KiB before authentication). A malformed or
truncated frame closes that connection and nothing else. The relay listens on the driver's
address only.

Connections: at most ``relay_max_connections`` authenticated connections count against the
limit; connections still authenticating are bounded separately (as many again, at least 64)
and dropped after ``AUTH_TIMEOUT``, or sooner when that pool is full (the oldest goes first),
so silent clients cannot take the slots of real ones. When every slot is
taken, a newly authenticated connection takes the slot of the one idle the longest (its client
reconnects on its next request); only when all are busy is the newcomer refused.

Requests (protocol v2, see ``protocol``): each op is a function in ``Relay.ops`` (add one with
``Relay.register``). A request carrying an ``"id"`` is dispatched once: a repeat of an id in
flight waits for the first dispatch and gets its reply, a repeat of a recently completed id
gets the stored reply (``REQUEST_LOG_SIZE`` ids remembered). Workers are
``[stage, partition, attempt, task_id, rank, stage_attempt]``; five items (an older client)
mean stage attempt 0.

Threads: points, "resolve" and "done" run on threads of their own, apart from the run
operations (``protocol.RUN_OPS``: they call the store), so a stalled store cannot hold up a
task's points or its end; a run operation that takes longer than ``run_op_timeout`` seconds
gets an error reply naming the operation (the task raises it as an MlflowException). Their
results, and the sink's deliveries the acks wait on, come back to the loop through one inbox
(``_Inbox``): one wake-up of the loop for all that arrive together.

Acknowledgement: an ack to ``points`` means the driver has custody (the sink delivers or
spools it, at interpreter exit too). The relay holds the ack while the store takes the points
(live delivery), but each task has one budget of ``ack_wait`` seconds for such waits in all,
not one per frame: a stalled store delays a task's end by ``ack_wait`` at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Protocol

from .. import protocol
from ..records import Worker
from .bounded import BoundedDict
from .pool import DaemonPool

logger = logging.getLogger(__name__)

AUTH_TIMEOUT = 3.0
#: seconds a run operation (``protocol.RUN_OPS``) may take on the driver before the task gets an error
RUN_OP_TIMEOUT = 120.0
_TASK_OPS = ("points", "resolve", "done")  # run on their own threads, apart from run operations
_TASK_THREADS = 4
_RUN_OP_THREADS = 8
REQUEST_LOG_SIZE = 65_536
_PRE_AUTH_LIMIT = 1024
_MIN_AUTHENTICATING = 64  # connections allowed to be authenticating at once, at least
_CONTENT = ("m", "p", "t", "a")  # what a points request carries (in the sink's custody once dispatched)

#: an op: (binding, worker, message) -> (reply fields, future settled once the store took the
#: request's content, or None)
Op = Callable[[str, Worker, dict], "tuple[dict, Future | None]"]


class Handler(Protocol):
    """What the relay does with authenticated requests (blocking calls, run off the loop)."""

    def points(self, binding: str, worker: Worker, message: dict) -> tuple[str | None, Future | None]:
        """Take custody; return the run id and a future settled once the points are delivered
        or held for retry."""

    def resolve(self, binding: str, worker: Worker) -> str | None:
        """The run id the task's points go to, or None when the binding names no run."""

    def done(self, binding: str, worker: Worker) -> Future | None:
        """The task ended: a future settled once everything it logged is delivered or held."""

    def run_op(self, op: str, binding: str, worker: Worker, message: dict) -> dict:
        """One of ``protocol.RUN_OPS`` (runs, logged models, artifacts a task asks for)."""


def task_key(binding: str, worker: Worker) -> tuple:
    """One task attempt (the ranks of processes it started included)."""
    return (binding, worker.stage, worker.partition, worker.attempt, worker.task_id, worker.stage_attempt)


class Relay:
    """The relay server; ``start()`` binds ``host:port`` (0: a free port) and serves ``handler``.

    The driver builds it from the settings ``relay_host``, ``relay_port``,
    ``relay_max_connections`` and ``relay_max_frame_bytes``; ``ack_wait`` is each task's budget
    for waiting on the store (see the module docstring)."""

    def __init__(
        self,
        secret: str,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 1024,
        max_frame_bytes: int = protocol.MAX_FRAME_BYTES,
        ack_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        run_op_timeout: float = RUN_OP_TIMEOUT,
    ):
        self.secret = secret
        self.handler = handler
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.max_frame_bytes = max_frame_bytes
        self.ack_wait = ack_wait
        self.clock = clock
        self.run_op_timeout = run_op_timeout
        self.counters = {
            "connections": 0,
            "refused_connections": 0,
            "auth_failures": 0,
            "protocol_errors": 0,
            "requests": 0,
            "repeated_requests": 0,
            "idle_closed": 0,
            "run_op_timeouts": 0,
        }
        self.ops: dict[str, Op] = {}
        self.register("points", self._points)
        self.register("resolve", lambda binding, worker, message: ({"run": handler.resolve(binding, worker)}, None))
        self.register("done", lambda binding, worker, message: ({}, handler.done(binding, worker)))
        for op in protocol.RUN_OPS:  # runs, reads and artifacts a task asks the driver for
            self.register(op, functools.partial(self._run_op, op))
        self._authenticating: dict = {}  # writers still authenticating, oldest first
        self._idle_since: dict = {}  # authenticated writer -> clock() when it last went idle (None: busy)
        self._requests: BoundedDict = BoundedDict(REQUEST_LOG_SIZE)  # id -> asyncio future of the reply
        self._budgets: BoundedDict = BoundedDict(REQUEST_LOG_SIZE)  # task key -> ack wait left
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: _Inbox | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._writers: set = set()
        self._task_pool = DaemonPool(_TASK_THREADS, "spark-tracking-relay")
        self._run_op_pool = DaemonPool(_RUN_OP_THREADS, "spark-tracking-run-op")

    @property
    def address(self) -> str:
        """``host:port`` the relay listens on (the port is known once started)."""
        return f"{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Authenticated connections (the ones ``relay_max_connections`` bounds)."""
        return len(self._idle_since)

    def register(self, op: str, fn: Op) -> None:
        """Serve requests ``{"op": op, ...}`` with ``fn(binding, worker, message)``, which returns
        the reply's fields and a future to wait on (within the task's ack budget) or None."""
        self.ops[op] = fn

    def _run_op(self, op: str, binding: str, worker: Worker, message: dict):
        return self.handler.run_op(op, binding, worker, message), None

    def _points(self, binding: str, worker: Worker, message: dict):
        run, settled = self.handler.points(binding, worker, message)
        return {"run": run}, settled

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Relay:
        """Listen in a daemon thread; returns once listening, or raises why it could not."""
        self._thread = threading.Thread(target=self._run, name="spark-tracking-relay", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._inbox = _Inbox(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._serve,
                    self.host,
                    self.port,
                    limit=self.max_frame_bytes + 8,
                    backlog=min(4096, max(100, self.max_connections)),
                )
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to start(), which raises it in the caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the server and every connection, wait up to ``timeout`` for the thread; idempotent."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown():
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            serving = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if serving:  # their connections are closed: let them end (a dispatch may be running)
                await asyncio.wait(serving, timeout=min(timeout, 2.0))
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(timeout)
        self._task_pool.shutdown()
        self._run_op_pool.shutdown()

    # -- connections -------------------------------------------------------------------------

    async def _read_frame(self, reader: asyncio.StreamReader, limit: int) -> dict:
        header = await reader.readexactly(protocol.HEADER.size)
        (length,) = protocol.HEADER.unpack(header)
        protocol.check_length(length, limit)
        message = protocol.decode_body(await reader.readexactly(length))
        rows = message.get("m")
        if type(rows) is list:
            # rows as tuples: the collector stops tracking a tuple of numbers and strings the first
            # time it looks at it, but walks a list at every full collection for as long as it
            # lives; frames of many connections at once otherwise fill the oldest generation with
            # rows and make each full collection walk them all (the relay's main cost at 1,024
            # connections). The decode check downstream sees the same values and shapes.
            with contextlib.suppress(TypeError):  # a row that is not a list is left for the decode check
                message["m"] = list(map(tuple, rows))
        return message

    def _refuse(self, writer) -> None:
        self.counters["refused_connections"] += 1
        writer.close()

    def _take_slot(self, writer) -> bool:
        """Count an authenticated connection; when full, close the one idle the longest."""
        if len(self._idle_since) >= self.max_connections:
            idle = [(since, id(w), w) for w, since in self._idle_since.items() if since is not None]
            if not idle:
                return False
            _, _, oldest = min(idle)
            del self._idle_since[oldest]
            oldest.close()
            self.counters["idle_closed"] += 1
        self._idle_since[writer] = None
        return True

    async def _authenticate(self, reader, writer) -> bool:
        nonce = secrets.token_hex(32)
        writer.write(protocol.encode({"nonce": nonce, "v": protocol.VERSION}))
        await writer.drain()
        hello = await asyncio.wait_for(self._read_frame(reader, _PRE_AUTH_LIMIT), AUTH_TIMEOUT)
        if protocol.check_auth(self.secret, nonce, hello):
            return True
        self.counters["auth_failures"] += 1
        logger.warning(
            "spark_tracking relay: refused a connection from %s without the session secret",
            writer.get_extra_info("peername"),
        )
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._authenticating) >= max(self.max_connections, _MIN_AUTHENTICATING):
            # full of connections that have not authenticated: the oldest goes (a real client
            # answers the challenge in a round trip, a silent one holds its socket for
            # AUTH_TIMEOUT), so one silent client cannot lock the tasks out
            oldest = next(iter(self._authenticating))
            del self._authenticating[oldest]
            oldest.close()
            self.counters["refused_connections"] += 1
        self._authenticating[writer] = None
        self._writers.add(writer)
        try:
            try:
                authenticated = await self._authenticate(reader, writer)
            finally:
                self._authenticating.pop(writer, None)
            if not authenticated:
                return
            if not self._take_slot(writer):
                self._refuse(writer)
                return
            self.counters["connections"] += 1
            writer.write(protocol.encode({"ok": True}))
            await writer.drain()
            while True:
                if writer not in self._idle_since:
                    return  # its slot went to a newer connection while idle
                self._idle_since[writer] = self.clock()
                try:
                    message = await self._read_frame(reader, self.max_frame_bytes)
                except asyncio.IncompleteReadError:
                    return  # the client closed (between or inside a frame)
                if writer not in self._idle_since:
                    return
                self._idle_since[writer] = None
                self.counters["requests"] += 1
                reply = await self._answer(message)
                seq = message.get("seq")
                del message  # an idle connection holds nothing of its last request
                writer.write(protocol.encode(dict(reply, ack=seq)))
                await writer.drain()
        except protocol.ProtocolError as exc:
            self.counters["protocol_errors"] += 1
            logger.warning("spark_tracking relay: closed a connection: %s", exc)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            self.counters["auth_failures"] += 1
        except (ConnectionError, OSError):
            pass
        finally:
            self._idle_since.pop(writer, None)
            self._writers.discard(writer)
            writer.close()

    # -- requests ----------------------------------------------------------------------------

    async def _answer(self, message: dict) -> dict:
        """The reply to a request, dispatching each request id once (``protocol``: request ids)."""
        rid = message.get("id")
        if not isinstance(rid, str) or not rid:
            return await self._handle(message)
        known = self._requests.get(rid)
        if known is not None:
            self.counters["repeated_requests"] += 1
            return await asyncio.shield(known)
        future = self._requests[rid] = asyncio.get_running_loop().create_future()
        try:
            reply = await self._handle(message)
        except BaseException as exc:
            self._requests.pop(rid, None)
            future.set_exception(exc)
            future.exception()  # retrieved: a repeat waiting on it gets it, nobody else needs to
            raise
        if "error" in reply:
            self._requests.pop(rid, None)  # nothing was taken: a repeat may try again
        future.set_result(reply)
        return reply

    async def _handle(self, message: dict) -> dict:
        op = message.get("op")
        if op in _TASK_OPS:  # never behind a run op that waits on a stalled store
            # the handler gets its own dict (it may keep it); the relay's drops the points once
            # dispatched (the sink has them) rather than hold them while the ack waits
            reply, settled = await self._on_loop(self._task_pool.submit(self.dispatch, dict(message)), cancel=True)
            for kind in _CONTENT:
                message.pop(kind, None)
        else:
            try:
                reply, settled = await asyncio.wait_for(
                    asyncio.wrap_future(self._run_op_pool.submit(self.dispatch, message)), self.run_op_timeout
                )
            except asyncio.TimeoutError:
                self.counters["run_op_timeouts"] += 1
                return {
                    "error": f"the driver's tracking store did not answer {op!r} within {self.run_op_timeout:g} s "
                    "(run_op_timeout); it may be down or overloaded"
                }
        if "error" not in reply and (settled is not None or message.get("op") == "done"):
            await self._wait_within_budget(message, settled)
        return reply

    async def _wait_within_budget(self, message: dict, settled: Future | None) -> None:
        """Live delivery: hold the ack until the store took the content, within what is left
        of the task's ``ack_wait`` budget; a task's "done" spends the rest and ends it."""
        worker = _worker(message["w"])
        assert worker is not None  # dispatch refused the request otherwise
        key = task_key(message["b"], worker)
        left = (
            self._budgets.pop(key, self.ack_wait)
            if message.get("op") == "done"
            else self._budgets.get(key, self.ack_wait)
        )
        if settled is None or left <= 0:
            return
        start = self.clock()
        waiter = self._on_loop(settled, cancel=False)  # never cancels the sink's future
        # the budget is spent: ack without waiting
        timer = asyncio.get_running_loop().call_later(left, _settle_if_pending, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
        if message.get("op") != "done":
            self._budgets[key] = left - (self.clock() - start)

    def _on_loop(self, future: Future, cancel: bool) -> asyncio.Future:
        """An asyncio future settled like ``future`` (settled on another thread), through the inbox.
        ``cancel``: cancelling the asyncio future cancels ``future`` too (as ``asyncio.wrap_future``)."""
        inbox = self._inbox
        assert inbox is not None
        waiter = inbox.loop.create_future()
        future.add_done_callback(lambda done: inbox.post(_copy_state, done, waiter))
        if cancel:
            waiter.add_done_callback(lambda w: w.cancelled() and future.cancel())
        return waiter

    def dispatch(self, message: dict) -> tuple[dict, Future | None]:
        """Answer one request (what a connection's frame, or a line of a drop file, asks): the
        reply and, for points, the sink's future that settles when they are stored."""
        binding = message.get("b")
        worker = _worker(message.get("w"))
        if not isinstance(binding, str) or worker is None:
            return {
                "error": "request needs a binding string and a worker list "
                "[stage, partition, attempt, task_id, rank, stage_attempt]"
            }, None
        op = message.get("op")
        fn = self.ops.get(op) if isinstance(op, str) else None
        if fn is None:
            return {"error": f"unknown op {op!r}"}, None
        message["w"] = worker
        try:
            return fn(binding, worker, message)
        except Exception as exc:
            logger.warning("spark_tracking relay: request failed", exc_info=True)
            return {"error": f"{type(exc).__name__}: {exc}"}, None


class _Inbox:
    """Calls other threads hand to the loop, run many per wake-up of the loop.

    Each ``call_soon_threadsafe`` writes to the loop's wake-up socket (a system call, and a turn
    of the loop); with many connections, every request would cost two (its dispatch done, its
    points stored) and the sink settles the requests of a round all at once. Here only the
    first call after the loop emptied the inbox wakes it; the others join it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.calls: deque = deque()
        self.waking = False

    def post(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the loop (any thread; after the loop has closed: never)."""
        self.calls.append((fn, args))
        if not self.waking:  # the loop clears it before it takes the calls: none is left behind
            self.waking = True
            with contextlib.suppress(RuntimeError):  # the loop has closed (the relay stopped)
                self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        self.waking = False
        calls = self.calls
        while calls:
            fn, args = calls.popleft()
            fn(*args)


def _copy_state(source: Future, waiter: asyncio.Future) -> None:
    if waiter.done():  # cancelled, or the budget ran out
        return
    if source.cancelled():
        waiter.cancel()
    elif source.exception() is not None:
        waiter.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(source.result())


def _settle_if_pending(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _worker(worker) -> Worker | None:
    """The :class:`Worker` a request names (``protocol``: the worker list, five items from tasks
    of older versions, six now), or None when it is not one. The one decode of a worker."""
    if not isinstance(worker, list) or len(worker) not in (5, 6):
        return None
    if not all(_is_int(x) for x in worker[:4]) or not (worker[4] is None or _is_int(worker[4])):
        return None
    if len(worker) == 6 and not _is_int(worker[5]):
        return None
    return Worker(*worker)
