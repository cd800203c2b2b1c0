"""Runs in a task: what the task store hands out, with the relay down, and the rules for ending
runs (a task ends only the runs it created)."""

from __future__ import annotations

import mlflow
import pytest
from conftest import history
from faults import wait_until

import spark_tracking
from spark_tracking.forwarding.driver import current as driver
from spark_tracking.forwarding.driver.relay import Relay


def _log_fifty(key):
    def task(rows):
        import time

        import mlflow

        started = time.monotonic()
        mlflow.log_metric(key, 1.0, step=0)
        first_call = time.monotonic() - started
        for step in range(1, 50):
            mlflow.log_metric(key, 1.0, step=step)
        run = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id)
        yield first_call, run.info.run_id, run.inputs.dataset_inputs

    return task


def test_first_log_call_with_the_relay_down_neither_raises_nor_blocks(spark, store):
    with mlflow.start_run() as parent:
        forwarder = driver.forwarder()
        address = forwarder.relay.address
        forwarder.relay.stop()
        try:
            ((first_call, run_id, inputs),) = (
                spark.sparkContext.parallelize([0], 1).mapPartitions(_log_fifty("down")).collect()
            )
        finally:  # the relay comes back at the same address; the spilled points follow
            host, port = address.rsplit(":", 1)
            forwarder.relay = Relay(forwarder.secret, forwarder, host, int(port)).start()
        assert first_call < 5.0  # not the 10 s of a blocking round trip
        assert inputs == []  # a well-formed run (MLflow 3.0.x reads run.inputs.dataset_inputs)
        assert run_id != parent.info.run_id  # a stand-in until the driver answers
        # the node's shipper sends what the first task spilled: a task's end sends its own points
        # and "done" first, the node's spill backlog follows in the shipper's next rounds
        spark.sparkContext.parallelize(range(2), 2).mapPartitions(_log_fifty("after")).collect()
    expected = [(s, 1.0) for s in range(50)]
    assert wait_until(lambda: history(store, parent.info.run_id, "down") == expected, 120)


def test_a_task_never_ends_the_drivers_run_and_ends_its_own(spark, store):
    def task(rows):
        import mlflow

        with mlflow.start_run():  # the driver's run: ending the block does not end it
            mlflow.log_metric("outer", 1.0)
        try:
            with mlflow.start_run(run_name="fails", nested=True) as child:
                mlflow.log_param("p", "v")
                raise ValueError("boom")
        except ValueError:
            pass
        client = mlflow.MlflowClient()
        explicit = client.create_run("0", run_name="explicit")
        client.log_metric(explicit.info.run_id, "m", 2.0)
        yield child.info.run_id, explicit.info.run_id

    with mlflow.start_run() as parent:
        ((failed_id, explicit_id),) = spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()
        assert store.get_run(parent.info.run_id).info.status == "RUNNING"
    spark_tracking.flush()
    failed = store.get_run(failed_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert failed.data.params == {"p": "v"}
    explicit = store.get_run(explicit_id)  # the client API: a run of its own, ended at task end
    assert explicit.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert explicit.info.status == "FINISHED"
    assert history(store, explicit_id, "m") == [(0, 2.0)]
    assert history(store, parent.info.run_id, "outer") == [(0, 1.0)]


def test_a_file_over_the_limit_is_refused_at_the_call(spark, store, monkeypatch):
    def task(rows):
        import mlflow

        from spark_tracking.forwarding import protocol

        protocol.MAX_TASK_ARTIFACT_BYTES = 10  # the limit is 2 GiB; a small one for the test
        with open("big.bin", "wb") as fh:
            fh.write(b"x" * 11)
        try:
            mlflow.log_artifact("big.bin")
        except Exception as exc:
            yield str(exc), exc.error_code

    with mlflow.start_run():
        ((message, code),) = spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()
    assert "'big.bin' is 11 bytes; a Spark task sends at most 10 bytes" in message
    assert "log them from the driver with mlflow.log_artifact" in message
    assert code == "INVALID_PARAMETER_VALUE"  # the caller's mistake, not an internal error


def test_a_store_error_reaches_the_task_with_its_code(spark, store):
    def task(rows):
        import mlflow

        try:
            mlflow.MlflowClient().get_run("0" * 32)
        except mlflow.exceptions.MlflowException as exc:
            yield exc.error_code

    with mlflow.start_run():
        (code,) = spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()
    assert code == "RESOURCE_DOES_NOT_EXIST"  # what the driver's store said, not INTERNAL_ERROR


@pytest.mark.parametrize("size", [0, 9 * 1024 * 1024 + 7])
def test_artifacts_arrive_whole_in_chunks(spark, store, size):
    def task(rows):
        import os

        import mlflow

        with open("blob.bin", "wb") as fh:
            fh.write(os.urandom(size))
        with mlflow.start_run(run_name="blob"):
            mlflow.log_artifact("blob.bin", artifact_path="data")
            mlflow.log_dict({"size": size}, "meta.json")
            yield mlflow.active_run().info.run_id, open("blob.bin", "rb").read()

    with mlflow.start_run():
        ((run_id, data),) = spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()
    local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/data/blob.bin")
    assert open(local, "rb").read() == data
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/meta.json") == {"size": size}


def test_log_table_twice_in_a_task_appends(spark, store):
    def task(rows):
        import mlflow

        with mlflow.start_run(run_name="table"):
            mlflow.log_table({"a": [1], "b": ["x"]}, "tables/rows.json")
            mlflow.log_table({"a": [2], "b": ["y"]}, "tables/rows.json")  # MLflow reads, then appends
            yield mlflow.active_run().info.run_id

    with mlflow.start_run():
        (run_id,) = spark.sparkContext.parallelize([0], 1).mapPartitions(task).collect()
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/tables/rows.json") == {
        "columns": ["a", "b"],
        "data": [[1, "x"], [2, "y"]],
    }


def test_runs_land_in_the_experiment_a_task_names_as_children_of_the_drivers_run(spark, store):
    """``mlflow.set_experiment`` and ``MlflowClient().create_experiment`` in a task act on the
    central store (through the driver); the task's runs land there, children of the driver's run."""

    def name_it(rows):
        import mlflow

        named = mlflow.set_experiment("from-a-task")  # created on the central store
        with mlflow.start_run() as run:
            mlflow.log_metric("m", 1.0)
        client = mlflow.MlflowClient()
        created = client.create_experiment("created-in-a-task")
        explicit = client.create_run(created)
        client.log_param(explicit.info.run_id, "p", "v")
        yield named.experiment_id, run.info.run_id, created, explicit.info.run_id

    def use_it(rows):
        import mlflow

        mlflow.set_experiment("from-a-task")  # exists now: found, not created again
        with mlflow.start_run(run_name="again") as run:
            mlflow.log_metric("m", 2.0)
        yield run.info.run_id

    with mlflow.start_run() as parent:
        ((named, run_id, created, explicit_id),) = (
            spark.sparkContext.parallelize([0], 1).mapPartitions(name_it).collect()
        )
        again = spark.sparkContext.parallelize(range(2), 2).mapPartitions(use_it).collect()
    assert store.get_experiment_by_name("from-a-task").experiment_id == named
    assert store.get_experiment_by_name("created-in-a-task").experiment_id == created
    for rid, experiment in [(run_id, named), (explicit_id, created), *((r, named) for r in again)]:
        run = store.get_run(rid)
        assert run.info.experiment_id == experiment, rid
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, rid
    assert history(store, run_id, "m") == [(0, 1.0)]
    assert store.get_run(explicit_id).data.params == {"p": "v"}
    assert sorted(store.get_run(r).data.metrics["m"] for r in again) == [2.0, 2.0]
    assert [r.info.run_id for r in store.search_runs([parent.info.experiment_id])] == [parent.info.run_id]
