"""A fake of the Azure side on 127.0.0.1, over TLS (a test CA from trustme), for the real
azure-identity, requests and MLflow clients to talk to:

- ``aad``: an Azure AD authority (OpenID discovery + the v2 token endpoint, client credentials)
  issuing HS256-signed JWTs that expire after ``token_lifetime`` seconds of ``time.time()``;
- ``arm``: Azure Resource Manager serving Databricks and AML workspace resources, with
  per-identity grants (403 AuthorizationFailed otherwise) and ARM's 404 shape;
- ``aml``: an AML-shaped MLflow endpoint (``/mlflow/v2.0/subscriptions/…/workspaces/<ws>``) that
  checks the bearer token (signature, audience, expiry) on every request, then proxies the
  MLflow REST call to a real ``mlflow server`` — with AML's differences (docs/platform.md):
  ARM reports the tracking URI as ``azureml://…/mlflow/v1.0/…`` and MLflow >= 2 clients speak
  ``/mlflow/v2.0`` (only v2.0 is served here, so a client that keeps v1.0 fails visibly); no
  logged-models API (404, azure-sdk-for-python#44896); ``mlflow.source.*`` tags given at run
  creation are dropped (azure-sdk-for-python#45207); a log_batch with more than 250 values of
  one metric is refused (mlflow#11462), as is a 201st param of a run (azure-sdk-for-python#35685);
  experiments whose names hold "/" can be created but are not found by name
  (azure-sdk-for-python#45209); runs' artifact URIs are ``azureml://`` ones, which only
  azureml-mlflow's artifact repository speaks (mlflow#11103);
- ``plain``: a recording reverse proxy to the same ``mlflow server`` with no auth at all (another
  MLflow server a session may talk to), keeping the headers of every request.

Every request is recorded; ``rejected`` lists the store requests refused and why.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import requests

ARM_AUDIENCE = "https://management.azure.com"
TENANT = "72f988bf-0000-4000-8000-000000000001"


@dataclass
class ServicePrincipal:
    client_id: str
    secret: str | None
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: PEM of the certificate whose key signs this principal's client assertions, if any
    certificate: bytes | None = None


class _Server:
    def __init__(self, name: str, handler, ssl_context):
        self.name = name
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"fake-{name}", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class FakeAzure:
    def __init__(self, tmp_path, mlflow_url: str, token_lifetime: float = 3600.0, audience: str = ARM_AUDIENCE):
        import trustme

        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(tmp_path / "fake-azure-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.mlflow_url = mlflow_url.rstrip("/")
        self.token_lifetime = token_lifetime
        self.audience = audience
        self.scopes_requested: list[str] = []
        self.signing_key = uuid.uuid4().hex
        self.principals: dict[str, ServicePrincipal] = {}
        self.resources: dict[str, dict] = {}
        #: (object id) -> resource ids (lowercase) it may read in ARM; "*" for all
        self.arm_grants: dict[str, set[str]] = {}
        #: object ids the AML endpoint refuses with 403
        self.aml_forbidden: set[str] = set()
        self.tokens_issued = 0
        self.issued: list[str] = []  # every access token handed out (tests look for leaks)
        self.requests: list[tuple[str, str, str]] = []  # (server, method, path)
        self.store_accepted = 0
        self.rejected: list[str] = []
        self.log_batch_metrics = 0
        #: (path, headers) of every request the plain server got
        self.plain_requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.aad = _Server("aad", self._handler(self._aad), context)
        self.arm = _Server("arm", self._handler(self._arm), context)
        self.aml = _Server("aml", self._handler(self._aml), context)
        self.plain = _Server("plain", self._handler(self._plain), context)
        self._session = requests.Session()

    # -- setup ---------------------------------------------------------------------------------
    def __enter__(self) -> "FakeAzure":
        for server in (self.aad, self.arm, self.aml, self.plain):
            server.start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.aad, self.arm, self.aml, self.plain):
            server.stop()
        self._session.close()

    def add_principal(
        self,
        client_id: str = "spark-tracking-sp",
        secret: str | None = "s3cr3t-value",
        certificate: bytes | None = None,
    ) -> ServicePrincipal:
        sp = ServicePrincipal(client_id, secret, certificate=certificate)
        self.principals[client_id] = sp
        return sp

    def grant(self, principal: ServicePrincipal, resource_id: str = "*") -> None:
        self.arm_grants.setdefault(principal.object_id, set()).add(resource_id.lower())

    def add_aml_workspace(
        self,
        subscription: str,
        group: str,
        name: str,
        location: str = "westeurope",
        report_tracking_uri: bool = True,
        aml_host: str | None = None,
    ) -> str:
        """An AML workspace resource; ``aml_host``: the regional API host ARM reports in its
        tracking URI instead of this fake's (a sovereign cloud's, e.g. ``usgovvirginia.api.ml.azure.us``
        or ``chinaeast2.api.ml.azure.cn``: AML's API hosts per cloud, as azureml-mlflow's cloud table
        lists them; nothing here serves those hosts)."""
        rid = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.MachineLearningServices/workspaces/{name}"
        properties: dict[str, Any] = {"workspaceId": str(uuid.uuid4()), "friendlyName": name}
        if report_tracking_uri:
            host = aml_host or urlsplit(self.aml.url).netloc
            properties["mlFlowTrackingUri"] = f"azureml://{host}/mlflow/v1.0{rid}"  # as ARM reports it
        self.resources[rid.lower()] = {
            "id": rid,
            "name": name,
            "location": location,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "properties": properties,
        }
        return rid

    def add_databricks_workspace(
        self,
        subscription: str,
        group: str,
        name: str,
        aml_workspace_id: str | None,
        workspace_url: str = "adb-1234567890123456.7.azuredatabricks.net",
    ) -> str:
        rid = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Databricks/workspaces/{name}"
        parameters = {"enableNoPublicIp": {"type": "Bool", "value": True}}
        if aml_workspace_id:
            parameters["amlWorkspaceId"] = {"type": "String", "value": aml_workspace_id}
        self.resources[rid.lower()] = {
            "id": rid,
            "name": name,
            "location": "westeurope",
            "type": "Microsoft.Databricks/workspaces",
            "properties": {"parameters": parameters, "workspaceUrl": workspace_url},
        }
        return rid

    def env(self) -> dict[str, str]:
        """What a process needs to trust the fake (its CA) and find Azure AD and ARM."""
        return {
            "REQUESTS_CA_BUNDLE": self.ca_file,
            "SPARK_TRACKING_AZURE_AUTHORITY_HOST": self.aad.url,
            "SPARK_TRACKING_AZURE_ARM_ENDPOINT": self.arm.url,
        }

    # -- tokens --------------------------------------------------------------------------------
    def issue(self, sp: ServicePrincipal, scope: str) -> dict:
        now = time.time()
        audience = scope[: -len("/.default")] if scope.endswith("/.default") else scope
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{TENANT}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.token_lifetime),
            "appid": sp.client_id,
            "oid": sp.object_id,
            "tid": TENANT,
        }
        token = jwt.encode(claims, self.signing_key, algorithm="HS256")
        with self._lock:
            self.tokens_issued += 1
            self.issued.append(token)
        return {
            "token_type": "Bearer",
            "expires_in": int(self.token_lifetime),
            "ext_expires_in": int(self.token_lifetime),
            "access_token": token,
        }

    def check(self, header: str | None) -> tuple[dict | None, str]:
        """(claims, "") for a valid ARM-audience bearer token, else (None, why)."""
        if not header or not header.startswith("Bearer "):
            return None, "no bearer token"
        try:
            claims = jwt.decode(
                header[7:],
                self.signing_key,
                algorithms=["HS256"],
                audience=self.audience,
                options={"verify_exp": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError as exc:
            return None, f"invalid token: {exc}"
        if claims["exp"] <= time.time():
            return None, f"token expired {time.time() - claims['exp']:.0f}s ago"
        return claims, ""

    # -- handlers ------------------------------------------------------------------------------
    def _handler(self, route):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def reply(
                self, status: int, payload: Any = None, raw: bytes | None = None, headers: dict[str, str] | None = None
            ):
                data = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                route(self, "GET", self._body())

            def do_POST(self):
                route(self, "POST", self._body())

            def do_PATCH(self):
                route(self, "PATCH", self._body())

            def do_DELETE(self):
                route(self, "DELETE", self._body())

        return Handler

    def _aad(self, h, method: str, body: bytes) -> None:
        path = urlsplit(h.path).path
        self.requests.append(("aad", method, path))
        match = re.match(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$", path)
        if method == "GET" and match:
            base = f"{self.aad.url}/{match[1]}"
            return h.reply(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{self.aad.url}/{match[1]}/v2.0",
                },
            )
        if method == "POST" and re.match(r"^/[^/]+/oauth2/v2\.0/token$", path):
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            sp = self.principals.get(form.get("client_id", ""))
            if form.get("grant_type") != "client_credentials" or sp is None:
                return h.reply(
                    400,
                    {
                        "error": "unauthorized_client",
                        "error_description": f"AADSTS700016: Application with identifier '{form.get('client_id')}' "
                        f"was not found in the directory.",
                    },
                )
            if "client_assertion" in form:
                if not self._assertion_valid(sp, form):
                    return h.reply(
                        401,
                        {
                            "error": "invalid_client",
                            "error_description": "AADSTS700027: Client assertion contains an invalid signature.",
                        },
                    )
            elif sp.secret is None or form.get("client_secret") != sp.secret:
                return h.reply(
                    401,
                    {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."},
                )
            scope = form.get("scope", "").split()[0]
            self.scopes_requested.append(scope)
            return h.reply(200, self.issue(sp, scope))
        h.reply(404, {"error": "not_found"})

    @staticmethod
    def _assertion_valid(sp: ServicePrincipal, form: dict) -> bool:
        """A certificate credential's client assertion: a JWT signed by the principal's key."""
        from cryptography import x509

        if sp.certificate is None:
            return False
        key = x509.load_pem_x509_certificate(sp.certificate).public_key()
        try:
            claims = jwt.decode(
                form["client_assertion"], key, algorithms=["RS256", "PS256"], options={"verify_aud": False}
            )
        except jwt.InvalidTokenError:
            return False
        return claims.get("iss") == claims.get("sub") == sp.client_id

    def _arm(self, h, method: str, body: bytes) -> None:
        parts = urlsplit(h.path)
        self.requests.append(("arm", method, parts.path))
        claims, why = self.check(h.headers.get("Authorization"))
        if claims is None:
            return h.reply(401, {"error": {"code": "InvalidAuthenticationToken", "message": why}})
        if "api-version" not in parse_qs(parts.query):
            return h.reply(
                400,
                {
                    "error": {
                        "code": "MissingApiVersionParameter",
                        "message": "The api-version query parameter (?api-version=) is required",
                    }
                },
            )
        grants = self.arm_grants.get(claims["oid"], set())
        path = parts.path.rstrip("/")
        listing = re.match(r"^/subscriptions/([^/]+)/providers/Microsoft\.Databricks/workspaces$", path, re.I)
        if listing:
            items = [
                r
                for key, r in self.resources.items()
                if r["type"] == "Microsoft.Databricks/workspaces"
                and key.startswith(f"/subscriptions/{listing[1].lower()}/")
                and ("*" in grants or key in grants)
            ]
            return h.reply(200, {"value": items})
        if "*" not in grants and path.lower() not in grants:
            action = "/".join(path.split("/providers/", 1)[-1].split("/")[:2]) + "/read"
            return h.reply(
                403,
                {
                    "error": {
                        "code": "AuthorizationFailed",
                        "message": f"The client '{claims['appid']}' with object id '{claims['oid']}' does not "
                        f"have authorization to perform action '{action}' over scope '{path}' "
                        f"or the scope is invalid.",
                    }
                },
            )
        resource = self.resources.get(path.lower())
        if resource is None:
            kind = "/".join(path.split("/providers/", 1)[-1].split("/")[:2]) if "/providers/" in path else "resource"
            return h.reply(
                404,
                {
                    "error": {
                        "code": "ResourceNotFound",
                        "message": f"The Resource '{kind}/{path.rsplit('/', 1)[-1]}' was not found.",
                    }
                },
            )
        h.reply(200, resource)

    #: AML caps (docs/platform.md): values of one metric per log_batch, params per run
    MAX_VALUES_PER_KEY = 250
    MAX_PARAMS_PER_RUN = 200

    def _aml(self, h, method: str, body: bytes) -> None:
        parts = urlsplit(h.path)
        match = re.match(
            r"^/mlflow/v2\.0/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
            r"Microsoft\.MachineLearningServices/workspaces/([^/]+)(/api/.*)$",
            parts.path,
            re.I,
        )
        self.requests.append(("aml", method, parts.path))
        if not match:
            return h.reply(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no route {parts.path}"})
        claims, why = self.check(h.headers.get("Authorization"))
        if claims is None:
            with self._lock:
                self.rejected.append(f"{method} {match[2]}: {why}")
            return h.reply(
                401,
                {"error_code": "UNAUTHENTICATED", "message": why},
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if claims["oid"] in self.aml_forbidden:
            with self._lock:
                self.rejected.append(f"{method} {match[2]}: forbidden")
            return h.reply(
                403,
                {
                    "error_code": "PERMISSION_DENIED",
                    "message": f"The client '{claims['appid']}' does not have permission to perform "
                    f"'Microsoft.MachineLearningServices/workspaces/experiments/runs/write'",
                },
            )
        api = match[2]
        refusal = self._aml_refusal(method, api, parts.query, body)
        if refusal is not None:
            with self._lock:
                self.rejected.append(f"{method} {api}: {refusal[1]['message']}")
            return h.reply(*refusal)
        if api.endswith("/runs/create") and method == "POST":
            data = json.loads(body or b"{}")
            data["tags"] = [t for t in data.get("tags") or [] if not t.get("key", "").startswith("mlflow.source.")]
            body = json.dumps(data).encode()
        target = self.mlflow_url + api + (f"?{parts.query}" if parts.query else "")
        response = self._session.request(
            method,
            target,
            data=body or None,
            headers={"Content-Type": h.headers.get("Content-Type", "application/json")},
        )
        with self._lock:
            self.store_accepted += 1
            if api.endswith("/runs/log-batch") and response.status_code == 200:
                self.log_batch_metrics += len(json.loads(body or b"{}").get("metrics", []))
        workspace = f"azureml://{h.headers.get('Host') or urlsplit(self.aml.url).netloc}{parts.path[: match.start(2)]}"
        h.reply(response.status_code, raw=_azureml_artifact_uris(response.content, workspace))

    def _aml_refusal(self, method: str, api: str, query: str, body: bytes) -> tuple[int, dict] | None:
        """AML's answer where it differs from an MLflow server's, else None."""
        if "/mlflow/logged-models" in api:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"Not found: {api}"}
        if api.endswith("/experiments/get-by-name"):
            name = parse_qs(query).get("experiment_name", [""])[0]
            if "/" in name:
                return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Experiment '{name}' not found"}
        if method == "POST" and api.endswith(("/runs/log-batch", "/runs/log-parameter")):
            data = json.loads(body or b"{}")
            per_key: dict[str, int] = {}
            for metric in data.get("metrics") or []:
                per_key[metric["key"]] = per_key.get(metric["key"], 0) + 1
            over = [k for k, n in per_key.items() if n > self.MAX_VALUES_PER_KEY]
            if over:
                return _size_limit("MetricV2Dto.Value/Count", self.MAX_VALUES_PER_KEY, per_key[over[0]])
            params = data.get("params") or ([{"key": data["key"]}] if api.endswith("log-parameter") else [])
            if params:
                run = self._session.get(
                    f"{self.mlflow_url}/api/2.0/mlflow/runs/get",
                    params={"run_id": data.get("run_id") or data.get("run_uuid")},
                ).json()
                have = {p["key"] for p in (run.get("run", {}).get("data", {}).get("params") or [])}
                size = len(have | {p["key"] for p in params})
                if size > self.MAX_PARAMS_PER_RUN:  # the whole request is refused
                    return _size_limit("Parameters", self.MAX_PARAMS_PER_RUN, size)
        return None

    def _plain(self, h, method: str, body: bytes) -> None:
        parts = urlsplit(h.path)
        with self._lock:
            self.plain_requests.append((parts.path, dict(h.headers.items())))
        target = self.mlflow_url + h.path
        response = self._session.request(
            method,
            target,
            data=body or None,
            headers={"Content-Type": h.headers.get("Content-Type", "application/json")},
        )
        h.reply(response.status_code, raw=response.content)


def _size_limit(field: str, limit: int, size: int) -> tuple[int, dict]:
    """AML's answer to a request over one of its size limits, as MLflow clients have reported it
    (azure-sdk-for-python#35685 for params, mlflow#11462 for metric values)."""
    error = {
        "Error": {
            "Code": "ValidationError",
            "Severity": None,
            "Message": f"A field of the entity is over the size limit. FieldName={field}, Limit={limit}, "
            f"Size={size}. See https://aka.ms/azure-machine-learning-limits for service limits documentation.",
            "MessageFormat": None,
            "MessageParameters": None,
            "ReferenceCode": None,
            "DetailsUri": None,
            "Target": None,
            "Details": [],
            "InnerError": None,
            "DebugInfo": None,
            "AdditionalInfo": None,
        },
        "Correlation": {"operation": uuid.uuid4().hex, "request": uuid.uuid4().hex[:16]},
        "Environment": "westeurope",
        "Location": "westeurope",
        "ComponentName": "mlflow",
        "statusCode": 400,
        "error_code": "INVALID_PARAMETER_VALUE",
    }
    return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": f"Response: {error!r}"}


def _azureml_artifact_uris(content: bytes, workspace: str) -> bytes:
    """AML hands out ``azureml://`` artifact URIs (its artifact service, which only
    azureml-mlflow speaks): ``azureml://<host>/mlflow/v2.0/subscriptions/…/workspaces/<ws>/
    experiments/<id>/runs/<id>/artifacts`` (as reported in mlflow#9495); ``workspace`` is the
    part up to the workspace."""
    try:
        data = json.loads(content or b"null")
    except ValueError:
        return content

    def rewrite(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "artifact_uri" and isinstance(value, str):
                    node[key] = (
                        f"{workspace}/experiments/{node.get('experiment_id')}/runs/{node.get('run_id')}/artifacts"
                    )
                elif key == "artifact_location" and isinstance(value, str):
                    node[key] = f"{workspace}/experiments/{node.get('experiment_id')}/artifacts"
                else:
                    rewrite(value)
        elif isinstance(node, list):
            for item in node:
                rewrite(item)

    rewrite(data)
    return json.dumps(data).encode()
