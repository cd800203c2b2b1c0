"""``multiprocessing`` children a task starts with *fork* (Linux's default start method on
Python <= 3.13) end with ``os._exit``: ``atexit`` never runs there. What they logged is handed
to the driver when ``multiprocessing`` finalizes them (``multiprocessing.util.Finalize``), as
at a task's end: within ``task_flush_timeout``, the rest spilled with a warning. A real relay;
the children are bound as processes a task started (through the environment it exports)."""

import os
import subprocess
import sys

from faults import RecordingHandler, StalledRelay

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver.relay import Relay
from spark_tracking.forwarding.task.spill import SpillStore

# a process a task started (bound through the environment it exported); it logs nothing itself
CHILDREN = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
import spark_tracking

def child(key):
    for step in range(50):
        spark_tracking.log_metric(key, float(step), step=step)
    return key

if __name__ == "__main__":
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=child, args=(f"proc_{i}",)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    with ProcessPoolExecutor(2, mp_context=fork) as pool:
        assert list(pool.map(child, ["pool_0", "pool_1"])) == ["pool_0", "pool_1"]
"""


def _env(tmp_path, relay_address, **extra):
    return dict(
        os.environ,
        TMPDIR=str(tmp_path),  # the spill folder, <tmp>/spark_tracking_spill-<uid>
        SPARK_TRACKING_SHIP_INTERVAL="3600",  # nothing ships in the background: only the children's end
        **{protocol.ENV_RELAY: relay_address, protocol.ENV_SECRET: "test-secret", protocol.ENV_WORKER: "3:1:0:9:0"},
        **extra,
    )


def test_forked_children_and_a_process_pool_hand_over_what_they_logged(tmp_path):
    handler = RecordingHandler()
    relay = Relay("test-secret", handler).start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILDREN],
            env=_env(tmp_path, relay.address),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        relay.stop()
    assert out.returncode == 0, out.stderr
    got: dict = {}
    for _, key, value, _, step in handler.received:
        got.setdefault(key, []).append((step, value))
    keys = [f"proc_{i}" for i in range(4)] + ["pool_0", "pool_1"]
    assert {k: sorted(v) for k, v in got.items()} == {k: [(s, float(s)) for s in range(50)] for k in keys}


def test_a_forked_child_whose_relay_does_not_answer_spills_with_the_warning(tmp_path):
    relay = StalledRelay("test-secret")  # takes the frame, never acknowledges it
    code = CHILDREN.replace("range(4)", "range(1)").replace("[0] * 4", "[0]").split("    with ProcessPoolExecutor")[0]
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(tmp_path, relay.address, SPARK_TRACKING_TASK_FLUSH_TIMEOUT="2"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        relay.close()
    assert out.returncode == 0, out.stderr
    spill = SpillStore(str(tmp_path / f"spark_tracking_spill-{os.getuid()}"))
    frames = [frame for claimed in spill.claim([relay.address]) for frame in claimed.frames]
    assert sorted(m[3] for f in frames for m in f["m"]) == list(range(50))
    assert "the driver did not take this process's points within task_flush_timeout (2s)" in out.stderr
