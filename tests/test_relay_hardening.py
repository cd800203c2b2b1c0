"""Relay security: secret, bounded frames and connections, bad frames close only their own
connection, silent clients are dropped, the relay listens where it is told."""

import socket

import pytest

from spark_tracking.forwarding import protocol, relay as relay_module
from spark_tracking.forwarding.executor import _Connection
from spark_tracking.forwarding.relay import Relay


class Echo:
    def points(self, binding, worker, message):
        return "run-1", None

    def resolve(self, binding, worker):
        return "run-1"

    def done(self, binding, worker):
        return None


@pytest.fixture
def relay():
    r = Relay("s3cret", Echo(), "127.0.0.1", 0, max_connections=3, max_frame_bytes=4096).start()
    yield r
    r.stop()


def _authenticated(relay) -> socket.socket:
    host, port = relay.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    nonce = protocol.recv_frame(sock)["nonce"]
    sock.sendall(protocol.encode({"auth": protocol.auth_digest("s3cret", nonce), "v": 1}))
    assert protocol.recv_frame(sock) == {"ok": True}
    return sock


def _works(relay) -> bool:
    conn = _Connection(relay.address, "s3cret")
    try:
        return conn.request({"op": "resolve", "b": "1:0", "w": [0, 0, 0, 0, None]})["run"] == "run-1"
    finally:
        conn.close()


def _closed(sock) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_listens_only_on_the_address_it_was_given(relay):
    assert relay.address.startswith("127.0.0.1:")
    assert relay._server.sockets[0].getsockname()[0] == "127.0.0.1"


def test_a_frame_over_the_limit_closes_that_connection_only(relay):
    bad, good = _authenticated(relay), _authenticated(relay)
    bad.sendall(protocol.HEADER.pack(4097))
    assert _closed(bad)
    good.sendall(protocol.encode({"seq": 1, "op": "resolve", "b": "1:0", "w": [0, 0, 0, 0, None]}))
    assert protocol.recv_frame(good) == {"ack": 1, "run": "run-1"}
    assert relay.counters["protocol_errors"] == 1
    good.close()


@pytest.mark.parametrize("payload", [
    protocol.HEADER.pack(5) + b"{nope",                       # not JSON
    protocol.HEADER.pack(2) + b"[]",                          # JSON, not an object
    protocol.HEADER.pack(4) + b"\xff\xfe\xfd\xfc",            # not UTF-8
    protocol.HEADER.pack(100) + b'{"seq": 1',                 # truncated, then the client leaves
])
def test_malformed_or_truncated_frames_close_only_their_connection(relay, payload):
    sock = _authenticated(relay)
    sock.sendall(payload)
    if payload.endswith(b'"seq": 1'):
        sock.close()
    else:
        assert _closed(sock)
    assert _works(relay)


def test_bad_requests_from_an_authenticated_client_get_an_error_not_a_crash(relay):
    sock = _authenticated(relay)
    for n, message in enumerate([{"op": "points", "b": 5, "w": []}, {"op": "launch", "b": "1:0", "w": [0, 0, 0, 0, None]},
                                 {"op": "points", "b": "1:0", "w": [0, 0, 0, True, None]}], start=1):
        sock.sendall(protocol.encode(dict(message, seq=n)))
        reply = protocol.recv_frame(sock)
        assert reply["ack"] == n and "error" in reply
    sock.close()
    assert _works(relay)


def test_connections_over_the_limit_are_refused(relay):
    held = [_authenticated(relay) for _ in range(3)]
    host, port = relay.address.rsplit(":", 1)
    extra = socket.create_connection((host, int(port)), timeout=10)
    assert _closed(extra)
    assert relay.counters["refused_connections"] == 1
    held.pop().close()
    for sock in held:
        sock.close()


def test_a_client_that_never_authenticates_is_dropped(monkeypatch):
    monkeypatch.setattr(relay_module, "AUTH_TIMEOUT", 0.5)
    r = Relay("s3cret", Echo(), "127.0.0.1", 0).start()
    try:
        host, port = r.address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=30)
        protocol.recv_frame(sock)  # the nonce; then say nothing
        assert _closed(sock)
        assert r.counters["auth_failures"] == 1
    finally:
        r.stop()


def test_an_unauthenticated_client_cannot_send_a_large_frame(relay):
    host, port = relay.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    protocol.recv_frame(sock)
    sock.sendall(protocol.HEADER.pack(2000) + b"x" * 2000)
    assert _closed(sock)
    assert _works(relay)
