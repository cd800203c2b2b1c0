"""Many connections at once: every acknowledged point is stored exactly once, a repeated request
id is answered without a second dispatch, and what the relay hands the handler passes the same
decode check as the wire's rows."""

import tempfile

from faults import SinkHandler

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.decode import clean_metrics
from spark_tracking.forwarding.driver.relay import Relay
from spark_tracking.forwarding.driver.sink import Sink, Spool
from spark_tracking.forwarding.task.transport import Connection

CONNECTIONS = 200
FRAMES = 3
POINTS = 50


class Recorder:
    """A store that keeps every metric it is given."""

    def __init__(self):
        self.metrics: list = []

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        self.metrics.extend((m.key, m.value, m.timestamp, m.step) for m in metrics)


def _frame(conn: int, n: int) -> dict:
    first = n * POINTS
    rows = [["loss", conn + step / 1000, 1_700_000_000_000 + step, step] for step in range(first, first + POINTS)]
    return {"id": f"c{conn}:{n}", "seq": n + 1, "op": "points", "b": "0:0", "w": [0, conn, 0, conn, None, 0], "m": rows}


def test_frames_of_many_connections_at_once_are_each_stored_once():
    store = Recorder()
    sink = Sink(store, "null://", Spool(tempfile.mkdtemp(), 1 << 30), lambda stage: 1, linger=0.0)
    relay = Relay("s3cret", SinkHandler(sink, "run"), "127.0.0.1", 0, max_connections=CONNECTIONS).start()
    conns = [Connection(relay.address, "s3cret", timeout=60) for _ in range(CONNECTIONS)]
    try:
        for conn in conns:
            conn._connect()
        for n in range(FRAMES):  # every connection's frame in flight at once, then the replies
            for c, conn in enumerate(conns):
                conn.sock.sendall(protocol.encode(_frame(c, n)))
            for conn in conns:
                reply = protocol.recv_frame(conn.sock)
                assert reply == {"run": "run", "ack": n + 1}
        # a frame sent again with its id (a client that timed out) is answered, not stored again
        conns[7].sock.sendall(protocol.encode(dict(_frame(7, 0), seq=FRAMES + 1)))
        assert protocol.recv_frame(conns[7].sock) == {"run": "run", "ack": FRAMES + 1}
        assert sink.flush(60)
    finally:
        for conn in conns:
            conn.close()
        relay.stop()
        sink.stop()
    expected = {
        ("loss", c + step / 1000, 1_700_000_000_000 + step, step)
        for c in range(CONNECTIONS)
        for step in range(FRAMES * POINTS)
    }
    assert len(store.metrics) == len(expected) == CONNECTIONS * FRAMES * POINTS
    assert set(store.metrics) == expected
    assert relay.counters["repeated_requests"] == 1


class Checked:
    """A handler that runs the driver's decode check on what the relay hands it."""

    def __init__(self):
        self.seen: list = []

    def points(self, binding, worker, message):
        self.seen.append(clean_metrics(message["m"]))
        return "run", None

    def resolve(self, binding, worker):
        return "run"

    def done(self, binding, worker):
        return None


def test_rows_reach_the_decode_check_with_their_values_and_malformed_rows_stay_malformed():
    handler = Checked()
    relay = Relay("s3cret", handler, "127.0.0.1", 0).start()
    conn = Connection(relay.address, "s3cret", timeout=30)
    good = [["a", 1, 5, 0], ["b", 0.5, 6, 1]]
    malformed = [["c", True, 1, 1], ["dddd"], "abcd", ["e", 1.0, 1], {"k": 1, "v": 2, "t": 3, "s": 4}]
    try:
        conn.request({"op": "points", "b": "0:0", "w": [0, 0, 0, 0, None], "m": good + malformed})
        conn.request({"op": "points", "b": "0:0", "w": [0, 0, 0, 0, None], "m": [*good, 5]})  # not iterable
        conn.request({"op": "points", "b": "0:0", "w": [0, 0, 0, 0, None], "m": "not rows"})
    finally:
        conn.close()
        relay.stop()
    assert handler.seen == [
        ([("a", 1.0, 5, 0), ("b", 0.5, 6, 1)], len(malformed)),
        ([("a", 1.0, 5, 0), ("b", 0.5, 6, 1)], 1),
        ([], 1),
    ]
