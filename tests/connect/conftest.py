"""A real Spark Connect server (the one the pyspark wheel bundles) on 127.0.0.1, with a
``local-cluster[2,1,1024]`` master so executors are separate JVMs and Python workers, and a
Connect client session in the test process. The server's environment plays the cluster's: it
holds ``SPARK_TRACKING_RELAY_SECRET``, as a cluster environment variable would on Databricks.
The server and every process it started are stopped at the end, always."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _CLEARED_PREFIXES, QUIET_ENV, free_port

CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"


class ConnectServer:
    def __init__(self, root: Path, env: dict):
        import pyspark

        self.root = root
        self.port = free_port()
        self.url = f"sc://127.0.0.1:{self.port}"
        self.spark_submit = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> "ConnectServer":
        python = sys.executable
        confs = {
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(self.port),
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.executorEnv.PYSPARK_PYTHON": python,
            # frequent progress reports: the client learns each stage's task count early
            "spark.connect.progress.reportInterval": "100ms",
        }
        args = [
            self.spark_submit,
            "--master",
            "local-cluster[2,1,1024]",
            "--class",
            CONNECT_SERVER,
            "--name",
            "spark-tracking-connect-tests",
        ]
        for key, value in confs.items():
            args += ["--conf", f"{key}={value}"]
        args.append("spark-internal")
        self.log = open(self.root / "connect-server.log", "ab")
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, cwd=self.root
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # readiness of the server's port, not test sync
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Spark Connect server exited with {self.proc.returncode}; see {self.root / 'connect-server.log'}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Spark Connect server did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:  # executors and Python workers it started share its process group
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log.close()


def _server_env(secret: str, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED_PREFIXES)}
    env.update(QUIET_ENV)
    env.update(
        {
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_TRACKING_RELAY_SECRET": secret,
            "HOME": str(home),
        }
    )
    return env


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """A Spark Connect server whose driver and executors have the relay secret (the cluster's
    environment); yields it with ``.secret``."""
    root = tmp_path_factory.mktemp("connect-server")
    home = root / "home"
    home.mkdir()
    secret = secrets.token_hex(32)
    server = ConnectServer(root, _server_env(secret, home))
    server.secret = secret
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def connect_session(connect_server):
    """A Spark Connect client session in the test process (a classic SparkContext of other
    tests may be up too: this thread's Connect session is the one bound)."""
    # the Connect builder itself: pyspark.sql's refuses a remote session beside a classic one
    from pyspark.sql.connect.session import SparkSession

    session = SparkSession.builder.remote(connect_server.url).getOrCreate()
    # what pyspark.sql's builder sets in a Connect client process: col(), pandas_udf() and
    # friends build Connect objects (restored after, for classic tests in this process)
    had_mode = os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    try:
        yield session
    finally:
        session.stop()
        if had_mode is None:
            os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
