"""Points that reach the driver late keep the run of their job (issue Q item 7): spilled while
the relay was unreachable, shipped after the notebook ended that run and started the next.
Real Spark (local-cluster) and a real store."""

import mlflow
from conftest import history

import spark_tracking
from spark_tracking.forwarding.driver import current as driver
from spark_tracking.forwarding.driver.relay import Relay


def _log(key):
    def task(rows):
        import mlflow

        mlflow.log_metric(key, 1.0, step=7)
        yield key

    return task


def test_points_spilled_in_one_run_and_shipped_in_the_next_land_in_their_own_run(spark, store):
    sc = spark.sparkContext
    with mlflow.start_run() as first:
        fw = driver.forwarder()
        host, port = fw.relay.address.rsplit(":", 1)
        fw.relay.stop()  # the relay is unreachable while this job runs: its task spills
        try:
            assert sc.parallelize(range(1), 1).mapPartitions(_log("late")).collect() == ["late"]
        finally:  # back at the same address
            cfg = fw.cfg
            fw.relay = Relay(
                fw.secret, fw, host, int(port), cfg.relay_max_connections, cfg.relay_max_frame_bytes
            ).start()
    with mlflow.start_run() as second:
        # this job's tasks ship their node's spill backlog at their end, after their own points
        assert sc.parallelize(range(2), 2).mapPartitions(_log("now")).collect() == ["now", "now"]
    assert spark_tracking.flush(60)
    assert history(store, first.info.run_id, "late") == [(7, 1.0)]
    assert "late" not in store.get_run(second.info.run_id).data.metrics
