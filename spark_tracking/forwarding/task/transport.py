"""The task side's connections to the driver relay: one request at a time per connection,
authenticated with the session secret (see :mod:`..protocol`), and what can go wrong with one.

- :class:`Unreachable`: connect or authentication failed (the shipper keeps the request);
- :class:`Refused`: an error reply, or a new connection closed without a reply (what a relay
  does with a frame over its limit): the shipper splits the frame, never re-sends it as is;
- :class:`Timeout`: no reply in time (the request may have been dispatched: re-sent with the
  same id, which the relay dispatches once).

A connection that answered before and is then closed without a reply was closed by the relay
while idle: the request goes again on a new connection (:meth:`Connection.request`).
"""

from __future__ import annotations

import select
import socket
import time
from typing import Callable, Protocol

from .. import protocol


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


class Connection:
    """One authenticated connection to a relay (opened at the first request)."""

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
        """Close the socket (the next request opens a new one)."""
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
    return Connection(relay, secret, timeout)


class RelayTransport:
    """TCP connections to relays, one per (relay, secret), authenticated per connection."""

    def __init__(self, connect_timeout: float = 10.0):
        self.connect_timeout = connect_timeout
        self.connections: dict[tuple, Connection] = {}

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
