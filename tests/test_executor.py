"""The task side without Spark: env binding (processes a task starts), spill to disk when the
buffer is full, fork safety, and no `import mlflow` on the hot path."""

import os
import subprocess
import sys
import threading

import pytest

from spark_tracking.forwarding import executor
from spark_tracking.forwarding.relay import Relay


class Recorder:
    """A relay handler that keeps what it receives."""

    def __init__(self):
        self.received = []
        self.lock = threading.Lock()

    def points(self, binding, worker, message):
        with self.lock:
            self.received.extend((tuple(worker), *m) for m in message["m"])
        return "run-1", None

    def resolve(self, binding, worker):
        return "run-1"

    def done(self, binding, worker):
        return None


@pytest.fixture
def relay():
    handler = Recorder()
    relay = Relay("test-secret", handler).start()
    relay.recorder = handler
    yield relay
    relay.stop()


@pytest.fixture
def bound(monkeypatch, relay):
    """This process looks like a child a task started (torchrun rank 3)."""
    monkeypatch.setenv(executor.ENV_RELAY, relay.address)
    monkeypatch.setenv(executor.ENV_SECRET, "test-secret")
    monkeypatch.setenv(executor.ENV_BINDING, "1:0")
    monkeypatch.setenv(executor.ENV_WORKER, "5:2:0:77")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setattr(executor, "_cached_ctx", executor._UNSET)
    yield relay
    executor.flush(30)
    executor._cached_ctx, executor._cached_binding = executor._UNSET, None


def test_processes_started_by_a_task_forward_with_their_rank(bound):
    for step in range(100):
        executor.log_metric("loss", step / 10, step=step)
    assert executor.flush(30)
    got = bound.recorder.received
    assert [(p[0], p[1], p[2], p[4]) for p in got] == [((5, 2, 0, 77, 3, 0), "loss", s / 10, s) for s in range(100)]


def test_a_full_buffer_spills_to_disk_and_nothing_is_lost(bound, monkeypatch, caplog):
    monkeypatch.setenv("SPARK_TRACKING_BUFFER_MAX_POINTS", "1000")
    monkeypatch.setattr(executor, "_cached_ctx", executor._UNSET)  # re-read the bound
    spilled = executor.stats()["spilled"]
    for step in range(5000):  # faster than the shipper's interval: the buffer hits its bound
        executor.log_metric("x", step, step=step)
    assert executor.stats()["spilled"] > spilled
    assert "points spilled to" in caplog.text
    assert executor.flush(60)
    steps = sorted(p[4] for p in bound.recorder.received)
    assert steps == list(range(5000))


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
    other = os.path.join(executor._spill_dir(), f"{executor._relay_tag('10.0.0.9:4040')}-{0:020d}-1.jsonl")
    with open(other, "w") as fh:
        fh.write('["10.0.0.9:4040", "1:0", [0, 0, 0, 0, null], null, "m", 1.0, 1, 0]\n')
    try:
        executor.log_metric("mine", 1.0, step=0)
        assert executor.flush(30)
        assert os.path.exists(other)
        assert [p[1] for p in bound.recorder.received] == ["mine"]
    finally:
        os.remove(other)


def test_the_task_artifact_limit_follows_the_relays_frame_limit(monkeypatch):
    assert executor.max_task_artifact_bytes() == 4 * 1024 * 1024  # the default 8 MiB frames allow 4 MiB
    monkeypatch.setenv("SPARK_TRACKING_RELAY_MAX_FRAME_BYTES", str(1024 * 1024))
    assert executor.max_task_artifact_bytes() == 1024 * 1024 * 9 // 16  # base64 of it fits 3/4 of a frame
