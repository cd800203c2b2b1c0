"""The main job (``.ci/demo`` runs ``spark-tracking demo``) on the embedded default store, in a
fresh process as a user runs it: every point from the tasks is stored, the summary says so, and
the relay secret never travels in job properties (no warning)."""

import os
import re
import subprocess
import sys

import mlflow


def test_the_demo_logs_every_point_to_the_embedded_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"}
    out = subprocess.run(
        [sys.executable, "-m", "spark_tracking.cli", "demo", "--workers", "3", "--rounds", "2", "--steps", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    store_uri = "sqlite:///" + os.path.join(os.environ["HOME"], ".spark_tracking", "mlflow.db")
    run_id = re.search(r"^run id: (\w+)$", out.stdout, re.M).group(1)
    assert counts_by_metric_and_worker(out.stdout) == {
        ("loss", "mean"): "10",
        ("loss", "0"): "10",
        ("loss", "1"): "10",
        ("loss", "2"): "10",
        ("val_loss", ""): "2",
    }
    assert f"tracking URI: {store_uri}" in out.stdout
    client = mlflow.MlflowClient(store_uri)
    for worker in range(3):
        assert sorted(m.step for m in client.get_metric_history(run_id, f"loss/worker_{worker}")) == list(range(10))
    assert client.get_run(run_id).data.params["workers"] == "3"
    assert "relay secret reaches tasks through Spark job properties" not in out.stderr


def counts_by_metric_and_worker(stdout: str) -> dict:
    """(metric, worker) -> count from the metrics table the demo prints (as `show` does: the
    metric named on its first row only, worker "mean" for the mean, "" for a plain metric)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric ")) + 2
    counts, metric = {}, None
    for line in lines[start:]:
        if not line.strip() or line.startswith("tracking URI"):
            break
        cells = line.split()
        if not line.startswith(" "):
            metric, cells = cells[0], cells[1:]
        worker = cells[0] if len(cells) == 5 else ""
        counts[(metric, worker)] = cells[-1]
    return counts
