"""Spark Connect drop binding (``drop:<folder>``, no reachable driver), task side: a process a
task started (a torchrun rank, a subprocess) writes what it logged as one file, complete
(``.jsonl``, never left ``.part``) once the process ends in order."""

import json
import os
import subprocess
import sys

from spark_tracking.forwarding import protocol

RANK = """
import spark_tracking
for step in range(20):
    spark_tracking.log_metric("loss", float(step), step=step)
"""


def test_a_process_a_task_started_leaves_a_complete_drop_file(tmp_path):
    drop = tmp_path / "drop"
    env = dict(
        os.environ,
        RANK="1",
        **{
            protocol.ENV_RELAY: protocol.DROP + str(drop),
            protocol.ENV_BINDING: "abc:0",
            protocol.ENV_WORKER: "3:1:0:9:0",
        },
    )
    out = subprocess.run([sys.executable, "-c", RANK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = sorted(os.listdir(drop))
    assert len(names) == 1 and names[0].startswith("abc-") and names[0].endswith(".jsonl"), names
    lines = [json.loads(line) for line in open(drop / names[0])]
    assert sorted(m[3] for line in lines for m in line.get("m", ())) == list(range(20))
