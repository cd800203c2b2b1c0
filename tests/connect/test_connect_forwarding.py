"""Forwarding on Spark Connect: a Connect client session in this process, a real Connect server
with separate executor processes, a real MLflow store, plain ``mlflow.log_metric`` in tasks."""

from __future__ import annotations

import logging

import mlflow
from conftest import history

import spark_tracking
from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver import connect
from spark_tracking.forwarding.driver import current as driver


def _train(batches):
    import mlflow
    import pandas as pd
    from pyspark import TaskContext

    p = TaskContext.get().partitionId()
    for step in range(200):
        mlflow.log_metric("loss", p * 1000 + step, step=step)
    for batch in batches:
        yield pd.DataFrame({"p": [p] * len(batch)})


def test_map_in_pandas_points_reach_the_clients_run_per_worker_and_as_mean(connect_session, store):
    df = connect_session.range(0, 4, 1, 4)
    with mlflow.start_run() as run:
        rows = df.mapInPandas(_train, "p long").collect()
    assert sorted(r.p for r in rows) == [0, 1, 2, 3]
    rid = run.info.run_id
    for p in range(4):
        assert history(store, rid, f"loss/worker_{p}") == [(s, float(p * 1000 + s)) for s in range(200)]
    assert history(store, rid, "loss") == [(s, 1500.0 + s) for s in range(200)]
    assert spark_tracking.stats()["dropped"] == {}


def test_a_job_from_a_thread_pool_inside_the_run_reaches_the_run(connect_session, store):
    from concurrent.futures import ThreadPoolExecutor

    df = connect_session.range(0, 2, 1, 2)
    with mlflow.start_run() as run, ThreadPoolExecutor(1) as pool:  # the pool's thread carries no tag
        rows = pool.submit(lambda: df.mapInPandas(_train, "p long").collect()).result()
    assert sorted(r.p for r in rows) == [0, 1]
    rid = run.info.run_id
    for p in range(2):
        assert history(store, rid, f"loss/worker_{p}") == [(s, float(p * 1000 + s)) for s in range(200)]


def _fit_group(pdf):
    import mlflow

    g = int(pdf["g"].iloc[0])
    for step in range(50):
        mlflow.log_metric("group_loss", g + step / 100, step=step)
    return pdf.head(1)


def test_apply_in_pandas_and_a_pandas_udf(connect_session, store):
    from pyspark.sql.functions import col, pandas_udf

    @pandas_udf("double")
    def scaled(v):
        import mlflow

        mlflow.log_metric("udf_rows", float(len(v)))
        return v * 2.0

    df = connect_session.range(0, 40, 1, 2).withColumn("g", col("id") % 2)
    connect_session.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")  # 4 tasks
    try:
        with mlflow.start_run() as run:
            groups = df.groupBy("g").applyInPandas(_fit_group, df.schema).collect()
            doubled = df.select(scaled(col("id").cast("double")).alias("d")).collect()
    finally:
        connect_session.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
    assert sorted(r.g for r in groups) == [0, 1]
    assert sorted(r.d for r in doubled) == [2.0 * i for i in range(40)]
    rid = run.info.run_id
    spark_tracking.flush()
    keys = set(store.get_run(rid).data.metrics)
    worker_keys = [k for k in keys if k.startswith("group_loss/worker_")]  # tasks that got a group
    got = sorted((m.step, m.value) for k in worker_keys for m in store.get_metric_history(rid, k))
    assert got == sorted((s, g + s / 100) for g in (0, 1) for s in range(50)), keys
    assert [m.step for m in store.get_metric_history(rid, "group_loss")] != []  # the mean series
    udf_points = [m.value for k in keys if k.startswith("udf_rows/worker_") for m in store.get_metric_history(rid, k)]
    assert sum(udf_points) == 40.0


def test_the_tag_carries_no_secret_and_tasks_see_it(connect_session, store, connect_server):
    def seen(batches):
        import pandas as pd
        from pyspark import TaskContext

        tags = TaskContext.get().getLocalProperty("spark.job.tags") or ""
        for _ in batches:
            yield pd.DataFrame({"tags": [tags]})

    with mlflow.start_run():
        tags = connect_session.range(0, 1, 1, 1).mapInPandas(seen, "tags string").collect()[0].tags
    assert connect_server.secret not in tags
    payload = protocol.decode_tags(tags)
    assert payload["r"] == driver.forwarder().relay.address
    assert set(payload) == {"r", "b", "f"}
    assert f"_Tag_{protocol.TAG_PREFIX}" in tags  # wrapped by the server as a session tag


def test_without_the_secret_tasks_drop_files_that_reach_the_run_with_one_warning(
    connect_session, sqlite_uri, monkeypatch, tmp_path, caplog
):
    # serverless-like: no cluster environment reaches this process (no relay secret)
    drop = tmp_path / "drop"
    monkeypatch.setenv("SPARK_TRACKING_TASK_DROP_DIR", str(drop))
    monkeypatch.setattr(connect, "_warned_limits", set())
    spark_tracking.configure(tracking_uri=sqlite_uri)
    client = mlflow.MlflowClient(sqlite_uri)
    df = connect_session.range(0, 4, 1, 4)
    try:
        with caplog.at_level(logging.WARNING, logger="spark_tracking"):
            with mlflow.start_run() as run:
                df.mapInPandas(_train, "p long").collect()
            # a second run of the session: no second warning; the first run's files, collected
            # while it is active, still reach the run of the job that wrote them
            with mlflow.start_run():
                spark_tracking.flush()
        rid = run.info.run_id
        warnings = [r.getMessage() for r in caplog.records if "not available on this Spark Connect" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "SPARK_TRACKING_RELAY_SECRET is not in this process's environment" in warnings[0]
        assert str(drop) in warnings[0]
        for p in range(4):
            assert history(client, rid, f"loss/worker_{p}") == [(s, float(p * 1000 + s)) for s in range(200)]
        assert history(client, rid, "loss") == [(s, 1500.0 + s) for s in range(200)]
        assert not [n for n in drop.iterdir() if n.name.endswith(".jsonl")]
    finally:
        driver.shutdown(10.0)
