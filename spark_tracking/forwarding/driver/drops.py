"""The drop folder of Spark Connect without a reachable driver (``task_drop_dir``): tasks that
cannot reach the relay write what they log to files named by their driver thread's binding
token (``forwarding.task.connect``); the driver moves the complete files of threads it bound into
their runs at ``spark_tracking.flush()`` and shutdown, through the relay's own dispatch."""

from __future__ import annotations

import json
import os


def collect(fw, drop_dir: str | None) -> int:
    """Move the complete drop files of threads this process bound into their runs, through the
    same handler as the relay (per-worker series and the mean). Returns the files moved."""
    if not drop_dir or not os.path.isdir(drop_dir):
        return 0
    tokens = fw.bound_tokens()
    moved = 0
    for name in sorted(os.listdir(drop_dir)):
        if not name.endswith(".jsonl") or name.partition("-")[0] not in tokens:
            continue
        path = os.path.join(drop_dir, name)
        claimed = path + f".{os.getpid()}.claimed"
        try:
            os.rename(path, claimed)
        except OSError:
            continue  # another process took it
        with open(claimed, encoding="utf-8") as fh:
            for line in fh:
                # the relay's own dispatch: the same checks and ops as a request over the wire
                fw.relay.dispatch(json.loads(line))
        os.remove(claimed)
        moved += 1
    return moved
