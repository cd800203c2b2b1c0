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
                request = urllib.request.Request(proxy.target + self.path, data=body, method=self.command,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
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
    """Wraps the task side's transport (``spark_tracking.forwarding.shipper.RelayTransport``):
    while ``down`` is set the relay is unreachable (a dropped connection); ``timeouts`` requests
    time out after reaching the relay (a slow relay: the request WAS dispatched, the reply is
    lost). Records every request it passes on (``sent``: the messages, ids included)."""

    def __init__(self, inner=None):
        from spark_tracking.forwarding.shipper import RelayTransport

        self.inner = inner or RelayTransport()
        self.down = threading.Event()
        self.timeouts = 0
        self.sent: list[dict] = []

    def request(self, relay, secret, message, timeout, on_wait=None):
        from spark_tracking.forwarding.shipper import Timeout, Unreachable

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


def tiny_spill(store, max_bytes: int = 16):
    """A full disk, without a tmpfs: cap the spill store at a few bytes."""
    store.max_bytes = max_bytes
    return store


def kill_own_python_worker() -> None:
    """In a Spark task: kill -9 this Python worker (as the OOM killer would)."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
