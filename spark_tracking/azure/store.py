"""Which tracking URI and request auth a session uses for an AML store (pure decisions plus
the link resolution), kept apart from ``session.py`` so that sessions without an AML link
never import azure-identity."""

from __future__ import annotations

import importlib.util
from typing import NamedTuple
from urllib.parse import urlsplit

from . import AUTH_NAME
from .clouds import is_aml_host
from .resources import to_https, workspace_ref_of_tracking_uri


class Store(NamedTuple):
    uri: str
    #: value for MLFLOW_TRACKING_AUTH, or None
    auth: str | None


def azureml_mlflow_installed() -> bool:
    try:
        return importlib.util.find_spec("azureml.mlflow") is not None
    except (ImportError, ValueError):
        return False


def is_aml_tracking_uri(uri: str) -> bool:
    """True for AML's MLflow endpoint, in its azureml:// or https form."""
    parts = urlsplit(uri or "")
    if parts.scheme == "azureml":
        return True
    return parts.scheme == "https" and (is_aml_host(parts.netloc) or workspace_ref_of_tracking_uri(uri) is not None)


def for_uri(uri: str) -> Store:
    """The store for a configured tracking URI: AML endpoints get the cached-token auth."""
    if uri.startswith("azureml://"):
        if azureml_mlflow_installed():  # its own scheme, credentials and artifacts
            return Store(uri, None)
        return Store(to_https(uri), AUTH_NAME)  # spoken as https with spark_tracking's credentials
    if is_aml_tracking_uri(uri):
        return Store(uri, AUTH_NAME)
    return Store(uri, None)
