"""Fault tools the regression tests share: a fault-injecting HTTP proxy in front of the real
MLflow server, and faults between Spark tasks and the driver relay (127.0.0.1 only)."""

from __future__ import annotations

import http.server
import os
import socketserver
import threading
import urllib.request


class FaultProxy:
    """Forwards to ``target``; for log-batch requests it can answer ``status`` (with a
    Retry-After) ``times`` times, drop the connection while ``down`` is set, or hold requests
    until ``release`` is set while ``stall`` is set. Counts what it saw."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.status: int | None = None
        self.retry_after: str | None = None
        self.times = 0
        self.down = threading.Event()
        self.stall = threading.Event()
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.seen = {"log_batch": 0, "faults": 0}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                batch = self.path.endswith("/runs/log-batch")
                if batch:
                    proxy.seen["log_batch"] += 1
                    if proxy.down.is_set():
                        proxy.seen["faults"] += 1
                        self.close_connection = True
                        self.connection.close()
                        return
                    if proxy.stall.is_set():
                        proxy.stalled.set()
                        proxy.release.wait(60)
                    if proxy.status and proxy.times > 0:
                        proxy.times -= 1
                        proxy.seen["faults"] += 1
                        payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "slow down"}'
                        self.send_response(proxy.status)
                        if proxy.retry_after is not None:
                            self.send_header("Retry-After", proxy.retry_after)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                request = urllib.request.Request(
                    proxy.target + self.path,
                    data=body,
                    method=self.command,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as resp:
                        status, headers, payload = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as err:
                    status, headers, payload = err.code, err.headers, err.read()
                self.send_response(status)
                self.send_header("Content-Type", headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# -- task side: faults between a Spark task and the driver relay --------------------------------


class RecordingHandler:
    """A relay handler that keeps the points it receives (``received``: (worker, key, value,
    timestamp, step)); it refuses frames holding a key in ``poison``, as a driver whose store
    refuses them would."""

    def __init__(self, poison=()):
        self.received, self.requests = [], []
        self.poison = set(poison)
        self.lock = threading.Lock()

    def points(self, binding, worker, message):
        with self.lock:
            self.requests.append(message)
            if any(m[0] in self.poison for m in message["m"]):
                raise ValueError("float() argument out of range")
            self.received.extend((tuple(worker), *m) for m in message["m"])
        return "run-1", None

    def resolve(self, binding, worker):
        return "run-1"

    def done(self, binding, worker):
        return None


class FaultyTransport:
    """Wraps the task side's transport (``spark_tracking.forwarding.task.transport.RelayTransport``):
    while ``down`` is set the relay is unreachable (a dropped connection); ``timeouts`` requests
    time out after reaching the relay (a slow relay: the request WAS dispatched, the reply is
    lost). Records every request it passes on (``sent``: the messages, ids included)."""

    def __init__(self, inner=None):
        from spark_tracking.forwarding.task.transport import RelayTransport

        self.inner = inner or RelayTransport()
        self.down = threading.Event()
        self.timeouts = 0
        self.sent: list[dict] = []

    def request(self, relay, secret, message, timeout, on_wait=None):
        from spark_tracking.forwarding.task.transport import Timeout, Unreachable

        if self.down.is_set():
            raise Unreachable("fault: connection dropped")
        self.sent.append(dict(message))
        reply = self.inner.request(relay, secret, message, timeout, on_wait)
        if self.timeouts > 0:
            self.timeouts -= 1
            raise Timeout("fault: reply lost")
        return reply

    def close(self):
        self.inner.close()


class StalledRelay:
    """A relay that accepts connections and authenticates, then never answers a request (a
    driver whose store stalls, seen from a task). 127.0.0.1 only; ``close()`` stops it."""

    def __init__(self, secret: str):
        import socket

        from spark_tracking.forwarding import protocol

        self.secret = secret
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = []
        self.requests = 0
        self._protocol = protocol
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        protocol = self._protocol
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            try:
                conn.sendall(protocol.encode({"nonce": "ab" * 32}))
                protocol.recv_frame(conn, 1024)
                conn.sendall(protocol.encode({"ok": True}))
                protocol.recv_frame(conn)
                self.requests += 1
            except OSError:
                pass

    def close(self):
        self.server.close()
        for conn in self.connections:
            conn.close()


def spilled_frames(store) -> list:
    """The frames on disk in a spill folder: in complete files and in files a shipper claimed to
    send again. A shipper's regular round claims spilled files every 5 s (renamed
    ``<name>.claimed.<pid>``, given back when the relay does not take them): a test that reads
    only complete files races it (seen in CI: the points were on disk, under the claimed name).
    A file renamed between the listing and the read is read again."""
    import json

    for _ in range(100):
        try:
            frames = []
            for name in sorted(os.listdir(store.folder)):
                if not name.startswith("."):  # a file being written is ".<name>.tmp"
                    with open(os.path.join(store.folder, name)) as fh:
                        frames.extend(json.loads(line) for line in fh)
            return frames
        except FileNotFoundError:
            continue
    raise AssertionError(f"the spill folder {store.folder} kept changing under 100 reads")


def tiny_spill(store, max_bytes: int = 16):
    """A full disk, without a tmpfs: cap the spill store at a few bytes."""
    store.max_bytes = max_bytes
    return store


def kill_own_python_worker() -> None:
    """In a Spark task: kill -9 this Python worker (as the OOM killer would)."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


# -- driver side: a frozen store, a slow or stalled relay handler, a second process ---------

import contextlib  # noqa: E402
import signal  # noqa: E402
from concurrent.futures import Future  # noqa: E402


@contextlib.contextmanager
def frozen(proc):
    """Freeze a server subprocess (SIGSTOP to its process group) for the block: it accepts
    connections (the kernel does) but answers nothing, like a hung store. Thawed on exit."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


class HeldHandler:
    """Wraps a relay handler: the first ``points`` dispatch blocks until ``release`` is set
    (a dispatch slower than the client's timeout). Counts dispatches per op."""

    def __init__(self, inner):
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = {"points": 0, "resolve": 0, "done": 0}

    def points(self, binding, worker, message):
        self.calls["points"] += 1
        if self.calls["points"] == 1:
            self.entered.set()
            self.release.wait(60)
        return self.inner.points(binding, worker, message)

    def resolve(self, binding, worker):
        self.calls["resolve"] += 1
        return self.inner.resolve(binding, worker)

    def done(self, binding, worker):
        self.calls["done"] += 1
        return self.inner.done(binding, worker)


class BusyHandler:
    """A relay handler whose ``resolve`` blocks until ``release`` is set: connections in a
    request stay busy. ``entered`` counts requests that reached it."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def points(self, binding, worker, message):
        return "run-1", None

    def resolve(self, binding, worker):
        self.entered.release()
        self.release.wait(60)
        return "run-1"

    def done(self, binding, worker):
        return None


class StalledStoreHandler:
    """A relay handler in front of a store that never answers: custody is taken, the future of
    delivery never settles (the relay's ack waits on it within its budget)."""

    def __init__(self):
        self.pending: list[Future] = []

    def points(self, binding, worker, message):
        self.pending.append(Future())
        return "run-1", self.pending[-1]

    def resolve(self, binding, worker):
        return "run-1"

    def done(self, binding, worker):
        self.pending.append(Future())
        return self.pending[-1]


class SinkHandler:
    """The relay handler of a driver with one run: hands points to a real Sink."""

    def __init__(self, sink, run_id):
        self.sink, self.run_id = sink, run_id

    def points(self, binding, worker, message):
        from spark_tracking.forwarding.driver.sink import Submission

        rows = [tuple(m) for m in message.get("m", [])]
        return self.run_id, self.sink.submit(Submission("points", self.run_id, worker, rows))

    def resolve(self, binding, worker):
        return self.run_id

    def done(self, binding, worker):
        return None


def before_store_call(sink, action, times: int = 1):
    """Run ``action()`` inside the next ``times`` log_batch calls of ``sink``, before the store
    sees them (another process acting on the same spool mid-delivery, say)."""
    writer = sink.writer
    left = [times]

    class Interleaved:
        def log_batch(self, *args, **kwargs):
            if left[0] > 0:
                left[0] -= 1
                action()
            return writer.log_batch(*args, **kwargs)

    sink.writer = Interleaved()


def wait_until(condition, timeout: float = 120.0) -> bool:
    """Wait for a condition of another process/thread, bounded (not a fixed sleep)."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return True
        tick.wait(0.05)
    return condition()


def bind_as_task(monkeypatch, tmp_path, address: str, secret: str = "test-secret", **settings) -> None:
    """Make this process a bound task of the relay at ``address`` (as a Python worker whose job
    the driver bound): the binding's environment, ``settings`` as ``SPARK_TRACKING_<NAME>``, a
    spill folder under ``tmp_path``, the shipper not backing off. ``clean_env`` unbinds it."""
    from spark_tracking.forwarding import protocol
    from spark_tracking.forwarding.task import binding, executor
    from spark_tracking.forwarding.task.spill import SpillStore

    monkeypatch.setenv(protocol.ENV_RELAY, address)
    monkeypatch.setenv(protocol.ENV_SECRET, secret)
    monkeypatch.setenv(protocol.ENV_BINDING, "1:0")
    monkeypatch.setenv(protocol.ENV_WORKER, "5:2:0:77:1")
    for name, value in settings.items():
        monkeypatch.setenv(f"SPARK_TRACKING_{name.upper()}", str(value))
    monkeypatch.setattr(executor.shipper, "spill", SpillStore(str(tmp_path / "spill")))
    monkeypatch.setattr(executor.shipper, "_down_until", 0.0)
    binding.forget()
