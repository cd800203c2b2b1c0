"""The task side without Spark: env binding (processes a task starts), spill to disk when the
buffer is full, fork safety, and no `import mlflow` on the hot path."""

import os
import subprocess
import sys

import pytest
from faults import FaultyTransport, RecordingHandler

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.relay import Relay
from spark_tracking.forwarding.task import binding, executor


@pytest.fixture
def relay():
    handler = RecordingHandler()
    relay = Relay("test-secret", handler).start()
    relay.recorder = handler
    yield relay
    relay.stop()


@pytest.fixture
def bound(monkeypatch, relay, tmp_path):
    """This process looks like a child a task started (torchrun rank 3)."""
    monkeypatch.setenv(protocol.ENV_RELAY, relay.address)
    monkeypatch.setenv(protocol.ENV_SECRET, "test-secret")
    monkeypatch.setenv(protocol.ENV_BINDING, "1:0")
    monkeypatch.setenv(protocol.ENV_WORKER, "5:2:0:77")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setattr(executor.shipper.spill, "folder", str(tmp_path / "spill"))
    monkeypatch.setattr(executor.shipper.spill, "_checked", False)
    binding.forget()
    yield relay
    executor.flush(30)
    binding.forget()


def test_processes_started_by_a_task_forward_with_their_rank(bound):
    for step in range(100):
        executor.log_metric("loss", step / 10, step=step)
    assert executor.flush(30)
    got = bound.recorder.received
    assert [(p[0], p[1], p[2], p[4]) for p in got] == [((5, 2, 0, 77, 3, 0), "loss", s / 10, s) for s in range(100)]


def test_a_relay_that_drops_out_costs_nothing_points_spill_and_ship_later(bound, monkeypatch, caplog):
    monkeypatch.setenv("SPARK_TRACKING_BUFFER_MAX_POINTS", "1000")
    binding.forget()  # re-read the settings
    faulty = FaultyTransport()
    monkeypatch.setattr(executor.shipper, "transport", faulty)
    faulty.down.set()
    spilled = executor.stats()["spilled"]
    for step in range(5000):
        executor.log_metric("x", step, step=step)
    assert not executor.flush(5)  # the relay is down: the points go to disk, not to memory
    assert executor.stats()["spilled"] - spilled == 5000 and executor.stats()["buffered"] == 0
    assert "points spilled to" in caplog.text
    faulty.down.clear()
    monkeypatch.setattr(executor.shipper, "_down_until", 0.0)
    assert executor.flush(60)
    assert sorted(p[4] for p in bound.recorder.received) == list(range(5000))
    assert executor.shipper.spill.files() == []


def test_no_mlflow_import_on_the_hot_path(relay):
    code = (
        "import os, sys\n"
        f"os.environ.update({{'SPARK_TRACKING_RELAY': '{relay.address}', 'SPARK_TRACKING_RELAY_SECRET': 'test-secret',"
        " 'SPARK_TRACKING_BINDING': '1:0', 'SPARK_TRACKING_WORKER': '0:0:0:0'})\n"
        "import spark_tracking\n"
        "spark_tracking.log_metric('m', 1.0, step=1)\n"
        "assert spark_tracking.flush(30)\n"
        "print('mlflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    assert ((0, 0, 0, 0, None, 0), "m", 1.0) == relay.recorder.received[0][:3]


def test_a_forked_child_ships_its_own_points_only(bound):
    executor.log_metric("parent", 1.0, step=0)
    pid = os.fork()
    if pid == 0:  # the child: like a PySpark worker forked from the daemon
        code = 1
        try:
            executor.log_metric("child", 2.0, step=0)
            code = 0 if executor.flush(30) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert executor.flush(30)
    keys = sorted(p[1] for p in bound.recorder.received)
    assert keys == ["child", "parent"]


def test_spill_files_of_other_drivers_are_left_alone(bound):
    store = executor.shipper.spill
    store.write(
        "10.0.0.9:4040",
        [{"id": "x:1", "op": "points", "b": "1:0", "w": [0, 0, 0, 0, None, 0], "m": [["m", 1.0, 1, 0]]}],
    )
    executor.log_metric("mine", 1.0, step=0)
    assert executor.flush(30)
    assert len(store.files()) == 1
    assert [p[1] for p in bound.recorder.received] == ["mine"]


def test_the_task_artifact_limit_follows_the_relays_frame_limit(monkeypatch):
    assert executor.max_task_artifact_bytes() == 4 * 1024 * 1024  # the default 8 MiB frames allow 4 MiB
    monkeypatch.setenv("SPARK_TRACKING_RELAY_MAX_FRAME_BYTES", str(1024 * 1024))
    assert executor.max_task_artifact_bytes() == 1024 * 1024 * 9 // 16  # base64 of it fits 3/4 of a frame
