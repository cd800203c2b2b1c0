"""Forwarding from real Spark tasks (local-cluster: separate executor JVMs and Python
workers) to a real MLflow store: exact points, live delivery, run binding, relay security."""

import logging
import socket
import sys
import threading

import mlflow
import pytest
from conftest import free_port, history, run_driver
from faults import wait_until

import spark_tracking
from spark_tracking._compat import mlflow as mlflow_compat
from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver import current as driver


def _train(rows):
    import mlflow
    from pyspark import TaskContext

    p = TaskContext.get().partitionId()
    for step in range(300):
        mlflow.log_metric("loss", p * 1000 + step, step=step)
    yield p


def test_every_point_lands_once_per_worker_with_the_mean(spark, store):
    dropped_before = spark_tracking.stats()["dropped"]
    with mlflow.start_run() as run:
        assert spark.sparkContext.parallelize(range(4), 4).mapPartitions(_train).collect() == [0, 1, 2, 3]
    rid = run.info.run_id
    for p in range(4):
        assert history(store, rid, f"loss/worker_{p}") == [(s, float(p * 1000 + s)) for s in range(300)]
    assert history(store, rid, "loss") == [(s, 1500.0 + s) for s in range(300)]
    assert spark_tracking.stats()["dropped"] == dropped_before


def test_single_task_jobs_log_plain_keys(spark, store):
    with mlflow.start_run() as run:
        spark.sparkContext.parallelize(range(1), 1).mapPartitions(_train).collect()
    rid = run.info.run_id
    spark_tracking.flush()
    assert sorted(store.get_run(rid).data.metrics) == ["loss"]
    assert history(store, rid, "loss") == [(s, float(s)) for s in range(300)]


class Gate:
    """A socket the task talks to: the task says 'logged' and blocks until the test says 'go'."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def close(self):
        self.server.close()


def test_points_are_in_the_store_while_the_task_still_runs(spark, store):
    gate = Gate()
    port = gate.port

    def task(rows):
        import socket

        import mlflow

        mlflow.log_metric("live", 42.0, step=7)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"logged")
            assert conn.recv(2) == b"go"
        yield 1

    seen = []

    def watch():  # the task is blocked on us: poll the store (bounded), no sleep, then release it
        conn, _ = gate.server.accept()
        assert conn.recv(6) == b"logged"
        for _ in range(600):
            seen[:] = [(m.step, m.value) for m in store.get_metric_history(run_id[0], "live")]  # no flush
            if seen:
                break
            threading.Event().wait(0.05)
        conn.sendall(b"go")
        conn.close()

    run_id = []
    with mlflow.start_run() as run:
        run_id.append(run.info.run_id)
        watcher = threading.Thread(target=watch)
        watcher.start()
        result = spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
        watcher.join(120)
        gate.close()
    assert seen == [(7, 42.0)], "the point must be in the store while its task still runs"
    assert result == [1]


def test_spark_tracking_api_params_and_tags_from_tasks(spark, store):
    def task(rows):
        import mlflow
        from pyspark import TaskContext

        import spark_tracking

        p = TaskContext.get().partitionId()
        for step in range(5):
            mlflow.log_metrics({"acc": 0.5 + step / 10 + p, "f1": p}, step=step)
            spark_tracking.log_metric("lr", 0.1 * step, step=step)
        mlflow.log_param("optimizer", "sgd")
        mlflow.set_tag(f"worker_{p}_host", "seen")
        spark_tracking.set_tag("api", "spark_tracking")
        yield p

    with mlflow.start_run() as run:
        spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
    spark_tracking.flush()
    data = store.get_run(run.info.run_id).data
    assert data.params == {"optimizer": "sgd"}
    assert data.tags["worker_0_host"] == data.tags["worker_1_host"] == "seen"
    assert data.tags["api"] == "spark_tracking"
    assert history(store, run.info.run_id, "acc/worker_1") == [(s, 1.5 + s / 10) for s in range(5)]
    assert history(store, run.info.run_id, "lr") == [(s, 0.1 * s) for s in range(5)]


def _log_ten(prefix):
    import mlflow
    from pyspark import BarrierTaskContext, TaskContext

    ctx = TaskContext.get()
    worker = ctx.partitionId()
    for step in range(10):
        mlflow.log_metric(prefix, worker * 100 + step, step=step)
    if isinstance(ctx, BarrierTaskContext):
        ctx.barrier()


@pytest.mark.parametrize("kind", ["foreachPartition", "mapInPandas", "barrier"])
def test_other_kinds_of_spark_jobs(spark, store, kind):
    with mlflow.start_run() as run:
        if kind == "foreachPartition":
            spark.sparkContext.parallelize(range(2), 2).foreachPartition(lambda rows: _log_ten("m"))
        elif kind == "mapInPandas":

            def fn(batches):
                _log_ten("m")
                yield from batches

            spark.range(0, 2, numPartitions=2).mapInPandas(fn, "id long").collect()
        else:

            def fn(rows):
                _log_ten("m")
                yield 1

            assert spark.sparkContext.parallelize(range(2), 2).barrier().mapPartitions(fn).collect() == [1, 1]
    assert_ten_steps_of_two_workers(store, run.info.run_id, "m")


def assert_ten_steps_of_two_workers(store, rid, key):
    """Worker w logged w * 100 + step for steps 0-9, each step once; the mean is 50 + step."""
    for w in range(2):
        assert history(store, rid, f"{key}/worker_{w}") == [(s, float(w * 100 + s)) for s in range(10)]
    assert history(store, rid, key) == [(s, 50.0 + s) for s in range(10)]


def test_nested_runs_get_their_own_points(spark, store):
    def job(key):
        def task(rows):
            import mlflow

            mlflow.log_metric(key, 1.0, step=0)
            yield 1

        spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()

    with mlflow.start_run() as parent:
        job("before")
        with mlflow.start_run(nested=True) as child:
            job("inside")
        job("after")
    spark_tracking.flush()
    assert sorted(store.get_run(parent.info.run_id).data.metrics) == ["after", "before"]
    assert sorted(store.get_run(child.info.run_id).data.metrics) == ["inside"]


@pytest.mark.skipif(
    mlflow_compat.installed_version() < (2, 10),
    reason="MLflow before 2.10 keeps one fluent run stack per process, not per thread: two driver "
    "threads' runs are not separate in MLflow itself",
)
def test_concurrent_runs_from_two_driver_threads(spark, store):
    runs = {}
    barrier = threading.Barrier(2, timeout=120)
    with mlflow.start_run():
        pass  # MLflow's get-or-create of the session experiment races across threads: create it first

    def driver_thread(name):
        with mlflow.start_run(run_name=name) as run:
            runs[name] = run.info.run_id
            barrier.wait()

            def task(rows, name=name):
                import mlflow

                for step in range(50):
                    mlflow.log_metric("m", step, step=step)
                mlflow.set_tag("thread", name)
                yield 1

            spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()

    threads = [threading.Thread(target=driver_thread, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    spark_tracking.flush()
    for name, rid in runs.items():
        data = store.get_run(rid).data
        assert data.tags["thread"] == name
        assert history(store, rid, "m/worker_0") == [(s, float(s)) for s in range(50)]
        assert history(store, rid, "m/worker_1") == [(s, float(s)) for s in range(50)]


def test_tasks_with_no_active_run_get_a_run_created_with_a_warning(spark, store, caplog):
    with mlflow.start_run():
        pass  # binds this thread; the run then ends
    caplog.set_level(logging.WARNING, logger="spark_tracking")

    def task(rows):
        import mlflow

        mlflow.log_metric("orphan", 3.0, step=1)
        yield 1

    spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
    spark_tracking.flush()
    runs = store.search_runs(
        [mlflow.get_experiment_by_name(mlflow.get_experiment_by_name("Default").name).experiment_id]
        if False
        else [e.experiment_id for e in store.search_experiments()],
        filter_string="attributes.run_name LIKE 'spark-tasks%'",
    )
    assert len(runs) == 1
    assert history(store, runs[0].info.run_id, "orphan") == [(1, 3.0)]
    assert f"created run {runs[0].info.run_id} for their points" in caplog.text


def test_relay_refuses_clients_without_the_secret(spark, store):
    with mlflow.start_run():
        pass
    relay = driver.forwarder().relay
    before = dict(relay.counters)
    host, port = relay.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        nonce = protocol.recv_frame(sock)["nonce"]
        sock.sendall(protocol.encode({"auth": protocol.auth_digest("wrong-secret", nonce), "v": 1}))
        assert sock.recv(1) == b""  # closed, no reply
    with socket.create_connection((host, int(port))) as sock:
        protocol.recv_frame(sock)
        sock.sendall(
            protocol.encode({"seq": 1, "op": "points", "b": "1:0", "w": [0, 0, 0, 0, None], "m": [["x", 1.0, 1, 0]]})
        )
        assert sock.recv(1) == b""
    assert relay.counters["auth_failures"] == before["auth_failures"] + 2
    assert relay.counters["requests"] == before["requests"]


def test_on_the_driver_the_api_logs_to_the_active_run(store):
    with mlflow.start_run() as run:
        spark_tracking.log_metric("driver_side", 2.0, step=3)
    assert history(store, run.info.run_id, "driver_side") == [(3, 2.0)]
    _ = free_port


def test_a_task_logging_only_to_an_explicit_run_creates_no_run(spark, store, caplog):
    target = store.create_run("0").info.run_id
    with mlflow.start_run():
        pass  # binds this thread; the run then ends
    caplog.set_level(logging.WARNING, logger="spark_tracking")

    def task(rows):
        import mlflow

        mlflow.MlflowClient().log_metric(target, "explicit", 2.0, step=4)
        yield 1

    spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
    assert history(store, target, "explicit/worker_0") == [(4, 2.0)]
    runs = store.search_runs(
        [e.experiment_id for e in store.search_experiments()], filter_string="attributes.run_name LIKE 'spark-tasks%'"
    )
    assert runs == [] and "created run" not in caplog.text
    # what each task logged to is forgotten once the driver has taken the task's "done"
    # (only this test's tasks: tasks killed by earlier tests never send theirs)
    assert wait_until(lambda: not any(target in runs for runs in driver.forwarder()._logged_to.values()), 30)


#: a barrier ShuffleMapStage that fails after logging and is re-run whole, in a driver program of
#: its own with four slots for a stage of two tasks: a re-run is scheduled only when all its
#: tasks get a slot at once, and slots of the killed attempt may still be held (on the shared
#: two-slot session the re-run once waited 30 min for its second slot on a busy machine)
BARRIER_RERUN = """
import os, sys
import mlflow, spark_tracking
from pyspark.sql import SparkSession

marks, home = sys.argv[1], sys.argv[2]
spark = (SparkSession.builder.master("local-cluster[2,2,1024]")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.executorEnv.HOME", home)
         # a barrier task that never arrives fails its stage in 2 min (Spark then re-runs it)
         # instead of leaving the other waiting for the default 365 days
         .config("spark.barrier.sync.timeout", "120s").getOrCreate())
spark_tracking.configure()  # SPARK_TRACKING_TRACKING_URI

def task(rows):
    import os

    import mlflow
    from pyspark import BarrierTaskContext

    import spark_tracking

    ctx = BarrierTaskContext.get()
    try:  # the first stage attempt of this partition (PySpark's TaskContext has no stage attempt)
        os.close(os.open(os.path.join(marks, str(ctx.partitionId())), os.O_CREAT | os.O_EXCL))
        first = True
    except FileExistsError:
        first = False
    for step in range(10):
        mlflow.log_metric("loss", (0 if first else 1000) + ctx.partitionId() * 100 + step, step=step)
    spark_tracking.flush()
    ctx.barrier()  # both tasks logged; then one fails and Spark re-runs the whole stage
    if first and ctx.partitionId() == 1:
        raise RuntimeError("injected: the barrier stage fails after logging")
    yield ctx.partitionId(), 1

with mlflow.start_run() as run:
    counts = spark.sparkContext.parallelize(range(2), 2).barrier().mapPartitions(task).reduceByKey(lambda a, b: a + b).collect()
assert sorted(counts) == [(0, 1), (1, 1)], counts
assert spark_tracking.flush(60)
print(run.info.run_id)
spark.stop()
"""


def test_a_barrier_shuffle_map_stage_rerun_stores_each_step_once(sqlite_uri, tmp_path):
    marks, home = tmp_path / "marks", tmp_path / "executor-home"
    marks.mkdir()
    home.mkdir()
    env = {"SPARK_TRACKING_TRACKING_URI": sqlite_uri, "PYSPARK_PYTHON": sys.executable}
    run_id = run_driver(BARRIER_RERUN, str(marks), str(home), cwd=tmp_path, env=env).split()[-1]
    assert_ten_steps_of_two_workers(mlflow.MlflowClient(sqlite_uri), run_id, "loss")


def test_means_are_written_when_the_stage_ends_though_some_tasks_never_logged(spark, store):
    def task(rows):
        import mlflow
        from pyspark import TaskContext

        p = TaskContext.get().partitionId()
        if p < 2:
            for step in range(5):
                mlflow.log_metric("half", p * 10 + step, step=step)
        yield p

    with mlflow.start_run() as run:
        spark.sparkContext.parallelize(range(4), 4).mapPartitions(task).collect()
        rid = run.info.run_id
        # no flush: the stage ended, so the means of the two workers that logged are written
        assert wait_until(lambda: len(store.get_metric_history(rid, "half")) == 5, 30), spark_tracking.stats()
    assert history(store, rid, "half", flush=False) == [(s, 5.0 + s) for s in range(5)]


def test_tasks_learn_the_relay_frame_limit_from_a_job_property(spark, store):
    def task(rows):
        from pyspark import TaskContext

        yield TaskContext.get().getLocalProperty("spark_tracking.max_frame")

    with mlflow.start_run():
        limits = spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
    assert limits == [str(driver.forwarder().relay.max_frame_bytes)]
