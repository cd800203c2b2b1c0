"""Which tracking URI and request auth a session uses for an AML store (pure decisions: the
stores themselves are built by the plugins in ``tracking_store``), kept apart from
``session.py`` so that sessions without an AML link never import azure-identity; and what an AML
store accepts (``limits_for``).

Two ways to speak to AML's MLflow endpoint:

- with azureml-mlflow installed, through its own ``azureml://`` store: it is the only client of
  AML's artifact service, and its artifact repository works only for runs its store made
  ("An authorization token was not set in the artifact uri" otherwise, mlflow#11103). The
  session's URI is that store's behind ``AZUREML_PREFIX``, so that the store is built by
  ``tracking_store.azureml_store``, signed with spark_tracking's credential;
- without it, as ``https://`` with spark_tracking's request-auth plugin: metrics, params, tags
  and runs work; artifacts and models cannot (``mlflow_auth`` refuses them at once, with the fix).
"""

from __future__ import annotations

import os
import sys

from . import AUTH_NAME, AzureLinkError
from .link import Record

# The startup hook of every process on a linked node calls ``for_link`` (the link from the
# node's cache): that path imports neither ``typing`` nor ``urllib`` nor ``importlib.util``, and
# leaves ``resources`` and ``clouds`` to the functions that parse URIs of unknown origin.

#: The tracking-store scheme of a link not resolved yet (interpreter start reads no network):
#: MLflow builds its store at the first request, through ``tracking_store.lazy_link_store``.
LAZY_SCHEME = "spark-tracking-aml"


def lazy_uri(cache_key: str) -> str:
    """The tracking URI of a link still to resolve. It names the link (a checksum of its cache
    key) because MLflow keeps one store per URI for the life of the process."""
    import zlib

    return f"{LAZY_SCHEME}://link/{zlib.crc32(cache_key.encode()):08x}"


#: MLflow's request-auth plugins (``mlflow.request_auth_provider``) exist from MLflow 2.8 (mlflow#10049).
REQUEST_AUTH_SINCE = (2, 8)


class Store(Record):
    """The tracking URI a session sets and the value of ``MLFLOW_TRACKING_AUTH`` (or None)."""

    _fields = ("uri", "auth")
    __slots__ = _fields
    uri: str
    auth: str | None


class Limits(tuple):
    """What one store accepts beyond MLflow's own limits (None: MLflow's limits only)."""

    __slots__ = ()

    def __new__(cls, max_values_per_key: int | None = None, max_params_per_run: int | None = None):
        """Limits of a store; None where it has only MLflow's own."""
        return tuple.__new__(cls, (max_values_per_key, max_params_per_run))

    @property
    def max_values_per_key(self) -> int | None:
        """Values of one metric key in one log_batch (AML refuses more: mlflow#11462)."""
        return self[0]

    @property
    def max_params_per_run(self) -> int | None:
        """Params in one run (AML caps a run at 200: azure-sdk-for-python#35685)."""
        return self[1]


AML_LIMITS = Limits(max_values_per_key=250, max_params_per_run=200)


def limits_for(uri: str) -> Limits:
    """The limits of the store at ``uri``: a sink shapes its batches with them (AML's 250
    values of one metric per batch, 200 params per run) instead of learning them from errors."""
    return AML_LIMITS if is_aml_tracking_uri(uri) else Limits()


def azureml_mlflow_installed() -> bool:
    """Whether azureml-mlflow is importable here. Looks for its package folder on ``sys.path``
    instead of asking the import system, which would run ``azureml/__init__.py`` (this runs in
    the startup hook of every process on a linked node)."""
    return any(os.path.isfile(os.path.join(folder or ".", "azureml", "mlflow", "__init__.py")) for folder in sys.path)


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path) of a URI, without ``urllib`` (see the note at the top)."""
    scheme, _, rest = (uri or "").strip().partition("://")
    host, slash, path = rest.partition("/")
    return scheme.lower(), host, (slash + path).split("?", 1)[0].split("#", 1)[0]


def is_aml_tracking_uri(uri: str) -> bool:
    """True for AML's MLflow endpoint, in its azureml:// or https form, or a link to resolve."""
    from .clouds import is_aml_host
    from .resources import workspace_ref_of_tracking_uri

    scheme, host, _ = _split(uri)
    if scheme in ("azureml", LAZY_SCHEME):
        return True
    return scheme == "https" and (is_aml_host(host) or workspace_ref_of_tracking_uri(uri) is not None)


def for_uri(uri: str) -> Store:
    """The store for a tracking URI: an AML endpoint goes through azureml-mlflow's own
    ``azureml://`` store when it is installed (its artifact repository serves only runs that store
    made), else as https with spark_tracking's cached-token auth; other URIs as they are."""
    if not (uri.startswith("azureml://") or is_aml_tracking_uri(uri)):
        return Store(uri, None)
    from .resources import to_https

    return _aml_store(to_https(uri))


def for_link(link) -> Store:
    """The store for a resolved link (see ``for_uri``); its tracking URI is the https one
    ``link.resolve`` made of what ARM reported, so nothing is parsed again."""
    if not link.tracking_uri.startswith("https://") or "/mlflow/v2.0/" not in link.tracking_uri:
        return for_uri(link.tracking_uri)  # not of the form resolve writes: parse it
    return _aml_store(link.tracking_uri)


#: The tracking URI of a session that goes through azureml-mlflow: its ``azureml://`` URI behind
#: this prefix, so that MLflow asks ``tracking_store.lazy_link_store`` for the store, which has
#: azureml-mlflow sign with spark_tracking's credential before building it.
AZUREML_PREFIX = f"{LAZY_SCHEME}://azureml/"


def _aml_store(https: str) -> Store:
    if azureml_mlflow_installed():
        _, host, path = _split(https)
        return Store(f"{AZUREML_PREFIX}{host}{path}", None)
    return Store(https, AUTH_NAME)


#: The fix for an azureml-mlflow whose package is on the path but does not import (e.g. a version
#: that does not support this MLflow): sessions (and ``doctor``) go through it while it is there.
AZUREML_MLFLOW_BROKEN_FIX = (
    "Fix: azureml-mlflow is installed but cannot be imported here, and sessions go through it while it is "
    "installed: reinstall it under the runtime's constraints (on a cluster: spark-tracking install "
    "--azureml-mlflow; elsewhere: pip install 'spark-tracking[azureml]'), or uninstall it (sessions then "
    "log metrics, params and tags as https)"
)


def artifacts_need_azureml_mlflow(artifact_uri: str) -> Exception:
    """The error for an AML artifact URI when azureml-mlflow is not installed."""
    from .mlflow_auth import AmlFeatureMissing

    return AmlFeatureMissing(
        f"artifacts of Azure ML runs ({artifact_uri}) live behind Azure ML's artifact service, which only "
        "azureml-mlflow speaks. Fix: on a cluster, spark-tracking install --azureml-mlflow (the init script installs "
        "it under the runtime's constraints; as a cluster library its mlflow-skinny pin replaces the runtime's "
        "mlflow), elsewhere pip install 'spark-tracking[azureml]'; then restart Python: spark_tracking routes the "
        "session through its azureml:// store. Metrics, params and tags work without it"
    )


def check_request_auth_supported(version: tuple[int, ...] | None = None) -> None:
    """Refuse, with the reason and the fix, an MLflow without request-auth plugins.

    Why no fallback through ``mlflow.request_header_provider`` (which every MLflow has): MLflow
    does not tell header providers where a request goes, so an Authorization header there would
    carry the Azure token to every MLflow server the process talks to. Every Databricks Runtime
    LTS still in support ships MLflow >= 2.8 (14.3 LTS ML: 2.9.2)."""
    from .._compat.mlflow import installed_version

    version = installed_version() if version is None else version
    if version and version < REQUEST_AUTH_SINCE:
        shown = ".".join(map(str, version))
        raise AzureLinkError(
            f"MLflow {shown} has no request-auth plugins (mlflow.request_auth_provider, MLflow >= 2.8), so "
            "spark_tracking cannot sign requests to Azure ML with it; it does not put the token in a request-header "
            "plugin instead, because MLflow does not tell those which server a request goes to and the token "
            "would reach every MLflow server this process talks to. Fix: use MLflow >= 2.8 (a Databricks "
            "Runtime LTS ML 14.3 or later), or install azureml-mlflow, whose azureml:// store signs its own requests"
        )
