"""The task side's background sender: a deque the log calls append to, a daemon thread that
ships it to the driver relay in frames, and a spill store for what the relay cannot take.

Shape of OpenTelemetry's ``BatchProcessor``: the hot path only appends a :class:`Point` (or an
:class:`Entry`) to ``Shipper.queue`` (atomic, no lock) and sets ``wake`` when a batch is full; one named daemon
thread (``spark-tracking-shipper``) drains it; :meth:`Shipper.flush` and
:meth:`Shipper.shutdown` take a timeout; a forked child starts empty (the parent ships what it
buffered). The transport and the clock are injected (:class:`RelayTransport` talks to the
relay; tests pass their own).

What happens to a frame:
- acknowledged by the relay: shipped (the driver has custody);
- refused by the relay (an error reply, or the connection closed after the frame was sent —
  what a relay does with a frame over its limit): split in halves and re-sent; an entry
  refused alone is dropped and counted (``dropped``) with a warning — never retried forever;
- no reply in time: re-sent with the same request id (the relay answers repeats from memory);
- relay unreachable: kept in memory up to ``buffer_max_points``, beyond that, at a flush, or
  at shutdown written to the spill store (:mod:`.spill`) and re-sent from there later by this
  worker or the next one on the node (with its id). A spill the disk refuses (full, cap,
  permissions) is counted as dropped with a warning; it never reaches the log call.
Frames are cut by their real encoded size: at most ``max_frame_bytes`` of the relay.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
import uuid
from collections import deque
from functools import partial
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol

from .. import protocol
from .spill import SpillFull, SpillStore

if TYPE_CHECKING:
    from .binding import Binding

logger = logging.getLogger(__name__)

FRAME_POINTS = 5000  # entries per frame at most (the relay's sink takes them in rounds)
_HEADROOM = 512  # bytes of a frame kept for its envelope ("id", "b", "w", ...)


class Unreachable(ConnectionError):
    """The relay cannot be reached (connect or authentication failed)."""


class Refused(ConnectionError):
    """The relay took the frame and refused it (error reply, or closed the connection)."""


class Timeout(ConnectionError):
    """No reply in time; the request may or may not have been dispatched."""


class _Closed(Refused):
    """The relay closed the connection without answering (on a new connection: a refusal)."""


class Transport(Protocol):
    """Sends one request to a relay and returns its reply."""

    def request(
        self, relay: str, secret: str, message: dict, timeout: float, on_wait: Callable[[], bool] | None = None
    ) -> dict:
        """Raises Unreachable, Refused or Timeout. ``on_wait`` is called while waiting for the
        reply; when it returns True the wait ends with Timeout."""

    def close(self) -> None:
        """Close every connection."""


class _Connection:
    def __init__(self, relay: str, secret: str, timeout: float = 10.0):
        host, _, port = relay.rpartition(":")
        self.address = (host, int(port))
        self.secret = secret
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.seq = 0
        self.answered = False  # the open socket answered a request (a close is then no refusal)

    def _connect(self) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as exc:
            raise Unreachable(f"relay {self.address[0]}:{self.address[1]}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = protocol.recv_frame(sock)
            sock.sendall(
                protocol.encode({"auth": protocol.auth_digest(self.secret, hello["nonce"]), "v": protocol.VERSION})
            )
            if not protocol.recv_frame(sock).get("ok"):
                raise Unreachable("relay refused the session secret")
        except Unreachable:
            sock.close()
            raise
        except Exception as exc:  # noqa: BLE001 - any handshake failure means "not reachable"
            sock.close()
            raise Unreachable(f"relay handshake failed: {exc}") from None
        self.sock = sock
        self.answered = False

    def request(self, message: dict, timeout: float | None = None, on_wait=None) -> dict:
        """One request; raises Unreachable, Refused or Timeout.

        A connection that answered before and is closed without a reply was most likely closed
        by the relay while idle (its slot went to another worker: ``relay_max_connections``):
        a transport failure, not a refusal. The request goes again, same id, on a new
        connection; closed there too without a reply, it is refused (what a relay does with a
        frame over its limit)."""
        reused = self.sock is not None and self.answered
        try:
            return self._request_once(message, timeout, on_wait)
        except _Closed:
            if not reused:
                raise
        return self._request_once(message, timeout, on_wait)

    def _request_once(self, message: dict, timeout: float | None, on_wait) -> dict:
        if self.sock is None:
            self._connect()
        self.seq += 1
        message["seq"] = self.seq
        sock = self.sock
        assert sock is not None
        try:
            sock.settimeout(timeout or self.timeout)
            sock.sendall(protocol.encode(message))
        except OSError:
            self.close()
            raise _Closed("relay closed the connection while a frame was sent") from None
        try:
            reply = self._reply(timeout or self.timeout, on_wait)
        except Timeout:
            self.close()  # a late reply must not answer the next request
            raise
        except (OSError, protocol.ProtocolError, ConnectionError):
            self.close()
            raise _Closed("relay closed the connection instead of answering") from None
        self.answered = True
        if reply.get("ack") != self.seq:
            self.close()
            raise Refused(f"relay answered {reply!r} to request {self.seq}")
        if "error" in reply:
            raise Refused(str(reply["error"]))
        return reply

    def _reply(self, timeout: float, on_wait) -> dict:
        sock = self.sock
        assert sock is not None
        deadline = time.monotonic() + timeout

        def wait_readable() -> None:  # in ticks: the shipper relieves memory while it waits
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout("relay did not answer in time")
                if _readable(sock, min(left, 0.2)):
                    return
                if on_wait is not None and on_wait():
                    raise Timeout("the sender stopped waiting (a flush deadline passed)")

        return protocol.recv_frame(sock, before_recv=wait_readable)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has data (or EOF) within ``timeout`` seconds. ``poll`` where there is
    one: ``select`` refuses descriptors past 1023, which a process with many files open has."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


def open_connection(relay: str, secret: str, timeout: float = 10.0):
    """A connection to ``relay``; a Spark Connect drop binding (``drop:<dir>``) gets its folder
    (``forwarding.connect``: no driver to reach)."""
    if relay.startswith("drop:"):
        from . import connect

        return connect.task_connection(relay)
    return _Connection(relay, secret, timeout)


class RelayTransport:
    """TCP connections to relays, one per (relay, secret), authenticated per connection."""

    def __init__(self, connect_timeout: float = 10.0):
        self.connect_timeout = connect_timeout
        self.connections: dict[tuple, _Connection] = {}

    def request(self, relay: str, secret: str, message: dict, timeout: float, on_wait=None) -> dict:
        """One request on the connection to ``relay`` (opened and authenticated when needed)."""
        conn = self.connections.get((relay, secret))
        if conn is None:
            conn = self.connections[(relay, secret)] = open_connection(
                relay, secret, min(timeout, self.connect_timeout)
            )
        return conn.request(message, timeout, on_wait)

    def close(self) -> None:
        """Close every connection."""
        for conn in self.connections.values():
            conn.close()
        self.connections.clear()


class Point(NamedTuple):
    """A metric point on its way to the driver, as the log calls queue it. Without its binding
    it is the wire's metric row ``[key, value, timestamp, step]`` (see :mod:`.protocol`)."""

    binding: Binding
    key: str
    value: float
    timestamp: int
    step: int


#: ``new_point((binding, key, value, timestamp, step))``: a :class:`Point` built in one C call
#: (the log calls' hot path; ``Point(...)`` runs a Python ``__new__``)
new_point = partial(tuple.__new__, Point)


class Entry(NamedTuple):
    """A param (kind ``"p"``), tag (``"t"``) or artifact (``"a"``: path and base64 content) on
    its way to the driver."""

    binding: Binding
    kind: str
    key: str
    value: str


class Marker:
    """Put in the queue by :meth:`Shipper.flush`: set once everything before it is in the
    driver's custody (``ok``), or spilled (``ok`` False)."""

    __slots__ = ("deadline", "done_binding", "event", "ok")

    def __init__(self, deadline: float | None, done_binding=None):
        self.event = threading.Event()
        self.ok = True
        self.done_binding = done_binding
        self.deadline = deadline


class _Request:
    """A frame to send: relay, secret, the message (with its id), entries and a size bound."""

    __slots__ = ("entries", "message", "relay", "secret", "size")

    def __init__(self, relay, secret, message, entries, size=None):
        self.relay, self.secret, self.message, self.entries = relay, secret, message, entries
        self.size = protocol.encoded_size(message) if size is None else size


_ids = uuid.uuid4().hex
_id_seq = itertools.count(1)  # next() is atomic: the task thread and the shipper both take ids


def new_id() -> str:
    """A request id: unique in this process's life, kept when the request is re-sent."""
    return f"{_ids}:{os.getpid()}:{next(_id_seq)}"


def frame(b: Binding, items: list) -> _Request:
    """The "points" request for queue items (:class:`Point`, :class:`Entry`) of one binding
    (see :mod:`.protocol`), with an upper bound of its encoded size (JSON escapes a character
    in at most 6 bytes)."""
    metrics: list = []
    params: list = []
    tags: list = []
    artifacts: list = []
    message = {
        "id": new_id(),
        "op": "points",
        "b": b.binding,
        "w": b.worker,
        "m": metrics,
        "p": params,
        "t": tags,
        "a": artifacts,
    }
    if b.run is not None:
        message["r"] = b.run
    size = 256 + 6 * len(b.binding) + (6 * len(b.run) if b.run else 0)
    if set(map(type, items)) == {Point}:  # only metrics (the usual frame): no loop in Python
        metrics.extend(map(_ROW, items))
        size += 6 * sum(map(len, map(_KEY, items))) + 80 * len(items)
        return _Request(b.relay, b.secret, message, len(items), size)
    lists = {"p": params, "t": tags, "a": artifacts}
    for item in items:
        if type(item) is Point:
            metrics.append(item[1:])
            size += 6 * len(item.key) + 80
        else:
            lists[item.kind].append((item.key, item.value))
            size += 6 * (len(item.key) + len(item.value)) + 8
    return _Request(b.relay, b.secret, message, len(items), size)


def _entries(message: dict) -> list:
    return [(kind, row) for kind in ("m", "p", "t", "a") for row in message.get(kind, ())]


def _halves(req: _Request) -> list:
    """A frame in two, each half with an id derived from the frame's: the same frame split
    again (a spill file given back) gives the same ids, which the relay dispatches once."""
    entries = _entries(req.message)
    mid = len(entries) // 2
    out = []
    parent = req.message.get("id") or new_id()
    for n, part in enumerate((entries[:mid], entries[mid:])):
        if part:
            message = {k: v for k, v in req.message.items() if k not in ("m", "p", "t", "a", "seq")}
            message.update(id=f"{parent}/{n}", m=[], p=[], t=[], a=[])
            for kind, row in part:
                message[kind].append(row)
            out.append(_Request(req.relay, req.secret, message, len(part)))
    return out


_ROW = itemgetter(slice(1, None))  # a Point without its binding: the wire's metric row
_KEY = attrgetter("key")
_BINDING = attrgetter("binding")


def _group(items: list) -> list:
    """Items grouped by binding (bindings of one worker and run travel together), in order."""
    if len(set(map(_BINDING, items))) == 1:  # one binding (the usual case): no loop in Python
        return [(items[0].binding, items)]
    groups: dict = {}
    by_id: dict = {}
    for item in items:
        b = item.binding
        group = by_id.get(id(b))
        if group is None:
            group = groups.get(b.group)
            if group is None:
                group = groups[b.group] = (b, [])
            by_id[id(b)] = group
        group[1].append(item)
    return list(groups.values())


_OK, _REFUSED, _FAILED = "ok", "refused", "failed"


class Shipper:
    """Ships queue items to relays. ``transport``: a :class:`Transport`; ``clock``: monotonic
    seconds; ``spill``: the :class:`SpillStore`; ``secrets``: relay address -> secret (memory
    only). Settings are applied with :meth:`configure`."""

    def __init__(
        self,
        transport: Transport | None = None,
        spill: SpillStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 10.0,
    ):
        self.transport = transport or RelayTransport()
        self.spill = spill or SpillStore()
        self.clock = clock
        self.request_timeout = request_timeout
        self.queue: deque = deque()
        self.wake = threading.Event()
        self.counters = {
            "shipped": 0,
            "spilled": 0,
            "send_failures": 0,
            "dropped": 0,
            "flush_timeouts": 0,
            "refused": 0,
        }
        self.secrets: dict[str, str] = {}
        self.interval = 0.2
        self.max_points = 100_000
        self.max_frame_bytes = protocol.MAX_FRAME_BYTES
        self.pending: list = []  # items taken from the queue, not framed yet
        self.held: list = []  # frames the relay did not take yet, kept in memory with their ids
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stopping = False
        self._down_until = 0.0
        self._backoff = 0.05
        self._flush_deadline: float | None = None
        self._next_spill_check = 0.0
        self._asked: deque = deque()  # markers of flushes waiting (the spill backlog yields to them)

    # -- control (any thread) ----------------------------------------------------------------

    def configure(self, relay: str, secret: str, settings) -> None:
        """A binding was seen: remember its secret and apply its settings; start the thread."""
        self.secrets[relay] = secret
        self.interval = settings.ship_interval
        self.max_points = max(1, settings.buffer_max_points)
        self.max_frame_bytes = settings.max_frame_bytes
        self.ensure_running()

    def ensure_running(self) -> None:
        """Start the shipper thread if this process has none running."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="spark-tracking-shipper", daemon=True)
                self._thread.start()

    def is_alive(self) -> bool:
        """True while the shipper thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def flush(self, timeout: float | None = 30.0, done=None) -> bool:
        """Wait until everything queued so far is in the driver's custody (True), or spilled
        (False). The shipper gives up on the network before ``timeout`` ends, leaving time to
        spill: when this returns False after ``timeout``, what was queued is on disk."""
        if not self.is_alive():
            if not self.queue and done is None:
                return True
            self.ensure_running()
        deadline = None
        if timeout is not None:
            deadline = self.clock() + max(0.0, timeout - min(1.0, timeout * 0.2))
            current = self._flush_deadline
            self._flush_deadline = deadline if current is None else min(current, deadline)
        marker = Marker(deadline, done)
        self._asked.append(marker)
        self.queue.append(marker)
        self.wake.set()
        if not marker.event.wait(timeout):
            self.counters["flush_timeouts"] += 1
            return False
        return marker.ok

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush within ``timeout`` (what is left goes to the spill store) and stop the thread."""
        ok = self.flush(timeout)
        self._stopping = True
        self.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.transport.close()
        return ok

    def after_fork_in_child(self) -> None:
        """A forked process starts empty: the parent ships what it buffered."""
        self._pid = os.getpid()
        self.queue.clear()
        self.pending = []
        self.held = []
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._flush_deadline = None
        self._asked = deque()
        self.transport = type(self.transport)() if isinstance(self.transport, RelayTransport) else self.transport

    def buffered(self) -> int:
        """Points not in the driver's custody yet (queued, pending or held)."""
        return (
            sum(1 for item in list(self.queue) if not isinstance(item, Marker))
            + len(self.pending)
            + sum(r.entries for r in self.held)
        )

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                self.drain()
            except Exception:  # never die: the next round retries
                logger.warning("spark_tracking: shipping failed", exc_info=True)

    def drain(self) -> None:
        """One round: take the queue, send it in frames, settle flush markers."""
        queue = self.queue
        self._resend_spilled()
        while queue:
            # up to a frame's worth at once, popped in C (only this thread pops)
            taken = list(itertools.islice(iter(queue.popleft, None), min(len(queue), FRAME_POINTS)))
            if Marker not in set(map(type, taken)):
                self.pending.extend(taken)
            else:
                for item in taken:
                    if isinstance(item, Marker):
                        self._settle(item)
                    else:
                        self.pending.append(item)
            if len(self.pending) >= FRAME_POINTS:
                self._send_pending(None)
        if self.pending or self.held:
            self._send_pending(None)

    def _settle(self, marker: Marker) -> None:
        """This process's points first (those it spilled, then those queued), then "done": a
        task's end never waits behind the node's spill backlog of other workers, which the
        regular rounds send (and which yields to a waiting flush between frames)."""
        spilled_sent = self._resend_spilled(force=True, deadline=marker.deadline, own=True)
        marker.ok = self._send_pending(marker.deadline, spill=True) and spilled_sent
        if marker.ok and marker.done_binding is not None:
            b = marker.done_binding
            message = {"id": new_id(), "op": "done", "b": b.binding, "w": b.worker}
            marker.ok = self._request(_Request(b.relay, b.secret, message, 0), marker.deadline) is _OK
        if self._flush_deadline is not None and (marker.deadline is None or marker.deadline >= self._flush_deadline):
            self._flush_deadline = None
        with contextlib.suppress(ValueError):
            self._asked.remove(marker)
        marker.event.set()

    def _send_pending(self, deadline: float | None, spill: bool = False) -> bool:
        """Send what is held and pending, grouped by binding, in order. True when all of it
        is in the driver's custody or dropped with a count; False when some is kept (in
        memory, or on disk when ``spill``)."""
        requests, self.held = self.held, []
        pending, self.pending = self.pending, []
        for b, items in _group(pending):
            for start in range(0, len(items), FRAME_POINTS):
                requests.append(frame(b, items[start : start + FRAME_POINTS]))
        unsent = self._send(requests, deadline)
        if unsent:
            self._keep(unsent, spill)
            return False
        return True

    def _send(self, requests: list, deadline: float | None, yield_to_flush: bool = False) -> list:
        """Send requests in order; returns those not sent (the first failed and the rest; with
        ``yield_to_flush``, also all that are left when a flush is waiting)."""
        limit = max(1024, self.max_frame_bytes - _HEADROOM)
        queue = deque(requests)
        while queue:
            if yield_to_flush and self._asked:
                return list(queue)
            req = queue.popleft()
            if req.entries > 1 and req.size > limit and protocol.encoded_size(req.message) > limit:
                queue.extendleft(reversed(_halves(req)))
                continue
            result = self._request(req, deadline)
            if result is _FAILED:
                queue.appendleft(req)
                return list(queue)
            if result is _REFUSED:
                if req.entries > 1 and req.message.get("op") == "points":
                    queue.extendleft(reversed(_halves(req)))
                    continue
                self.counters["dropped"] += req.entries
        return []

    def _request(self, req: _Request, deadline: float | None) -> str:
        now = self.clock()
        if now < self._down_until:
            return _FAILED
        for _ in range(3):
            limit = self._effective_deadline(deadline)
            timeout = self.request_timeout if limit is None else min(self.request_timeout, limit - self.clock())
            if timeout <= 0:
                return _FAILED
            try:
                self.transport.request(req.relay, req.secret, req.message, timeout, self._relieve)
            except Refused as exc:
                self.counters["refused"] += 1
                if req.entries <= 1 or req.message.get("op") != "points":
                    logger.warning(
                        "spark_tracking: the driver refused a %s request of this task (%s); dropped %d entries",
                        req.message.get("op"),
                        exc,
                        req.entries,
                    )
                return _REFUSED
            except Timeout:
                self.counters["send_failures"] += 1
                continue  # same id: the relay answers a repeat from memory
            except (Unreachable, OSError) as exc:
                self.counters["send_failures"] += 1
                self._down_until = self.clock() + self._backoff
                self._backoff = min(self._backoff * 4, 5.0)
                logger.debug("spark_tracking: relay %s unreachable (%s)", req.relay, exc)
                return _FAILED
            self._backoff = 0.05
            self.counters["shipped"] += req.entries
            return _OK
        return _FAILED

    def _effective_deadline(self, deadline):
        flush = self._flush_deadline
        if flush is None:
            return deadline
        return flush if deadline is None else min(deadline, flush)

    def _relieve(self) -> bool:
        """While waiting for a reply: the queue must not grow past its bound in memory.
        True: stop waiting (a flush deadline passed)."""
        flush = self._flush_deadline
        if flush is not None and self.clock() >= flush:
            return True
        if len(self.queue) <= self.max_points:
            return False
        items: list = []
        markers: list = []
        while True:
            try:
                item = self.queue.popleft()
            except IndexError:
                break
            (markers if isinstance(item, Marker) else items).append(item)
        self.queue.extendleft(reversed(markers))
        requests = [
            frame(b, group[start : start + FRAME_POINTS])
            for b, group in _group(items)
            for start in range(0, len(group), FRAME_POINTS)
        ]
        self._keep(requests, spill=True)
        return False

    # -- keeping what the relay did not take -------------------------------------------------

    def _keep(self, requests: list, spill: bool) -> None:
        """Requests the relay did not take: held in memory (re-sent with their ids), or written
        to disk when memory is over its bound, a flush asks for it, or the shipper stops."""
        entries = sum(r.entries for r in requests)
        held = sum(r.entries for r in self.held)
        if not spill and not self._stopping and entries + held + len(self.queue) <= self.max_points:
            self.held.extend(requests)
            return
        by_relay: dict[str, list] = {}
        for r in requests:
            by_relay.setdefault(r.relay, []).append(r)
        for relay, group in by_relay.items():
            count = sum(r.entries for r in group)
            try:
                self.spill.write(relay, [r.message for r in group])
                self.counters["spilled"] += count
                logger.warning(
                    "spark_tracking: %d points spilled to %s: the driver relay did not take them "
                    "(they ship when it does)",
                    count,
                    self.spill.folder,
                )
            except (SpillFull, OSError) as exc:
                self.counters["dropped"] += count
                logger.warning(
                    "spark_tracking: dropped %d points: the driver relay did not take them and the "
                    "spill folder refused them (%s)",
                    count,
                    exc,
                )

    def _resend_spilled(self, force: bool = False, deadline: float | None = None, own: bool = False) -> bool:
        """Spilled frames of known relays go again (bounded reads), with their ids. ``force``
        (a flush): until none is left; ``own``: only files this process wrote. True when none of
        them is left on disk. A regular round (not ``force``) stops between frames when a
        flush is waiting and gives back the unsent rest."""
        now = self.clock()
        if not self.secrets:
            return True
        if not force and now < self._next_spill_check:
            return True
        if not force:
            self._next_spill_check = now + 5.0
        writer = os.getpid() if own else None
        while True:
            if self.clock() < self._down_until:
                return not self.spill.has_files(self.secrets, writer)
            try:
                claimed = self.spill.claim(self.secrets, writer)
            except OSError:
                return False
            if not claimed:
                return True
            for n, c in enumerate(claimed):
                requests = []
                for message in c.frames:
                    relay = message.pop("relay")
                    if relay in self.secrets:
                        requests.append(_Request(relay, self.secrets[relay], message, len(_entries(message)) or 1))
                unsent = self._send(requests, deadline, yield_to_flush=not force)
                if unsent:
                    self.spill.release(c, [dict(r.message, relay=r.relay) for r in unsent])
                    for rest in claimed[n + 1 :]:
                        self.spill.release(rest)
                    return False
                self.spill.done(c)
            if not force:
                return True
