"""MLflow request-auth plugin: signs every request to an AML MLflow endpoint with a cached
Azure AD token. Registered as the ``mlflow.request_auth_provider`` entry point
``spark-tracking-azure``; MLflow uses it when ``MLFLOW_TRACKING_AUTH=spark-tracking-azure``,
which ``configure()`` sets for AML stores. MLflow's REST client (driver calls) and the relay's
log-batch writer (metrics from Spark tasks) both go through it, so they share one token.

Why not the ``azureml`` scheme: ``azureml-mlflow`` owns it (tracking, artifacts, registry). The
session's tracking URI is the https form of the same endpoint, so both packages coexist: this
plugin signs tracking requests, and azureml-mlflow, when installed, handles AML artifact URIs.
"""

from __future__ import annotations

import threading

from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from . import AUTH_NAME

_lock = threading.Lock()
_auth = None
_auth_key = None


def current_auth():
    """The BearerAuth for the session's configuration (built once per configuration)."""
    global _auth, _auth_key
    from ..config import Config
    from ..session import current_config
    from .credentials import BearerAuth, provider_for_config

    cfg = current_config() or Config.resolve()
    key = (cfg.azure_cloud, cfg.azure_credential, cfg.azure_authority_host)
    with _lock:
        if _auth is None or _auth_key != key:
            _auth, _auth_key = BearerAuth(provider_for_config(cfg)), key
        return _auth


class AzureAuthProvider(RequestAuthProvider):
    def get_name(self) -> str:
        return AUTH_NAME

    def get_auth(self):
        return current_auth()
