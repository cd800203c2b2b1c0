"""Relay security: secret, bounded frames and connections, bad frames close only their own
connection, silent clients are dropped, the relay listens where it is told."""

import socket
import threading
import time

import pytest
from faults import BusyHandler, HeldHandler, SinkHandler, StalledStoreHandler

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver import relay as relay_module
from spark_tracking.forwarding.driver.relay import Relay
from spark_tracking.forwarding.driver.sink import Sink, Spool
from spark_tracking.forwarding.task.transport import Connection as _Connection


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


@pytest.mark.parametrize(
    "payload",
    [
        protocol.HEADER.pack(5) + b"{nope",  # not JSON
        protocol.HEADER.pack(2) + b"[]",  # JSON, not an object
        protocol.HEADER.pack(4) + b"\xff\xfe\xfd\xfc",  # not UTF-8
        protocol.HEADER.pack(100) + b'{"seq": 1',  # truncated, then the client leaves
    ],
)
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
    for n, message in enumerate(
        [
            {"op": "points", "b": 5, "w": []},
            {"op": "launch", "b": "1:0", "w": [0, 0, 0, 0, None]},
            {"op": "points", "b": "1:0", "w": [0, 0, 0, True, None]},
        ],
        start=1,
    ):
        sock.sendall(protocol.encode(dict(message, seq=n)))
        reply = protocol.recv_frame(sock)
        assert reply["ack"] == n and "error" in reply
    sock.close()
    assert _works(relay)


def _background(fn):
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def test_when_every_connection_is_busy_a_new_one_is_refused():
    handler = BusyHandler()
    r = Relay("s3cret", handler, "127.0.0.1", 0, max_connections=3).start()
    try:
        busy = [_background(lambda: _works(r)) for _ in range(3)]
        for _ in busy:
            assert handler.entered.acquire(timeout=30)  # three connections inside a request
        with pytest.raises(ConnectionError):
            _works(r)
        assert r.counters["refused_connections"] == 1
        handler.release.set()
        for thread in busy:
            thread.join(30)
        assert _works(r)
    finally:
        handler.release.set()
        r.stop()


def test_idle_connections_do_not_lock_new_workers_out(relay):
    idle = [_authenticated(relay) for _ in range(3)]  # e.g. shippers of workers between frames
    assert _works(relay)  # a fourth worker gets the slot of the connection idle the longest
    assert _closed(idle[0])
    assert relay.counters["idle_closed"] == 1 and relay.counters["refused_connections"] == 0
    for sock in idle:
        sock.close()


def test_clients_that_never_authenticate_take_no_connection_slot(relay):
    host, port = relay.address.rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
    for sock in silent:
        protocol.recv_frame(sock)  # the nonce; then nothing
    assert _works(relay)
    for sock in silent:
        sock.close()


def test_unauthenticated_connections_time_out_fast():
    assert relay_module.AUTH_TIMEOUT <= 3.0


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


def test_workers_of_five_or_six_items_are_accepted(relay):
    conn = _Connection(relay.address, "s3cret")
    try:
        assert conn.request({"op": "resolve", "b": "1:0", "w": [0, 0, 0, 0, None]})["run"] == "run-1"
        assert conn.request({"op": "resolve", "b": "1:0", "w": [0, 0, 0, 0, 3, 1]})["run"] == "run-1"
        for bad in ([0, 0, 0, 0, None, None], [0, 0, 0, 0, None, 1, 2], [0, 0, 0, 0, None, True]):
            with pytest.raises((RuntimeError, ConnectionError), match="worker list"):
                conn.request({"op": "resolve", "b": "1:0", "w": bad})
    finally:
        conn.close()


def test_ops_are_a_table_new_ones_register():
    r = Relay("s3cret", Echo(), "127.0.0.1", 0)
    r.register("get_run", lambda binding, worker, message: ({"run": message.get("run_id")}, None))
    reply, settled = r.dispatch({"op": "get_run", "b": "1:0", "w": [0, 0, 0, 0, None], "run_id": "abc"})
    assert reply == {"run": "abc"} and settled is None
    assert set(r.ops) == {"done", "points", "resolve"} | protocol.RUN_OPS


def test_a_request_resent_after_a_client_timeout_is_dispatched_and_stored_once(sqlite_uri, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = Sink(client, sqlite_uri, Spool(str(tmp_path / "spool"), 1 << 30), lambda stage: 1)
    handler = HeldHandler(SinkHandler(sink, rid))
    r = Relay("s3cret", handler, "127.0.0.1", 0).start()
    rows = [["m", float(i), 1_700_000_000_000 + i, i] for i in range(100)]
    request = {"id": "c0ffee:1", "op": "points", "b": "1:0", "w": [0, 0, 0, 0, None, 0], "m": rows}
    try:
        first = _Connection(r.address, "s3cret", timeout=0.5)
        with pytest.raises(OSError):  # the dispatch outlives the client's socket timeout
            first.request(dict(request))
        assert handler.entered.is_set()
        replies = []
        again = _background(lambda: replies.append(_Connection(r.address, "s3cret").request(dict(request))))
        handler.release.set()
        again.join(30)
        assert replies and replies[0]["run"] == rid
        # a repeat after completion gets the stored reply at once
        assert _Connection(r.address, "s3cret").request(dict(request))["run"] == rid
        assert sink.flush(60)
    finally:
        handler.release.set()
        r.stop()
        sink.stop()
    assert handler.calls["points"] == 1
    assert sink.stats()["sent"] == 100 and r.counters["repeated_requests"] == 2
    assert sorted((m.step, m.value) for m in client.get_metric_history(rid, "m")) == [(i, float(i)) for i in range(100)]


def test_a_stalled_store_delays_a_task_by_one_ack_budget_not_one_per_frame():
    handler = StalledStoreHandler()
    r = Relay("s3cret", handler, "127.0.0.1", 0, ack_wait=1.0).start()
    conn = _Connection(r.address, "s3cret", timeout=30)
    try:
        start = time.monotonic()
        for n in range(6):
            conn.request({"op": "points", "b": "1:0", "w": [0, 0, 0, 7, None, 0], "m": [["m", 1.0, 1, n]]})
        conn.request({"op": "done", "b": "1:0", "w": [0, 0, 0, 7, None, 0]})
        elapsed = time.monotonic() - start
    finally:
        conn.close()
        r.stop()
    assert len(handler.pending) == 7
    assert elapsed < 3.0, f"a task waited {elapsed:.1f}s for a stalled store (budget: 1 s per task)"
    assert not r._budgets  # the task's budget ended with it


def test_one_silent_client_cannot_fill_the_pool_of_connections_authenticating(relay):
    host, port = relay.address.rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=10) for _ in range(64)]
    for sock in silent:
        protocol.recv_frame(sock)  # its challenge, then nothing: the 64 places are taken
    try:
        assert _works(relay)  # a real client still gets through
        assert _closed(silent[0])  # the oldest silent connection made room
    finally:
        for sock in silent:
            sock.close()
