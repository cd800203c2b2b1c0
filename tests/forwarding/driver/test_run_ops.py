"""Run operations tasks ask the driver for, on a real Forwarder (relay and sink) over SQLite or a
real `mlflow server`: a failure on the driver reaches the task as an error with its text, and
a stalled store cannot starve the points and task ends of other tasks."""

import base64
import threading
import uuid

import mlflow
import pytest
from faults import frozen, wait_until
from mlflow.exceptions import MlflowException

from spark_tracking.config import Config
from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.driver import current as driver
from spark_tracking.forwarding.task import binding, run_requests
from spark_tracking.forwarding.task.transport import Connection as _Connection
from spark_tracking.forwarding.task.transport import Refused

SECRET = "run-ops-secret"
TS = 1_700_000_000_000


@pytest.fixture
def forwarder(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_TRACKING_RELAY_SECRET", SECRET)
    fw = driver.Forwarder(Config.resolve({"home": str(tmp_path / "driver-home")}), None)
    yield fw
    fw.stop(30)


def _bind_as_task(monkeypatch, relay: str, binding_name: str) -> None:
    """This process as a task bound to the driver (the documented environment variables)."""
    monkeypatch.setenv(protocol.ENV_RELAY, relay)
    monkeypatch.setenv(protocol.ENV_SECRET, SECRET)
    monkeypatch.setenv(protocol.ENV_BINDING, binding_name)
    monkeypatch.setenv(protocol.ENV_WORKER, "5:2:0:77:1")
    binding.forget()


class Counted:
    """Counts the run operations the driver dispatches, by op."""

    def __init__(self, fw):
        self.inner, self.calls = fw.run_ops.handle, {}
        fw.run_ops.handle = self

    def __call__(self, op, *args):
        self.calls[op] = self.calls.get(op, 0) + 1
        return self.inner(op, *args)


def test_a_failure_of_the_driver_artifact_store_reaches_the_task_with_its_text_once(
    forwarder, monkeypatch, sqlite_uri, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    client = mlflow.MlflowClient(sqlite_uri)
    experiment = client.create_experiment("x", artifact_location=str(blocker / "artifacts"))
    rid = client.create_run(experiment).info.run_id
    _bind_as_task(monkeypatch, forwarder.relay.address, f"thread:{forwarder.sink_index(sqlite_uri)}")
    counted = Counted(forwarder)
    upload = uuid.uuid4().hex
    data = base64.b64encode(b"hello").decode("ascii")
    assert run_requests.request("artifact_chunk", {"u": upload, "o": 0, "d": data}) == 5
    with pytest.raises(MlflowException) as raised:
        run_requests.request("artifact_commit", {"u": upload, "p": "a.txt", "k": "runs", "i": rid, "z": 5})
    text = str(raised.value)
    assert "the driver failed to artifact_commit: NotADirectoryError" in text or (
        "the driver failed to artifact_commit: FileExistsError" in text
    ), text
    assert "bytes arrived" not in text
    assert raised.value.error_code == "INTERNAL_ERROR"
    assert counted.calls["artifact_commit"] == 1


def test_an_error_reply_of_the_relay_is_raised_in_the_task_not_resent(forwarder, monkeypatch, sqlite_uri):
    """An error the relay answers (not a run op's value) is a refusal: re-sending cannot help."""
    _bind_as_task(monkeypatch, forwarder.relay.address, f"thread:{forwarder.sink_index(sqlite_uri)}")
    calls = []

    def refuse(binding_, worker, message):
        calls.append(message["id"])
        raise OSError("the driver's disk is full")

    forwarder.relay.register("get_run", refuse)
    with pytest.raises(MlflowException, match="the driver refused 'get_run': OSError: the driver's disk is full"):
        run_requests.request("get_run", {"r": "0" * 32})
    assert len(calls) == 1


def test_run_ops_on_a_stalled_store_leave_points_and_task_ends_their_own_threads(forwarder, mlflow_server):
    fw = forwarder
    fw.relay.run_op_timeout = 5.0
    client = mlflow.MlflowClient(mlflow_server.uri)
    rid = client.create_run("0").info.run_id
    name = f"thread:{fw.sink_index(mlflow_server.uri)}"
    errors: list = []

    def read_run(k):
        conn = _Connection(fw.relay.address, SECRET, timeout=120)
        try:
            conn.request({"id": f"read:{k}", "op": "get_run", "b": name, "w": [1, k, 0, 100 + k, None], "r": rid})
        except Refused as exc:
            errors.append(str(exc))
        finally:
            conn.close()

    task = _Connection(fw.relay.address, SECRET, timeout=60)
    worker = [0, 0, 0, 1, None]
    with frozen(mlflow_server.proc):
        readers = [threading.Thread(target=read_run, args=(k,), daemon=True) for k in range(12)]
        for thread in readers:
            thread.start()
        assert wait_until(lambda: fw.relay.counters["requests"] >= 12, 60)
        rows = [["m", float(i), TS + i, i] for i in range(10)]
        reply = task.request({"id": "p", "op": "points", "b": name, "w": worker, "m": rows, "r": rid})
        assert reply["run"] == rid
        assert "error" not in task.request({"id": "d", "op": "done", "b": name, "w": worker})
        for thread in readers:
            thread.join(120)
    task.close()
    assert (
        errors
        == [
            "the driver's tracking store did not answer 'get_run' within 5 s (run_op_timeout); it may be down or overloaded"
        ]
        * 12
    )
    assert fw.flush(120)
    assert sorted((m.step, m.value) for m in client.get_metric_history(rid, "m")) == [(i, float(i)) for i in range(10)]
