"""A fake Databricks workspace REST API on 127.0.0.1, for the real databricks-sdk to talk to.

It holds state (clusters, UC Volume files, workspace files, secret scopes) and records every
request, so tests assert both the final state and which requests were made. Only the endpoints
the installer uses exist; anything else answers 404 ``ENDPOINT_NOT_FOUND`` so a new call shows
up as a clear failure. Errors use Databricks' JSON shape so the SDK raises its own exceptions.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MUTATING = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Request:
    """One request as the server saw it (bodies of secrets are kept: tests may look for leaks)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any

    @property
    def mutating(self) -> bool:
        return self.method in MUTATING


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class State:
    clusters: dict[str, dict] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # /Volumes/... -> bytes
    directories: set[str] = field(default_factory=set)
    workspace: dict[str, bytes] = field(default_factory=dict)  # /Shared/... -> bytes
    workspace_dirs: set[str] = field(default_factory=lambda: {"/", "/Shared", "/Users"})
    scopes: dict[str, dict[str, bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)


class FakeDatabricks:
    """Start with ``with FakeDatabricks() as fake:``; ``fake.host`` and ``fake.token`` for the SDK."""

    token = "dapi-fake-token"
    workspace_id = "1234567890123456"
    user_name = "admin@contoso.com"

    def __init__(self):
        self.state = State()
        #: cluster id -> states the cluster passes through, one per clusters/get (PENDING -> RUNNING)
        self.transitions: dict[str, list[str]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeDatabricks":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-databricks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> "FakeDatabricks":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test helpers -------------------------------------------------------------------------
    def add_cluster(self, cluster_id: str, state: str = "TERMINATED", **spec) -> dict:
        cluster = {
            "cluster_id": cluster_id,
            "cluster_name": spec.pop("cluster_name", "team"),
            "spark_version": "15.4.x-cpu-ml-scala2.12",
            "node_type_id": "Standard_DS3_v2",
            "num_workers": 2,
            "state": state,
            **spec,
        }
        self.state.clusters[cluster_id] = cluster
        return copy.deepcopy(cluster)

    def cluster(self, cluster_id: str) -> dict:
        return copy.deepcopy(self.state.clusters[cluster_id])

    def mutations(self) -> list[Request]:
        return [r for r in self.requests if r.mutating]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- endpoints ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Request(method, path, query, body))
            route = (method, path)
            if path.startswith("/api/2.0/fs/files/"):
                return self._files(method, unquote(path[len("/api/2.0/fs/files") :]), query, body)
            if path.startswith("/api/2.0/fs/directories/"):
                return self._directories(method, unquote(path[len("/api/2.0/fs/directories") :]))
            handler = self._routes().get(route)
            if handler is None:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", f"no fake for {method} {path}")
            return 200, handler(query, body)

    def _routes(self):
        return {
            ("GET", "/api/2.1/clusters/get"): self._cluster_get,
            ("POST", "/api/2.1/clusters/update"): self._cluster_update,
            ("POST", "/api/2.1/clusters/start"): self._cluster_start,
            ("POST", "/api/2.1/clusters/restart"): self._cluster_restart,
            ("GET", "/api/2.0/secrets/scopes/list"): self._scopes_list,
            ("POST", "/api/2.0/secrets/scopes/create"): self._scope_create,
            ("POST", "/api/2.0/secrets/put"): self._secret_put,
            ("GET", "/api/2.0/secrets/get"): self._secret_get,
            ("GET", "/api/2.0/secrets/list"): self._secrets_list,
            ("GET", "/api/2.0/preview/scim/v2/Me"): self._me,
            ("GET", "/api/2.0/workspace/get-status"): self._ws_status,
            ("POST", "/api/2.0/workspace/mkdirs"): self._ws_mkdirs,
            ("POST", "/api/2.0/workspace/import"): self._ws_import,
            ("GET", "/api/2.0/workspace/export"): self._ws_export,
        }

    def _get_cluster(self, cluster_id: str) -> dict:
        if cluster_id not in self.state.clusters:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
        return self.state.clusters[cluster_id]

    def _cluster_get(self, query, _body):
        cluster = self._get_cluster(query.get("cluster_id", ""))
        upcoming = self.transitions.get(cluster["cluster_id"])
        if upcoming:
            cluster["state"] = upcoming.pop(0)
        return copy.deepcopy(cluster)

    def _cluster_update(self, _query, body):
        cluster = self._get_cluster(body["cluster_id"])
        if cluster["state"] not in ("RUNNING", "TERMINATED"):
            raise ApiError(400, "INVALID_STATE", f"Cluster {body['cluster_id']} is in state {cluster['state']}")
        new = body.get("cluster") or {}
        for name in body["update_mask"].split(","):
            if name in new:
                cluster[name] = copy.deepcopy(new[name])
            else:
                cluster.pop(name, None)
        if cluster["state"] == "RUNNING":  # Databricks restarts a running cluster on update
            self.state.restarts[cluster["cluster_id"]] = self.state.restarts.get(cluster["cluster_id"], 0) + 1
        return {}

    def _cluster_start(self, _query, body):
        cluster = self._get_cluster(body["cluster_id"])
        if cluster["state"] != "TERMINATED":
            raise ApiError(400, "INVALID_STATE", f"Cluster {body['cluster_id']} is in state {cluster['state']}")
        cluster["state"] = "RUNNING"
        return {}

    def _cluster_restart(self, _query, body):
        cluster = self._get_cluster(body["cluster_id"])
        if cluster["state"] != "RUNNING":
            raise ApiError(400, "INVALID_STATE", f"Cluster {body['cluster_id']} is in state {cluster['state']}")
        self.state.restarts[cluster["cluster_id"]] = self.state.restarts.get(cluster["cluster_id"], 0) + 1
        return {}

    def _scopes_list(self, _query, _body):
        return {"scopes": [{"name": n, "backend_type": "DATABRICKS"} for n in sorted(self.state.scopes)]}

    def _scope_create(self, _query, body):
        if body["scope"] in self.state.scopes:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Scope {body['scope']} already exists!")
        self.state.scopes[body["scope"]] = {}
        return {}

    def _secret_put(self, _query, body):
        if body["scope"] not in self.state.scopes:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {body['scope']} does not exist!")
        value = body["string_value"].encode() if "string_value" in body else base64.b64decode(body["bytes_value"])
        self.state.scopes[body["scope"]][body["key"]] = value
        return {}

    def _secret_get(self, query, _body):
        # The REST secrets/get is for DBUtils: "BAD_REQUEST if normal user calls get secret outside
        # of a notebook" (databricks-sdk SecretsAPI.get_secret docstring). Every caller of this fake
        # is outside a notebook, so it refuses, after the checks the API makes first. (The message
        # text is ours: the docstring gives only the code.)
        scope = self.state.scopes.get(query.get("scope"))
        if scope is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {query.get('scope')} does not exist!")
        if query.get("key") not in scope:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Secret {query.get('key')} does not exist")
        raise ApiError(400, "BAD_REQUEST", "Secret values can only be read from a notebook (dbutils.secrets.get)")

    def _secrets_list(self, query, _body):
        # the Secrets API lists keys (and when they were written), never values
        if query.get("scope") not in self.state.scopes:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {query.get('scope')} does not exist!")
        return {"secrets": [{"key": k, "last_updated_timestamp": 0} for k in sorted(self.state.scopes[query["scope"]])]}

    def _me(self, _query, _body):
        return {"userName": self.user_name, "id": "1", "active": True}

    def _ws_status(self, query, _body):
        path = query.get("path", "")
        if path in self.state.workspace_dirs:
            return {"path": path, "object_type": "DIRECTORY"}
        if path in self.state.workspace:
            return {"path": path, "object_type": "FILE", "size": len(self.state.workspace[path])}
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")

    def _ws_mkdirs(self, _query, body):
        parts = body["path"].strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.state.workspace_dirs.add("/" + "/".join(parts[:i]))
        return {}

    def _ws_import(self, _query, body):
        path = body["path"]
        parent = path.rsplit("/", 1)[0] or "/"
        if parent not in self.state.workspace_dirs:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"The parent folder ({parent}) does not exist.")
        if path in self.state.workspace and not body.get("overwrite"):
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"{path} already exists.")
        self.state.workspace[path] = base64.b64decode(body.get("content", ""))
        return {}

    def _ws_export(self, query, _body):
        path = query.get("path", "")
        if path not in self.state.workspace:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")
        return {"content": base64.b64encode(self.state.workspace[path]).decode(), "file_type": "whl"}

    def _files(self, method, path, query, body):
        if method == "PUT":
            if path in self.state.files and query.get("overwrite") not in ("true", "True"):
                raise ApiError(409, "ALREADY_EXISTS", f"{path} already exists")
            self.state.files[path] = body
            self.state.directories.add(path.rsplit("/", 1)[0])
            return 204, b""
        if method in ("GET", "HEAD"):
            if path not in self.state.files:
                raise ApiError(404, "NOT_FOUND", f"The file {path} does not exist")
            return 200, self.state.files[path] if method == "GET" else b""
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"no fake for {method} files")

    def _directories(self, method, path):
        if method == "HEAD":
            known = path in self.state.directories or any(p.startswith(path + "/") for p in self.state.files)
            if not known:
                raise ApiError(404, "NOT_FOUND", f"The directory {path} does not exist")
            return 200, b""
        if method == "PUT":
            self.state.directories.add(path)
            return 204, b""
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"no fake for {method} directories")


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeDatabricks
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the fake records requests itself
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path == "/.well-known/databricks-config":  # the SDK's unauthenticated discovery probe
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            return self._send(
                200, {"oidc_endpoint": f"{host}/oidc", "workspace_id": FakeDatabricks.workspace_id, "cloud": "azure"}
            )
        if self.headers.get("Authorization") != f"Bearer {FakeDatabricks.token}":
            return self._send(401, {"error_code": "UNAUTHENTICATED", "message": "bad token"})
        body: Any = raw
        if raw and "json" in (self.headers.get("Content-Type") or ""):
            body = json.loads(raw)
        try:
            status, payload = self.server_fake.handle(self.command, url.path, query, body)
        except ApiError as exc:
            status, payload = exc.status, {"error_code": exc.code, "message": exc.message}
        self._send(status, payload)

    def _send(self, status: int, payload: Any) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "application/octet-stream"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if self.command == "HEAD" or status == 204:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve
