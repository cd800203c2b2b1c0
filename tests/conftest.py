"""Shared fixtures. Spark and the MLflow store are real; only remote Azure/Databricks
endpoints are faked (tests/fakes). Every server started here is stopped here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

_CLEARED_PREFIXES = ("SPARK_TRACKING_", "MLFLOW_", "AZURE_", "DATABRICKS_", "DB_", "_MLFLOW_", "JPY_")
#: No network beyond 127.0.0.1: MLflow's usage telemetry stays off in every process we start.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "SPARK_LOCAL_IP": "127.0.0.1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_mlflow_globals() -> None:
    if "mlflow" not in sys.modules:
        return
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    while mlflow.active_run() is not None:
        mlflow.end_run()
    utils._tracking_uri = None
    fluent._active_experiment_id = None


#: seconds a test may take (a ``@pytest.mark.bound(seconds)`` marker sets another), on a busy machine
TEST_BOUND = 600.0
#: seconds a Spark action gets to raise after its jobs were cancelled, before the main thread is interrupted
_CANCEL_GRACE = 30.0


class BoundExceeded(Exception):
    """Raised in the main thread of a test that ran past its bound."""


def _cancel_spark_jobs() -> bool:
    from spark_tracking._compat import pyspark as compat

    sc = compat.active_spark_context()
    if sc is None:
        return False
    sc.cancelAllJobs()
    return True


@pytest.fixture(autouse=True)
def watchdog(request):
    """Every test bounded for real. pytest-timeout's SIGALRM cannot end a test whose main thread
    waits in py4j's socket read under a Spark action (``RDD.collect``): the signal may land in
    another thread, and Python runs its handler only when the main thread runs bytecode (seen: a
    re-run barrier stage waiting for a slot, 30 min past the 900 s timeout). At the bound this
    watchdog cancels the process's Spark jobs (the action then raises in the main thread); if the
    test still runs ``_CANCEL_GRACE`` s later, it interrupts the main thread itself
    (``pthread_kill``: the blocked read returns EINTR and the handler raises). Either way the test
    fails naming its bound."""
    marker = request.node.get_closest_marker("bound")
    bound = float(marker.args[0]) if marker else TEST_BOUND
    fired = threading.Event()
    done = threading.Event()
    main = threading.main_thread().ident

    def on_signal(signum, frame):
        raise BoundExceeded(f"test ran past its bound of {bound:.0f} s and was interrupted")

    def watch():
        if done.wait(bound):
            return
        fired.set()
        try:
            _cancel_spark_jobs()
        except Exception:  # noqa: BLE001 - a broken Spark context: go on to the interrupt
            pass
        if not done.wait(_CANCEL_GRACE) and main is not None:
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_signal)
    thread = threading.Thread(target=watch, name="test-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGUSR1, previous)
    if fired.is_set():
        pytest.fail(f"test ran past its bound of {bound:.0f} s: its Spark jobs were cancelled", pytrace=False)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Each test starts from a machine with nothing configured; HOME is a fresh folder."""
    for key in list(os.environ):
        if key.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(key)
    for key, value in QUIET_ENV.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    _reset_mlflow_globals()
    from spark_tracking import state

    monkeypatch.setattr(state, "_current", None)
    monkeypatch.setattr(state, "_choice", None)
    yield
    _reset_mlflow_globals()
    from spark_tracking.forwarding.task import binding

    binding.forget()  # a test that bound this process as a task must not leave it bound


def history(client, run_id: str, key: str, *, worker: int | None = None, flush: bool = True) -> list[tuple[int, float]]:
    """A metric's (step, value) in the store, in step order (points of one step in the order
    they were logged): the one reader of a metric's history in the tests. ``worker``: that
    worker's series of ``key`` (``<key>/worker_<worker>``) instead of the mean. ``flush``
    (the default): ``spark_tracking.flush()`` first, so what reached this driver is in the store
    (tasks may end before the store answers); ``flush=False`` reads the store as it is (a Sink
    or Forwarder of the test's own, or a test that checks what arrived without a flush)."""
    if worker is not None:
        key = f"{key}/worker_{worker}"
    if flush:
        import spark_tracking

        spark_tracking.flush()
    return [
        (m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    ]


@pytest.fixture
def sqlite_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(sqlite_uri, request, monkeypatch):
    """spark_tracking configured on a fresh SQLite store under ``tmp_path``; the MlflowClient to
    check it with. The one store fixture of the tests (``mlflow_server`` is the store behind
    HTTP). In a test on a Spark Connect server (one that uses ``connect_server``, tests/connect)
    this process is the Connect client on the driver node: it has the cluster's environment, the
    relay secret included, before it configures, and its forwarding is shut down after the test."""
    import mlflow

    import spark_tracking

    connect_server = request.getfixturevalue("connect_server") if "connect_server" in request.fixturenames else None
    if connect_server is not None:
        monkeypatch.setenv("SPARK_TRACKING_RELAY_SECRET", connect_server.secret)
    spark_tracking.configure(tracking_uri=sqlite_uri)
    yield mlflow.MlflowClient(sqlite_uri)
    if connect_server is not None:
        from spark_tracking.forwarding.driver import current

        current.shutdown(10.0)


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Poll until a URL answers 200 (readiness of a server we started), or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # readiness poll of a subprocess, not test synchronisation
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class MlflowServer:
    """A real `mlflow server` on SQLite, on 127.0.0.1, one worker."""

    def __init__(self, root, workers: int = 1):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db_uri = f"sqlite:///{root / 'server.db'}"
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED_PREFIXES)}
        env.update(QUIET_ENV)
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runner processes
        self.log = open(self.root / "mlflow-server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                self.db_uri,
                "--default-artifact-root",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_http(self.uri + "/health", self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


def spark_builder(master: str = "local-cluster[2,1,1024]", app_name: str = "spark-tracking-tests"):
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
    )
    for key, value in QUIET_ENV.items():
        builder = builder.config(f"spark.executorEnv.{key}", value)
    return builder


#: a driver program of its own ends itself with every thread's stack after 540 s: before
#: run_driver's 570 s and the watchdog's 600 s, so a hang shows where it is
_DUMP_STACKS_BEFORE_THE_BOUND = "import faulthandler; faulthandler.dump_traceback_later(540, exit=True)\n"


def run_driver(script: str, *args: str, cwd, env: dict | None = None) -> str:
    """Run ``script`` as a driver program of its own (a new Spark application, fresh Python
    workers) with this interpreter in ``cwd``, ``env`` added to this environment; its stdout.
    Fails with the end of its stderr; one that hangs prints every thread's stack there and
    exits (before the test's own bound), so the failure says where it hung."""
    out = subprocess.run(
        [sys.executable, "-u", "-X", "faulthandler", "-c", _DUMP_STACKS_BEFORE_THE_BOUND + script, *args],
        capture_output=True,
        text=True,
        timeout=570,
        env=dict(os.environ, **(env or {})),
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """Real Spark with two separate executor JVMs and Python workers, each executor with a HOME of
    its own (as on a cluster, where executors are other machines).

    Started with none of the variables ``clean_env`` clears: the session fixture starts before the
    first test's ``clean_env`` runs, and its executors keep the environment they start with for the
    whole run. A ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` an earlier test's
    ``configure()`` or ``mlflow.set_experiment`` left in this process would otherwise reach every
    later task (seen: tasks failing with "MLFLOW_EXPERIMENT_ID `1` does not match the experiment id
    `0` for experiment name `pytest`", depending on which test started Spark)."""
    home = tmp_path_factory.mktemp("executor-home")
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith(_CLEARED_PREFIXES)}
    try:
        session = spark_builder().config("spark.executorEnv.HOME", str(home)).getOrCreate()
    finally:
        os.environ.update(saved)
    yield session
    session.stop()


def pytest_collection_finish(session):
    """Spark executors cannot import test modules: ship their functions by value."""
    try:
        from pyspark import cloudpickle
    except ImportError:
        return
    for module in {item.module for item in session.items if getattr(item, "module", None)}:
        cloudpickle.register_pickle_by_value(module)
