"""The task side's shipper (``forwarding.task.shipper``) against a real relay, without Spark:
what a task's end sends first, connections the relay closed while idle, spill files sent in
part. Every point reaches the driver exactly once, or is on disk, or is counted as dropped."""

from __future__ import annotations

import os
import threading

import pytest
from faults import FaultyTransport, RecordingHandler, bind_as_task, wait_until

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.relay import Relay
from spark_tracking.forwarding.task import executor
from spark_tracking.forwarding.task.binding import Binding, TaskSettings
from spark_tracking.forwarding.task.frames import Point
from spark_tracking.forwarding.task.shipper import Shipper
from spark_tracking.forwarding.task.spill import SpillStore
from spark_tracking.forwarding.task.transport import RelayTransport, Unreachable

SECRET = "test-secret"


class EventHandler(RecordingHandler):
    """Records, in arrival order, each points frame (by its keys) and each "done"."""

    def __init__(self):
        super().__init__()
        self.events: list = []

    def points(self, binding, worker, message):
        with self.lock:
            self.events.append(("points", sorted({m[0] for m in message["m"]})))
        return super().points(binding, worker, message)

    def done(self, binding, worker):
        with self.lock:
            self.events.append(("done", tuple(worker)))
        return None


@pytest.fixture
def relay():
    handler = EventHandler()
    relay = Relay(SECRET, handler, max_frame_bytes=1 << 20).start()
    relay.handler = handler
    yield relay
    relay.stop()


@pytest.fixture
def clock():
    """The shipper's clock, moved by the test only."""
    now = [1000.0]
    tick = lambda: now[0]  # noqa: E731
    tick.advance = lambda seconds: now.__setitem__(0, now[0] + seconds)
    return tick


@pytest.fixture
def shipper(relay, tmp_path, clock):
    """A shipper of its own (not the process's), bound to ``relay``, with a spill folder of its own."""
    ship = Shipper(spill=SpillStore(str(tmp_path / "spill")), clock=clock)
    ship.configure(relay.address, SECRET, TaskSettings())
    yield ship
    ship.shutdown(5)


def _point(b, key, value, timestamp, step):
    """A queue item of one metric point, as the log calls append it."""
    return Point(b, key, value, timestamp, step)


def _frame(ident: str, key: str, steps) -> dict:
    return {
        "id": ident,
        "op": "points",
        "b": "1:0",
        "w": [5, 9, 0, 90, None, 0],
        "m": [[key, 1.0, 1, s] for s in steps],
    }


def _spill_as_another_process(store: SpillStore, relay: str, frames: list, pid: int = 1) -> None:
    """A spill file another worker of the node left (its pid in the name)."""
    store.write(relay, frames)
    for name in store.files():
        tag, stamp, _pid, seq = name[: -len(".jsonl")].split("-")
        os.rename(os.path.join(store.folder, name), os.path.join(store.folder, f"{tag}-{stamp}-{pid}-{seq}.jsonl"))


def _steps(handler, key: str) -> list:
    return sorted(p[4] for p in handler.received if p[1] == key)


# -- a task's end: its own points and "done" before the node's spill backlog (issue Q item 14) ----


def test_a_task_end_ships_its_own_points_and_done_before_the_nodes_spill_backlog(relay, shipper, clock):
    assert shipper.flush(30)  # a first round ran: the next look at the spill folder is 5 s away
    backlog = [_frame(f"dead:{n}", "backlog", range(n * 100, n * 100 + 100)) for n in range(20)]
    _spill_as_another_process(shipper.spill, relay.address, backlog)
    b = Binding(relay.address, SECRET, "1:0", [5, 2, 0, 77, None, 0], True)
    shipper.queue.extend(_point(b, "own", 1.0, 1, step) for step in range(10))
    assert shipper.flush(30, done=b)
    # the task reports success once its own points and its "done" are in the driver's custody:
    # a backlog of other workers' points (1.5 M of them on a busy node) must not come first
    assert relay.handler.events[:2] == [("points", ["own"]), ("done", (5, 2, 0, 77, None, 0))]
    assert _steps(relay.handler, "own") == list(range(10))
    # the backlog still goes, in the shipper's regular rounds
    clock.advance(10)
    shipper.wake.set()
    assert wait_until(lambda: _steps(relay.handler, "backlog") == list(range(2000)), 60)
    assert wait_until(lambda: not shipper.spill.files(), 60)


# -- a connection the relay closed while idle (issue Q item 5) -------------------------------------


def test_a_frame_on_a_connection_the_relay_closed_while_idle_is_re_sent_not_dropped(monkeypatch, tmp_path, caplog):
    handler = RecordingHandler()
    relay = Relay(SECRET, handler, max_connections=1).start()  # fewer slots than workers
    try:
        bind_as_task(monkeypatch, tmp_path, relay.address)
        before = executor.stats()
        executor.log_metric("loss", 1.0, step=0)
        assert executor.flush(30)  # this worker's connection is open and idle now
        other = RelayTransport()  # another worker of the node takes the only slot
        other.request(
            relay.address, SECRET, {"id": "other:1", "op": "resolve", "b": "1:0", "w": [5, 3, 0, 78, None, 0]}, 10
        )
        assert relay.counters["idle_closed"] == 1
        executor.log_metric("loss", 2.0, step=1)  # the next single-point frame meets the closed connection
        assert executor.flush(30)
        other.close()
    finally:
        relay.stop()
    assert sorted((p[4], p[2]) for p in handler.received) == [(0, 1.0), (1, 2.0)]
    assert executor.stats()["dropped"] == before["dropped"]
    assert "refused" not in caplog.text


# -- a spill file sent in part (issue Q item 6) ------------------------------------------------------


class GoesAway(FaultyTransport):
    """The relay goes away after ``allowed`` more requests (the connection drops)."""

    def __init__(self, allowed: int):
        super().__init__()
        self.allowed = allowed
        self.back = threading.Event()

    def request(self, relay, secret, message, timeout, on_wait=None):
        if not self.back.is_set():
            if self.allowed <= 0:
                raise Unreachable("fault: the relay went away")
            self.allowed -= 1
        return super().request(relay, secret, message, timeout, on_wait)


def test_a_spill_file_sent_in_part_gives_back_only_the_unsent_rest(relay, tmp_path):
    clock = [1000.0]
    transport = GoesAway(allowed=1)
    ship = Shipper(transport=transport, spill=SpillStore(str(tmp_path / "spill")), clock=lambda: clock[0])
    # written by a worker whose frames could be larger: this one must split the frame in two
    ship.spill.write(relay.address, [_frame("old:1", "split", range(2000))])
    settings = TaskSettings(max_frame_bytes=40_000)
    assert protocol.encoded_size(_frame("old:1", "split", range(2000))) > settings.max_frame_bytes
    try:
        ship.configure(relay.address, SECRET, settings)
        assert not ship.flush(30)  # one half reached the driver, then the relay went away
        assert _steps(relay.handler, "split") == list(range(1000))
        transport.back.set()  # the relay is back
        clock[0] += 60  # past the shipper's back-off
        assert ship.flush(30)
    finally:
        ship.shutdown(5)
    # each point reached the driver once: the half it acknowledged was not sent again
    assert _steps(relay.handler, "split") == list(range(2000))
    assert not ship.spill.files()
