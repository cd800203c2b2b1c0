"""The AML run vocabulary inside real Spark tasks (local-cluster: separate executor JVMs and
Python workers): metrics, text, rows, tables, images, tags and files forwarded to the driver's
run, read back with ``get_metrics()`` on the driver."""

from __future__ import annotations

import pytest

from spark_tracking import Run
from spark_tracking.store import RunReader


def _vocabulary_task(rows):
    from matplotlib.figure import Figure
    from pyspark import TaskContext

    from spark_tracking import Run

    p = TaskContext.get().partitionId()
    run = Run.get_context()
    for step in range(5):
        run.log("loss", 10 * p + step)
    run.log_list("grad_norm", [p, p + 0.5])
    run.log("phase", f"worker {p} done")
    run.log_row("per_step", worker=p, step=0, ok=True)
    run.log_row("per_step", worker=p, step=1, ok=False)
    run.log_table("summary", {"worker": [p], "best": [10.0 * p]})
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([p, p + 1])
    run.log_image("curve", plot=fig)
    run.tag(f"worker_{p}", "seen")
    run.upload_file(f"outputs/worker_{p}.txt", __import__("io").BytesIO(f"from {p}".encode()))
    yield run.id


def test_every_call_from_tasks_reaches_the_drivers_run(spark, store):
    with Run.start_logging("from-tasks") as run:
        ids = spark.sparkContext.parallelize(range(2), 2).mapPartitions(_vocabulary_task).collect()
        metrics = run.get_metrics()
        files = run.get_file_names()
    assert ids == [run.id, run.id]
    assert metrics["loss/worker_0"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert metrics["loss/worker_1"] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert metrics["loss"] == [5.0, 6.0, 7.0, 8.0, 9.0]  # the driver's mean, step by step
    assert metrics["grad_norm/worker_1"] == [1.0, 1.5]
    assert metrics["phase"] in ("worker 0 done", "worker 1 done")  # one tag: the last task wins
    assert metrics["per_step"] == {"worker": [0, 0, 1, 1], "step": [0, 1, 0, 1], "ok": [True, False, True, False]}
    assert metrics["summary"] == {"worker": [0, 1], "best": [0.0, 10.0]}
    images = [f for f in files if f.startswith("aml/images/curve/stage_")]
    assert metrics["curve"] == images and [f.rsplit("/", 1)[1] for f in images] == ["worker_0.png", "worker_1.png"]
    assert "outputs/worker_0.txt" in files and "outputs/worker_1.txt" in files
    tags = store.get_run(run.id).data.tags
    assert tags["worker_0"] == tags["worker_1"] == "seen"


def test_a_run_sent_to_tasks_in_a_closure_logs_there(spark, store):
    with Run.start_logging("closure") as run:

        def task(rows):
            from pyspark import TaskContext

            run.log("acc", 0.5 + TaskContext.get().partitionId())
            run.log_row("rows", p=TaskContext.get().partitionId())
            yield 1

        spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
        metrics = run.get_metrics()
    assert metrics["acc/worker_0"] == 0.5 and metrics["acc/worker_1"] == 1.5 and metrics["acc"] == 1.0
    assert metrics["rows"] == {"p": [0, 1]}


def test_a_single_task_job_logs_plain_keys(spark, store):
    with Run.start_logging("single") as run:

        def task(rows):
            from spark_tracking import Run

            for v in (3, 2, 1):
                Run.get_context().log("loss", v)  # a new Run object per call keeps counting steps
            yield 1

        spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
        assert run.get_metrics() == {"loss": [3.0, 2.0, 1.0]}


def test_reading_or_ending_the_run_from_a_task_is_refused_clearly(spark, store):
    with Run.start_logging("refused"):

        def task(rows):
            from spark_tracking import Run

            run = Run.get_context()
            messages = []
            for call in (run.get_metrics, run.complete, run.get_file_names):
                try:
                    call()
                except RuntimeError as exc:
                    messages.append(str(exc))
            yield messages

        (messages,) = spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
    assert "get_metrics() reads the tracking store, which Spark tasks cannot reach" in messages[0]
    assert "a Spark task cannot end the driver's run" in messages[1]
    assert "call it on the driver" in messages[2]


def test_a_run_other_than_the_jobs_run_is_refused_in_tasks(spark, store):
    with Run.start_logging("parent") as parent:
        other = parent.child_run("other")

        def task(rows):
            other.log("x", 1)
            yield 1

        with pytest.raises(Exception, match="is not the run this Spark task logs to"):
            spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
        other.complete()


def test_large_task_artifacts_arrive_whole_and_too_large_ones_are_refused(spark, store):
    def task(rows):
        import io

        from spark_tracking import Run
        from spark_tracking.validation import InvalidInput

        run = Run.get_context()
        for name in ("a", "b"):  # 3 MiB each: together more than one frame to the driver may carry
            run.upload_file(f"big/{name}.bin", io.BytesIO(name.encode() * (3 * 1024 * 1024)))
        try:
            run.upload_file("big/too_big.bin", io.BytesIO(b"x" * (5 * 1024 * 1024)))
        except InvalidInput as exc:
            yield str(exc)

    with Run.start_logging("big files") as run:
        (message,) = spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
        files = run.get_file_names()
        reader = RunReader(store, run.id)
        data = {name: reader.read_artifact(f"big/{name}.bin") for name in ("a", "b")}
    assert message == (
        "artifact 'big/too_big.bin' is 5242880 bytes; a Spark task forwards at most 4194304 bytes (4 MiB) per "
        "artifact through the driver. Write larger files to shared storage (a Unity Catalog volume, /dbfs) and "
        "log them from the driver with mlflow.log_artifact, or split them"
    )
    assert sorted(f for f in files if f.startswith("big/")) == ["big/a.bin", "big/b.bin"]
    assert data == {"a": b"a" * (3 * 1024 * 1024), "b": b"b" * (3 * 1024 * 1024)}
