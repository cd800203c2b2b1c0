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
import threading
import time
from collections import deque
from typing import Callable

from .. import protocol
from .frames import FRAME_POINTS, Request, entries, frame, group, halves, new_id
from .spill import SpillFull, SpillStore
from .transport import Refused, RelayTransport, Timeout, Transport, Unreachable

logger = logging.getLogger(__name__)

_HEADROOM = 512  # bytes of a frame kept for its envelope ("id", "b", "w", ...)


class Marker:
    """Put in the queue by :meth:`Shipper.flush`: set once everything before it is in the
    driver's custody (``ok``), or spilled (``ok`` False)."""

    __slots__ = ("deadline", "done_binding", "error", "event", "ok")

    def __init__(self, deadline: float | None, done_binding=None, error: str = ""):
        self.event = threading.Event()
        self.ok = True
        self.done_binding = done_binding
        self.error = error  # the task's error line, sent with its "done" (protocol.DONE_ERROR)
        self.deadline = deadline


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
        # seconds a flush past its timeout waits for the disk write of what the network did not
        # take (see flush); bounds a task's end at task_flush_timeout + spill_wait
        self.spill_wait = 10.0
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

    def flush(self, timeout: float | None = 30.0, done=None, error: str = "") -> bool:
        """Wait until everything queued so far is in the driver's custody (True), or spilled
        (False). The shipper gives up on the network before ``timeout`` ends (``0.2 x timeout``,
        at most 1 s, before) and writes what is left to disk. When that write ends after
        ``timeout`` (a busy machine: a long GC pause, a loaded CPU or disk; seen in CI), this
        waits for it, at most :attr:`spill_wait` more, so that False means "on disk": a rank
        that exits right after loses nothing. Only when the disk write has not ended by then
        (or a request sent before the flush holds the thread) does it return with what is left
        still in memory, where the thread spills it.
        ``done``: the binding of a task that ended, whose "done" follows its points (with
        ``error``, the line of the error its function raised, if it did)."""
        if not self.is_alive():
            if not self.queue and done is None:
                return True
            self.ensure_running()
        deadline = None
        if timeout is not None:
            deadline = self.clock() + max(0.0, timeout - min(1.0, timeout * 0.2))
            current = self._flush_deadline
            self._flush_deadline = deadline if current is None else min(current, deadline)
        marker = Marker(deadline, done, error)
        self._asked.append(marker)
        self.queue.append(marker)
        self.wake.set()
        if not marker.event.wait(timeout) and not marker.event.wait(self.spill_wait):
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
        task's end never waits behind the node's spill backlog of other workers; that backlog
        goes next, within the same deadline, and in the regular rounds (where it yields to a
        waiting flush between frames)."""
        spilled_sent = self._resend_spilled(force=True, deadline=marker.deadline, own=True)
        marker.ok = self._send_pending(marker.deadline, spill=True) and spilled_sent
        if marker.ok and marker.done_binding is not None:
            b = marker.done_binding
            message = {"id": new_id(), "op": "done", "b": b.binding, "w": b.worker}
            if marker.error:
                message[protocol.DONE_ERROR] = marker.error
            marker.ok = self._request(Request(b.relay, b.secret, message, 0), marker.deadline) is _OK
            if marker.ok:
                # then the node's backlog, within what is left of the task's budget (the task's
                # own points and "done" are already in custody); late frames keep their run:
                # the driver sends them to the run their binding was made for (driver.run_watch)
                self._resend_spilled(force=True, deadline=marker.deadline)
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
        for b, items in group(pending):
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
                queue.extendleft(reversed(halves(req)))
                continue
            result = self._request(req, deadline)
            if result is _FAILED:
                queue.appendleft(req)
                return list(queue)
            if result is _REFUSED:
                if req.entries > 1 and req.message.get("op") == "points":
                    queue.extendleft(reversed(halves(req)))
                    continue
                self.counters["dropped"] += req.entries
        return []

    def _request(self, req: Request, deadline: float | None) -> str:
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
            for b, group in group(items)
            for start in range(0, len(group), FRAME_POINTS)
        ]
        self._keep(requests, spill=True)
        return False

    # -- keeping what the relay did not take -------------------------------------------------

    def _keep(self, requests: list, spill: bool) -> None:
        """Requests the relay did not take: held in memory (re-sent with their ids), or written
        to disk when memory is over its bound, a flush asks for it, or the shipper stops."""
        count = sum(r.entries for r in requests)
        held = sum(r.entries for r in self.held)
        if not spill and not self._stopping and count + held + len(self.queue) <= self.max_points:
            self.held.extend(requests)
            return
        by_relay: dict[str, list] = {}
        for r in requests:
            by_relay.setdefault(r.relay, []).append(r)
        for relay, kept in by_relay.items():
            count = sum(r.entries for r in kept)
            try:
                self.spill.write(relay, [r.message for r in kept])
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
                        requests.append(Request(relay, self.secrets[relay], message, len(entries(message)) or 1))
                unsent = self._send(requests, deadline, yield_to_flush=not force)
                if unsent:
                    self.spill.release(c, [dict(r.message, relay=r.relay) for r in unsent])
                    for rest in claimed[n + 1 :]:
                        self.spill.release(rest)
                    return False
                self.spill.done(c)
            if not force:
                return True
