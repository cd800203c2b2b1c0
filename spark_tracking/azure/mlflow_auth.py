"""MLflow request-auth plugin: signs requests to the linked AML MLflow endpoint with a cached
Azure AD token. Registered as the ``mlflow.request_auth_provider`` entry point
``spark-tracking-azure``; MLflow uses it when ``MLFLOW_TRACKING_AUTH=spark-tracking-azure``,
which ``configure()`` sets for AML stores. MLflow's REST client (driver calls) and the relay's
log-batch writer (metrics from Spark tasks) both go through it, so they share one token.

``MLFLOW_TRACKING_AUTH`` applies to every MLflow REST request of the process, whatever server
it goes to; so the token is added only to requests for the linked AML hosts (the session's
tracking URI), never to another MLflow server the same process talks to.

What AML's MLflow endpoint does differently, handled here for every client at once, on both
routes: the https one, and azureml-mlflow's store, whose requests ``tracking_store.azureml_store`` passes
through this auth as well (that store handles neither gap itself):

- it has no "logged models" API (``/api/2.0/mlflow/logged-models``, used by ``log_model`` from
  MLflow 2.17/3.x, azure-sdk-for-python#44896): such a request is refused before it is sent,
  with the cause and the fix, instead of a raw 404;
- it drops ``mlflow.source.*`` tags passed at run creation (azure-sdk-for-python#45207): they
  are set again right after the run exists.

Why not the ``azureml`` scheme: ``azureml-mlflow`` owns it (tracking, artifacts, registry). The
session's tracking URI is the https form of the same endpoint, so both packages coexist.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from urllib.parse import urlsplit

from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase

from . import AUTH_NAME

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_auth = None
_auth_key = None

_LOGGED_MODELS = "/api/2.0/mlflow/logged-models"
_CREATE_RUN = "/api/2.0/mlflow/runs/create"
_SOURCE_TAG_PREFIX = "mlflow.source."


class AmlFeatureMissing(RuntimeError):
    """A request for an MLflow API that AML's endpoint does not have; the message has the fix."""


def logged_models_unsupported() -> AmlFeatureMissing:
    """The error for MLflow's logged-models API, which AML's endpoint lacks, with the fixes."""
    from .._compat.mlflow import installed_version

    shown = ".".join(map(str, installed_version())) or "this MLflow"
    return AmlFeatureMissing(
        f"Azure ML's MLflow endpoint has no logged-models API, which log_model of MLflow {shown} needs "
        "(MLflow >= 2.17 creates a 'logged model' first, an API Azure ML does not have: azure-sdk-for-python#44896). "
        "Fix: log the model with MLflow < 2.17 (e.g. pip install 'mlflow<2.17' in the notebook, as Microsoft's "
        "examples pin 2.16.2), or save it with mlflow.<flavor>.save_model and upload the folder with "
        "mlflow.log_artifacts (artifacts need azureml-mlflow: spark-tracking install --azureml-mlflow on a cluster, "
        "pip install 'spark-tracking[azureml]' elsewhere)"
    )


_checked_uris: set[str] = set()


def add_linked_uri(uri: str) -> None:
    """Sign requests to ``uri``'s host too (``doctor`` checks a link before any session uses it)."""
    _checked_uris.add(uri)


def linked_hosts() -> frozenset[str]:
    """The hosts (``host[:port]``, lowercase) of the AML endpoint this process is linked to:
    the session's tracking URI (this process's, or the one it inherited) and ``add_linked_uri``."""
    from ..config import MANAGED_URI_ENV
    from ..state import current_tracking_uri

    hosts = set()
    for uri in (current_tracking_uri(), os.environ.get(MANAGED_URI_ENV), *_checked_uris):
        if uri and uri.startswith("https://"):
            hosts.add(urlsplit(uri).netloc.lower())
    return frozenset(hosts)


class AmlRequestAuth(AuthBase):
    """requests auth for AML's MLflow endpoint: the bearer token for linked hosts only, the
    logged-models refusal, and the source tags set again after run creation."""

    def __init__(self, provider, hosts=linked_hosts):
        self.provider = provider
        self.hosts = hosts

    def __call__(self, request):
        """Sign ``request`` when it goes to a linked AML host; refuse the logged-models API."""
        parts = urlsplit(request.url)
        if parts.netloc.lower() not in self.hosts():
            return request  # another server: it gets no Azure token
        if _LOGGED_MODELS in parts.path:
            raise logged_models_unsupported()
        request.headers["Authorization"] = "Bearer " + self.provider.token()
        if parts.path.endswith(_CREATE_RUN) and request.method == "POST":
            tags = _source_tags(request.body)
            if tags:
                request.register_hook("response", _SetTagsAfterCreation(self, tags))
        return request


def _source_tags(body) -> list[dict]:
    try:
        data = json.loads(body or b"{}")
    except (TypeError, ValueError):
        return []
    return [t for t in data.get("tags") or [] if str(t.get("key", "")).startswith(_SOURCE_TAG_PREFIX)]


class _SetTagsAfterCreation:
    """Response hook of a run creation: AML dropped the ``mlflow.source.*`` tags it was given,
    so set them on the run that now exists (one log-batch request, same auth and TLS settings)."""

    def __init__(self, auth: AmlRequestAuth, tags: list[dict]):
        self.auth, self.tags = auth, tags

    def __call__(self, response, **send_kwargs):
        if response.status_code != 200:
            return response
        import requests

        try:
            run_id = response.json()["run"]["info"]["run_id"]
            url = response.url.replace(_CREATE_RUN, "/api/2.0/mlflow/runs/log-batch")
            done = requests.post(
                url,
                json={"run_id": run_id, "tags": self.tags},
                auth=self.auth,
                **{
                    k: send_kwargs[k]
                    for k in ("verify", "cert", "timeout", "proxies")
                    if send_kwargs.get(k) is not None
                },
            )
            if done.status_code != 200:
                raise RuntimeError(f"HTTP {done.status_code}: {done.text[:200]}")
        except Exception as exc:  # noqa: BLE001 - the run exists; only its source tags are missing
            logger.warning("spark_tracking: could not set the mlflow.source.* tags on the new run (%s)", exc)
        return response


def session_cloud(cfg, hosts=linked_hosts):
    """The cloud whose token scope the linked AML endpoint accepts: ``azure_cloud`` when a source
    set it, else the cloud of the linked AML host (``<region>.api.ml.azure.us`` is US Government,
    ``<region>.api.ml.azure.cn`` China: ``clouds.cloud_of_host``), else ``clouds.infer``."""
    from .clouds import cloud_of_host, infer

    if "azure_cloud" not in cfg.sources:
        for host in sorted(hosts()):
            found = cloud_of_host(host)
            if found is not None:
                return found
    return infer(cfg)[0]


def current_auth():
    """The auth for the session's configuration (built once per configuration and cloud)."""
    global _auth, _auth_key
    from ..state import active_config
    from .credentials import provider_for_config

    cfg = active_config()
    chosen = session_cloud(cfg)
    key = (chosen.name, cfg.azure_credential, cfg.azure_authority_host)
    with _lock:
        if _auth is None or _auth_key != key:
            _auth, _auth_key = AmlRequestAuth(provider_for_config(cfg, chosen)), key
        return _auth


class AzureAuthProvider(RequestAuthProvider):
    """MLflow's request-auth plugin ``spark-tracking-azure`` (``MLFLOW_TRACKING_AUTH``): Azure
    tokens for the linked AML endpoint."""

    def get_name(self) -> str:
        """The name ``MLFLOW_TRACKING_AUTH`` selects this provider with."""
        return AUTH_NAME

    def get_auth(self):
        """The requests auth of the active configuration (see :func:`current_auth`)."""
        return current_auth()
