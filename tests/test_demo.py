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
    rows = {
        tuple(line.split()[:2]): line.split()[-1]
        for line in out.stdout.splitlines()
        if line.startswith(("loss ", "val_loss "))
    }
    assert rows == {
        ("loss", "all"): "10",
        ("loss", "0"): "10",
        ("loss", "1"): "10",
        ("loss", "2"): "10",
        ("val_loss", "all"): "2",
    }
    assert f"tracking URI: {store_uri}" in out.stdout
    client = mlflow.MlflowClient(store_uri)
    for worker in range(3):
        assert sorted(m.step for m in client.get_metric_history(run_id, f"loss/worker_{worker}")) == list(range(10))
    assert client.get_run(run_id).data.params["workers"] == "3"
    assert "relay secret reaches tasks through Spark job properties" not in out.stderr
