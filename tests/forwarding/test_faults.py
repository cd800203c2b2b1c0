"""Fault injection on real Spark and a real MLflow server: throttling, outages, a killed
driver and replay, retried tasks, bad input. Each test asserts the exact points stored."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import mlflow
import pytest
from conftest import MlflowServer, history
from faults import FaultProxy, wait_until

import spark_tracking
from spark_tracking.forwarding.driver.sink import RateLimiter, Sink, Spool, Submission


def _sink(uri, tmp_path, sleeps=None, **kw):
    return Sink(
        mlflow.MlflowClient(uri),
        uri,
        Spool(str(tmp_path / "spool"), 1 << 30),
        lambda stage: 1,
        sleep=(sleeps.append if sleeps is not None else (lambda s: None)),
        **kw,
    )


def _points(n, key="m", offset=0):
    return [(key, float(i + offset), 1_700_000_000_000 + i + offset, i + offset) for i in range(n)]


def test_429_and_503_are_retried_after_the_servers_retry_after(mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server.uri)
    run = client.create_run("0")
    sleeps = []
    with FaultProxy(mlflow_server.uri) as proxy:
        sink = _sink(proxy.uri, tmp_path, sleeps)
        proxy.status, proxy.retry_after, proxy.times = 429, "7", 2
        sink.submit(Submission("points", run.info.run_id, [0, 0, 0, 0, None], _points(1500)))
        assert sink.flush(60)
        proxy.status, proxy.retry_after, proxy.times = 503, "3", 1
        sink.submit(Submission("points", run.info.run_id, [0, 0, 0, 0, None], _points(10, offset=1500)))
        assert sink.flush(60)
        sink.stop()
    assert sleeps == [7.0, 7.0, 3.0]
    assert history(client, run.info.run_id, "m", flush=False) == [(i, float(i)) for i in range(1510)]
    assert sink.stats()["retried"] == 3 and sink.stats()["dropped"] == {}


def test_rate_limit_spaces_requests():
    now = [100.0]
    waits = []

    def sleep(seconds):
        waits.append(round(seconds, 6))
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert waits == [0.25, 0.25, 0.25, 0.25]


def test_a_refused_point_or_param_never_rejects_the_rest(sqlite_uri, tmp_path, caplog):
    client = mlflow.MlflowClient(sqlite_uri)
    run = client.create_run("0")
    sink = _sink(sqlite_uri, tmp_path)
    rid = run.info.run_id
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(5), params=[("lr", "0.1")]))
    sink.submit(
        Submission(
            "points",
            rid,
            [0, 1, 0, 1, None],
            [("bad key!", 1.0, 1, 0)] + _points(5, "n"),
            params=[("lr", "0.2"), ("epochs", "3")],
        )
    )
    assert not sink.flush(60)  # something was refused
    sink.stop()
    data = client.get_run(rid).data
    assert data.params == {"lr": "0.1", "epochs": "3"}
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(5)]
    assert history(client, rid, "n", flush=False) == [(i, float(i)) for i in range(5)]
    assert sink.stats()["dropped"] == {"param_conflict": 1, "rejected_by_store": 1}
    assert "param 'lr' of run %s was logged as '0.1' and a task logged '0.2'" % rid in caplog.text
    assert "the store refused metric 'bad key!'" in caplog.text


def test_ten_thousand_metrics_in_one_call_arrive_in_batches(sqlite_uri, tmp_path):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path)
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [(f"k{i}", float(i), 1, 0) for i in range(10_000)]))
    assert sink.flush(120)
    sink.stop()
    assert len(client.get_run(rid).data.metrics) == 10_000
    assert sink.stats()["requests"] == 10


def _slow_task(port, steps):
    def task(rows):
        import socket
        import time

        import mlflow
        from pyspark import TaskContext

        p = TaskContext.get().partitionId()
        for step in range(steps):
            mlflow.log_metric("loss", p * 1000 + step, step=step)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"w")
            assert conn.recv(1) == b"g"
        worst = 0.0
        for step in range(steps, 2 * steps):
            t = time.perf_counter()
            mlflow.log_metric("loss", p * 1000 + step, step=step)
            worst = max(worst, time.perf_counter() - t)
        yield worst

    return task


def test_store_outage_mid_job_delivers_everything_after_recovery(spark, tmp_path):
    import socket

    server = MlflowServer(tmp_path).start()
    try:
        spark_tracking.configure(tracking_uri=server.uri)
        client = mlflow.MlflowClient(server.uri)
        gate = socket.create_server(("127.0.0.1", 0))
        task = _slow_task(gate.getsockname()[1], 100)

        def conduct():  # both tasks mid-training: take the store away, then let them go on
            conns = [gate.accept()[0] for _ in range(2)]
            for conn in conns:
                assert conn.recv(1) == b"w"
            server.stop()
            for conn in conns:
                conn.sendall(b"g")

        with mlflow.start_run() as run:
            conductor = threading.Thread(target=conduct)
            conductor.start()
            worst = spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
            conductor.join(120)
            gate.close()
            assert wait_until(lambda: spark_tracking.stats()["spooled"] > 0), spark_tracking.stats()
            server.start()  # same port, same database
            assert spark_tracking.flush(120)
        assert max(worst) < 0.5, f"a log call waited {max(worst):.3f}s during the outage"
        for p in range(2):
            assert history(client, run.info.run_id, f"loss/worker_{p}", flush=False) == [
                (s, float(p * 1000 + s)) for s in range(200)
            ]
        assert history(client, run.info.run_id, "loss", flush=False) == [(s, 500.0 + s) for s in range(200)]
    finally:
        server.stop()


DRIVER = textwrap.dedent("""
    import sys, time
    import mlflow
    from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission
    uri, spool_dir, run_id = sys.argv[1:4]
    sink = Sink(mlflow.MlflowClient(uri), uri, Spool(spool_dir, 1 << 30), lambda s: 1,
                max_attempts=1, sleep=lambda s: None)
    for k in range(3):
        rows = [("m", float(i), 1_700_000_000_000 + i, i) for i in range(k * 1000, (k + 1) * 1000)]
        sink.submit(Submission("points", run_id, [0, 0, 0, 0, None], rows))
        sink.flush(60)
    print(sink.stats()["spooled"], flush=True)
    sys.stdin.read()   # hold the spool until killed
""")


def test_killed_driver_spool_is_replayed_exactly_once(mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    spool_dir = tmp_path / "spool"
    with FaultProxy(mlflow_server.uri) as proxy:
        proxy.down.set()
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, proxy.uri, str(spool_dir), rid],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "3000"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    files = sorted(os.listdir(spool_dir))
    assert len(files) == 3 and all(f.endswith(".json") for f in files)
    backup = tmp_path / "backup"
    shutil.copytree(spool_dir, backup)
    cli = [
        sys.executable,
        "-m",
        "spark_tracking.cli",
        "replay",
        "--spool-dir",
        str(spool_dir),
        "--tracking-uri",
        mlflow_server.uri,
    ]
    out = subprocess.run(cli, capture_output=True, text=True, check=True)
    assert f"replayed 3 spool file(s) from {spool_dir}; 0 left" in out.stdout
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(3000)]
    shutil.rmtree(spool_dir)
    shutil.copytree(backup, spool_dir)  # replay the same files again: idempotent
    subprocess.run(cli, capture_output=True, text=True, check=True)
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(3000)]
    assert os.listdir(spool_dir) == []
    assert "hunter" not in json.dumps([open(backup / f).read() for f in files])


def test_a_retried_task_leaves_one_point_per_step(spark, sqlite_uri):
    spark_tracking.configure(tracking_uri=sqlite_uri)

    def task(rows):
        import mlflow
        from pyspark import TaskContext

        ctx = TaskContext.get()
        attempt = ctx.attemptNumber()
        steps = 10 if attempt == 0 else 20
        for step in range(steps):
            mlflow.log_metric("loss", attempt * 1000 + step, step=step)
        if attempt == 0 and ctx.partitionId() == 1:
            raise RuntimeError("injected failure after logging")
        yield attempt

    # the counters are the session's (every store it wrote to): compare with before
    before = spark_tracking.stats()["dropped"].get("duplicate_attempt", 0)
    with mlflow.start_run() as run:
        attempts = spark.sparkContext.parallelize(range(2), 2).mapPartitions(task).collect()
    assert spark_tracking.flush()
    client = mlflow.MlflowClient(sqlite_uri)
    assert attempts == [0, 1]
    expected_retried = [(s, float(s)) for s in range(10)] + [(s, 1000.0 + s) for s in range(10, 20)]
    assert history(client, run.info.run_id, "loss/worker_1", flush=False) == expected_retried
    assert history(client, run.info.run_id, "loss/worker_0", flush=False) == [(s, float(s)) for s in range(10)]
    assert spark_tracking.stats()["dropped"]["duplicate_attempt"] - before == 10


@pytest.mark.parametrize(
    "value, message",
    [
        (True, "metric 'k' got True (bool); a metric value must be a number"),
        (None, "metric 'k' got None (NoneType); a metric value must be a number"),
        ("0.5", "metric 'k' got '0.5' (str); a metric value must be a number"),
    ],
)
def test_bad_metric_values_are_refused_at_the_call_site(spark, sqlite_uri, value, message):
    spark_tracking.configure(tracking_uri=sqlite_uri)

    def task(rows):
        import spark_tracking
        from spark_tracking.validation import InvalidInput

        try:
            spark_tracking.log_metric("k", value)
        except InvalidInput as exc:
            yield str(exc)

    with mlflow.start_run():
        errors = spark.sparkContext.parallelize(range(1), 1).mapPartitions(task).collect()
    assert errors == [message + " (int or float, NaN and inf allowed). Log text with set_tag or log_param."]


def test_nan_and_infinities_reach_a_rest_store_as_mlflow_allows(mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(mlflow_server.uri, tmp_path)
    inf = float("inf")
    sink.submit(
        Submission(
            "points",
            rid,
            [0, 0, 0, 0, None],
            [("v", float("nan"), 1, 0), ("v", inf, 2, 1), ("v", -inf, 3, 2), ("v", 0.25, 4, 3)],
        )
    )
    assert sink.flush(60)
    sink.stop()
    values = [v for _, v in history(client, rid, "v", flush=False)]
    direct = client.create_run("0").info.run_id  # what MLflow itself stores for the same values
    from mlflow.entities import Metric

    client.log_batch(
        direct,
        metrics=[
            Metric("v", float("nan"), 1, 0),
            Metric("v", inf, 2, 1),
            Metric("v", -inf, 3, 2),
            Metric("v", 0.25, 4, 3),
        ],
    )
    expected = [v for _, v in history(client, direct, "v", flush=False)]
    assert values[0] != values[0] and expected[0] != expected[0]  # NaN
    assert values[1:] == expected[1:]  # MLflow's SQL store keeps ±inf as ±max float


def test_a_stalled_store_holds_nothing_else_up(mlflow_server, tmp_path):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    with FaultProxy(mlflow_server.uri) as proxy:
        sink = _sink(proxy.uri, tmp_path)
        proxy.stall.set()
        first = sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(100)))
        assert proxy.stalled.wait(60)  # the store holds the request
        second = sink.submit(Submission("points", rid, [0, 0, 0, 0, None], _points(100, offset=100)))
        assert not first.done() and not second.done()  # custody taken, delivery pending
        proxy.stall.clear()
        proxy.release.set()
        assert first.result(60) is True and second.result(60) is True
        assert sink.flush(60)
        sink.stop()
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(200)]


EXITING_DRIVER = textwrap.dedent("""
    import sys
    from spark_tracking.config import Config
    from spark_tracking.forwarding.driver import current as driver
    from spark_tracking.forwarding.task.transport import Connection as _Connection
    uri, home, run_id, secret = sys.argv[1:5]
    driver.EXIT_TIMEOUT = 1.0
    fw = driver._forwarder = driver.Forwarder(Config.resolve({"home": home}), None)
    binding = f"thread:{fw.sink_index(uri)}"
    conn = _Connection(fw.relay.address, secret, timeout=60)
    for k in range(3):
        rows = [["m", float(i), 1_700_000_000_000 + i, i] for i in range(k * 1000, (k + 1) * 1000)]
        reply = conn.request({"id": f"exit:{k}", "op": "points", "b": binding, "w": [0, 0, 0, 1, None],
                              "m": rows, "r": run_id})
        assert reply["run"] == run_id, reply
    print("acknowledged", flush=True)
""")


def test_points_acknowledged_before_exit_with_a_frozen_store_are_replayed_exactly_once(tmp_path):
    """The store hangs (SIGSTOP) while the driver exits: what the relay acknowledged is in the
    spool, the exit message says so, and replaying the spool twice stores every point once."""
    from faults import frozen

    server = MlflowServer(tmp_path).start()
    try:
        client = mlflow.MlflowClient(server.uri)
        rid = client.create_run("0").info.run_id
        home = tmp_path / "driver-home"
        env = dict(os.environ, SPARK_TRACKING_RELAY_SECRET="exit-test-secret")
        with frozen(server.proc):
            proc = subprocess.run(
                [sys.executable, "-c", EXITING_DRIVER, server.uri, str(home), rid, "exit-test-secret"],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
        assert proc.returncode == 0 and proc.stdout == "acknowledged\n", proc.stderr
        spool_dir = home / "spool"
        # 3,000 per-worker points and the 3,000 means that were open
        assert (
            f"the store at {server.uri} did not take 6000 values in time; they are in the spool "
            f"{spool_dir}: run `spark-tracking replay`"
        ) in proc.stderr
        backup = tmp_path / "backup"
        shutil.copytree(spool_dir, backup)
        cli = [sys.executable, "-m", "spark_tracking.cli", "replay", "--spool-dir", str(spool_dir)]
        for _ in range(2):  # the second time from a copy of the same files: idempotent
            out = subprocess.run(cli, capture_output=True, text=True)
            assert out.returncode == 0 and "0 left" in out.stdout, out.stdout + out.stderr
            shutil.rmtree(spool_dir)
            shutil.copytree(backup, spool_dir)
        assert history(client, rid, "m/worker_0", flush=False) == [(i, float(i)) for i in range(3000)]
        assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(3000)]
    finally:
        server.stop()
