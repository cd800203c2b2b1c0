"""A task failure Spark never retries, as the live view shows it: real Spark (``local[2]`` with
``spark.task.maxFailures=1``: the first failure fails the job), a real SQLite store, the relay,
and a RunDetails view of the run in the driver program."""

from __future__ import annotations

import json

from conftest import run_driver

from spark_tracking.forwarding import protocol

NEVER_RETRIED = """
import json, os, sys
import mlflow, spark_tracking
from pyspark.sql import SparkSession
from spark_tracking.live import RunDetails
from spark_tracking.live.text import format_summary

store, home = sys.argv[1], sys.argv[2]
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["SPARK_TRACKING_RELAY_SECRET"] = "never-retried-test-secret"
spark = (SparkSession.builder.master("local[2]").config("spark.driver.host", "127.0.0.1")
         .config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.task.maxFailures", "1")
         .config("spark.executorEnv.HOME", home)
         .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable).getOrCreate())
spark_tracking.configure(tracking_uri=store)


class Kept:  # the view's frontend minus the drawing: what it was last handed
    live = True

    def open(self, snap):
        self.snap = snap

    update = finish = open


def train(rows):
    import mlflow
    from pyspark import TaskContext

    partition = TaskContext.get().partitionId()
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1) + partition, step=step)
    if partition == 1:
        raise ValueError("bad batch 3\\nFile data.csv, password=hunter2")
    yield partition


with mlflow.start_run(run_name="failing") as run:
    view = RunDetails(run, tracking_uri=store, status_interval=3600)
    view._start(Kept())
    try:
        spark.sparkContext.parallelize(range(2), 2).mapPartitions(train).collect()
        job = "succeeded"
    except Exception as exc:  # the job fails: its one failure is never retried
        job = "failed: " + ("ValueError: bad batch 3" in str(exc)) * "bad batch"
    spark_tracking.flush()
    snap = view.refresh()
    view.stop()
print(json.dumps({
    "job": job,
    "workers": [[w.worker, w.state, w.attempt, w.error] for w in snap.workers],
    "failures": [[f.worker, f.attempt, f.error] for f in snap.failures],
    "failed_tasks": snap.failed_tasks,
    "summary": format_summary(snap),
}))
spark.stop()
"""


def test_a_task_failure_never_retried_shows_the_failed_worker_and_its_error_line(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    home = tmp_path / "executor-home"
    home.mkdir()
    result = json.loads(run_driver(NEVER_RETRIED, store, str(home), cwd=tmp_path).strip().splitlines()[-1])
    assert result["job"] == "failed: bad batch"
    workers = {w: (state, attempt, error) for w, state, attempt, error in result["workers"]}
    assert workers[1] == ("failed", 0, "ValueError: bad batch 3")  # one line: not the message's second
    assert result["failures"] == [[1, 0, "ValueError: bad batch 3"]]
    assert result["failed_tasks"] == 1
    summary = result["summary"]
    assert "failed task attempts 1" in summary, summary  # the run's header counts it
    assert "task failed: worker 1, stage " in summary and ", attempt 0: ValueError: bad batch 3\n" in summary, summary
    assert "hunter2" not in summary and "Traceback" not in summary


#: the same job, but the failing task's Python worker dies (os._exit, as an out-of-memory kill
#: would end it): the task never tells the driver, only Spark's status tracker knows it failed
#: Spark's listener bus counts the failure shortly after the job fails: the view reads Spark's
#: count at each status read (here at every refresh) until it shows, within a bound
CRASHED = (
    NEVER_RETRIED.replace(
        'raise ValueError("bad batch 3\\nFile data.csv, password=hunter2")', "spark_tracking.flush(); os._exit(3)"
    )
    .replace(
        "    import mlflow\n    from pyspark import TaskContext",
        "    import os\n\n    import mlflow\n    from pyspark import TaskContext",
    )
    .replace("status_interval=3600", "status_interval=0.001")
    .replace(
        "    snap = view.refresh()\n",
        "    import time\n"
        "    snap, bound = view.refresh(), time.monotonic() + 120\n"
        "    while (not snap.failed_tasks or 'running' in [w.state for w in snap.workers])"
        " and time.monotonic() < bound:\n"
        "        time.sleep(0.05)\n"
        "        snap = view.refresh()\n",
    )
)


def test_a_task_whose_python_worker_crashed_is_counted_from_spark_s_status(tmp_path):
    assert "os._exit(3)" in CRASHED and "import os\n" in CRASHED and "status_interval=0.001" in CRASHED
    assert "while (not snap.failed_tasks or 'running' in" in CRASHED
    store = f"sqlite:///{tmp_path / 'store.db'}"
    home = tmp_path / "executor-home"
    home.mkdir()
    result = json.loads(run_driver(CRASHED, store, str(home), cwd=tmp_path).strip().splitlines()[-1])
    assert result["job"] == "failed: "  # Spark's error names the crashed worker, not a Python exception
    assert result["failures"] == []  # the driver was told nothing
    assert result["failed_tasks"] == 1
    # its stage ended: the worker that never said it ended no longer shows "running"
    assert sorted((w, state, attempt) for w, state, attempt, _ in result["workers"]) == [
        (0, "done", 0),
        (1, "unreported", 0),
    ]
    summary = result["summary"]
    assert "failed task attempts 1" in summary, summary
    assert (
        "stage 0: 1 task attempt failed without reporting an error (the Python worker crashed or was "
        "killed, or the failure was outside the task's Python code): the stage's page in the Spark UI "
        "and the executor's log have the cause"
    ) in summary, summary


def test_an_error_line_is_one_line_cut_to_its_limit():
    assert protocol.error_line(ValueError("bad batch 3\nsecond line")) == "ValueError: bad batch 3"
    assert protocol.error_line(KeyError()) == "KeyError"
    assert protocol.error_line("\n  Traceback (most recent call last):\n  ...") == "Traceback (most recent call last):"
    long = protocol.error_line(RuntimeError("x" * 1000))
    assert len(long) == protocol.MAX_ERROR_CHARS and long.startswith("RuntimeError: xxx") and long.endswith("…")
    assert protocol.error_line(12) == ""  # what a driver accepts from the wire: a string, or nothing
