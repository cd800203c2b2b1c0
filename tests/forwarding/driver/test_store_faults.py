"""What the driver does with what a store cannot take or cannot answer, on a real Forwarder
(relay and sink) or a real Sink on SQLite / an `mlflow server`: values MLflow cannot store,
internal errors that are about the content and not an outage."""

import email.utils
import os
import time

import mlflow
import pytest
from conftest import history
from faults import FaultProxy

from spark_tracking import cli
from spark_tracking.config import Config
from spark_tracking.forwarding.driver import current as driver
from spark_tracking.forwarding.driver.sink import Sink, Spool, Submission
from spark_tracking.forwarding.task.transport import Connection as _Connection

TS = 1_700_000_000_000
SECRET = "store-faults-secret"


def _sink(uri, tmp_path, **kw):
    return Sink(
        mlflow.MlflowClient(uri),
        uri,
        Spool(str(tmp_path / "spool"), 1 << 30),
        lambda stage: 1,
        sleep=lambda s: None,
        **kw,
    )


@pytest.fixture
def forwarder(monkeypatch, tmp_path):
    """A real driver Forwarder (relay + sinks) with no Spark, and a task's connection to it."""
    monkeypatch.setenv("SPARK_TRACKING_RELAY_SECRET", SECRET)
    fw = driver.Forwarder(Config.resolve({"home": str(tmp_path / "driver-home")}), None)
    conn = _Connection(fw.relay.address, SECRET, timeout=60)
    yield fw, conn
    conn.close()
    fw.stop(30)


def _points(n, key="m", offset=0):
    return [[key, float(i + offset), TS + i + offset, i + offset] for i in range(n)]


# -- item 2: a step or timestamp beyond 64 bits -------------------------------------------------


def test_a_step_beyond_64_bits_is_refused_at_decode_and_every_other_point_lands(
    forwarder, sqlite_uri, tmp_path, caplog
):
    fw, conn = forwarder
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    binding = f"thread:{fw.sink_index(sqlite_uri)}"
    bad = [["m", 1.0, TS, 2**63], ["m", 2.0, 2**64, 5]]
    for k, rows in enumerate((bad + _points(200), _points(200, offset=200))):  # the bad frame, then a later one
        reply = conn.request(
            {"id": f"f{k}", "op": "points", "b": binding, "w": [0, 0, 0, 1, None], "m": rows, "r": rid}
        )
        assert reply["run"] == rid, reply
    assert fw.flush(60) is True
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(400)]
    stats = fw.stats()
    assert stats["dropped"] == {"out_of_range": 2} and stats["spooled"] == 0
    assert (
        f"dropped 2 point(s) of run {rid} whose step or timestamp MLflow cannot store (a signed 64-bit "
        f"integer: -2**63 to 2**63-1), e.g. 'm' at step {2**63}"
    ) in caplog.text
    assert "store unreachable" not in caplog.text
    assert not os.path.exists(tmp_path / "driver-home" / "spool") or not os.listdir(tmp_path / "driver-home" / "spool")


def test_an_internal_error_on_one_entry_is_a_refusal_not_an_outage(sqlite_uri, tmp_path, caplog):
    """Past the decode check (an older driver's relay, a plugin store that fails on a value):
    the store keeps failing on one entry while it takes others."""
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    sink = _sink(sqlite_uri, tmp_path)
    rows = [("m", 1.0, TS, 2**63)] + [tuple(p) for p in _points(400)]
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], rows))
    sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100, offset=400)]))
    assert sink.flush(120) is False  # one entry was refused
    sink.stop()
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(500)]
    stats = sink.stats()
    assert stats["dropped"] == {"rejected_by_store": 1} and stats.get("spooled", 0) == 0
    assert f"the store refused metric 'm' of run {rid}" in caplog.text
    assert "store unreachable" not in caplog.text
    assert os.listdir(tmp_path / "spool") == [] if os.path.exists(tmp_path / "spool") else True


def test_replay_delivers_the_rest_of_a_file_holding_a_step_beyond_64_bits(sqlite_uri, tmp_path, capsys):
    client = mlflow.MlflowClient(sqlite_uri)
    rid = client.create_run("0").info.run_id
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    first = spool.write(
        {
            "run_id": rid,
            "metrics": [["m", 1.0, TS, 2**63], *_points(200)],
            "params": [],
            "tags": [],
            "tracking_uri": sqlite_uri,
        }
    )
    spool.write(
        {"run_id": rid, "metrics": _points(200, offset=200), "params": [], "tags": [], "tracking_uri": sqlite_uri}
    )
    code = cli.main(["replay", "--spool-dir", spool.directory, "--tracking-uri", sqlite_uri])
    out = capsys.readouterr().out
    assert code == 1, out
    name = os.path.basename(first)
    assert (
        f"refused 1 point(s) MLflow cannot store (a step or timestamp outside signed 64 bits) in {name}; the rest "
        f"was delivered; moved them to {os.path.join(spool.directory, 'refused', name)}"
    ) in out
    assert "0 left" in out
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(400)]
    assert Spool.read(os.path.join(spool.directory, "refused", name))["metrics"] == [["m", 1.0, TS, 2**63]]


# -- item 12: a store that hangs or asks to wait ------------------------------------------------


def test_while_the_store_hangs_the_queue_is_bounded_and_the_rest_goes_to_the_spool(mlflow_server, tmp_path, caplog):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    with FaultProxy(mlflow_server.uri) as proxy:
        sink = _sink(proxy.uri, tmp_path, max_queued=1000)
        proxy.stall.set()
        sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100)]))
        assert proxy.stalled.wait(60)  # the sink thread waits on the store
        for k in range(1, 31):
            sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100, offset=100 * k)]))
        stats = sink.stats()
        assert stats["queued"] == 10 and stats["spooled"] == 2000
        assert len(os.listdir(tmp_path / "spool")) == 20
        proxy.stall.clear()
        proxy.release.set()
        assert sink.flush(120) is True
        sink.stop()
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(3100)]
    assert caplog.text.count(f"the store at {proxy.uri} is behind (1000 values wait for it)") == 1
    assert sink.stats()["dropped"] == {}


def test_points_wait_at_most_spool_after_seconds_in_memory(mlflow_server, tmp_path, caplog):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    now = [1000.0]
    with FaultProxy(mlflow_server.uri) as proxy:
        sink = _sink(proxy.uri, tmp_path, clock=lambda: now[0], spool_after=30.0)
        proxy.stall.set()
        sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100)]))
        assert proxy.stalled.wait(60)
        sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100, offset=100)]))
        now[0] += 31  # the store has held the sink for 31 s
        late = sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100, offset=200)]))
        assert late.result(10) is True  # in custody on disk at once
        assert sink.stats()["spooled"] == 100 and sink.stats()["queued"] == 1
        proxy.stall.clear()
        proxy.release.set()
        assert sink.flush(120) is True
        sink.stop()
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(300)]
    assert "is slow (100 values wait for it); what tasks send now goes to the spool" in caplog.text


@pytest.mark.parametrize("http_date", [False, True])
def test_a_long_retry_after_is_honoured_in_full_without_the_sink_sleeping_through_it(
    mlflow_server, tmp_path, caplog, http_date
):
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    now, sleeps = [1000.0], []
    with FaultProxy(mlflow_server.uri) as proxy:
        sink = _sink(proxy.uri, tmp_path, clock=lambda: now[0])
        sink.delivery.sleep = sleeps.append
        proxy.status, proxy.times = 429, 1
        proxy.retry_after = email.utils.formatdate(time.time() + 90, usegmt=True) if http_date else "90"
        sink.submit(Submission("points", rid, [0, 0, 0, 0, None], [tuple(p) for p in _points(100)]))
        assert sink.flush(60) is False  # in the spool, waiting for the time the store asked for
        wait = sink.delivery.wait_until - 1000.0
        assert (85.0 < wait <= 90.0) if http_date else wait == 90.0
        assert sleeps == [] and sink.stats()["spooled"] == 100
        assert sink.flush(60) is False and proxy.seen["log_batch"] == 1  # nothing sent before the time
        now[0] += 91
        assert sink.flush(60) is True
        sink.stop()
    assert history(client, rid, "m", flush=False) == [(i, float(i)) for i in range(100)]
    assert "the store asked to wait" in caplog.text and "(Retry-After); spooling to" in caplog.text
