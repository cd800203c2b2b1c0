"""A fault-injecting HTTP proxy in front of the real MLflow server (127.0.0.1 only)."""

from __future__ import annotations

import http.server
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
