"""The ``spark-tracking-aml`` tracking-store and model-registry plugins MLflow calls to build a
session's AML store (``setup.py`` entry points): a link still to resolve is resolved at MLflow's
first request (``session_link.resolve_pending``); a session through azureml-mlflow gets that
package's own store, signed with spark_tracking's credential (``azureml_store``)."""

from __future__ import annotations

from .. import state
from . import AUTH_NAME, AzureLinkError, session_link
from .store import AZUREML_MLFLOW_BROKEN_FIX, AZUREML_PREFIX, REQUEST_AUTH_SINCE


def azureml_store(store_uri: str, artifact_uri: str | None = None):
    """azureml-mlflow's store for ``spark-tracking-aml://azureml/<host>/<path>``, signing with
    this session's credential (the ``azure_credential``, ``azure_cloud`` and
    ``azure_authority_host`` settings, the token cached for the process) instead of azureml-mlflow's
    own chain, which ignores those settings, asks ARM for cloud metadata and ends in interactive
    and device-code logins that wait for a person.

    Its requests also pass through the request auth of the https route
    (``mlflow_auth.AmlRequestAuth``), which holds AML's workarounds once for both routes: the
    logged-models API refused before it is sent, with the fix, and the ``mlflow.source.*`` tags
    set again after AML dropped them at run creation. azureml-mlflow 1.62.0.post6 does neither:
    its store is MLflow's ``RestStore`` with its own host credentials (``_store/tracking/store.py``
    overrides no logged-model call and no ``create_run``)."""
    from .._compat.mlflow import build_store, installed_version

    uri = _signed_azureml_uri(store_uri)
    tracking = build_store(uri, artifact_uri)
    if installed_version() >= REQUEST_AUTH_SINCE:  # without request-auth plugins, as azureml-mlflow signs
        from .._compat.azureml_mlflow import send_requests_with_auth
        from .mlflow_auth import add_linked_uri

        add_linked_uri("https://" + uri[len("azureml://") :])  # the host this store's requests go to
        send_requests_with_auth(tracking, AUTH_NAME)
    return tracking


def _signed_azureml_uri(store_uri: str) -> str:
    """The ``azureml://`` URI behind ``store_uri``, with azureml-mlflow's service context for it
    registered ahead, signed with this session's credential (see ``azureml_store``)."""
    from .._compat.azureml_mlflow import sign_store_with
    from .credentials import ProviderCredential, provider_for_config
    from .resources import workspace_ref_of_tracking_uri

    rest = store_uri[len(AZUREML_PREFIX) :]
    uri = f"azureml://{rest}"
    workspace = workspace_ref_of_tracking_uri(uri)
    if workspace is None:
        raise AzureLinkError(f"{store_uri!r} names no AML workspace (/subscriptions/.../workspaces/<name>)")
    from .clouds import cloud_of_host, infer

    cfg = state.active_config()
    host = rest.split("/", 1)[0]
    # the cloud of the AML host (US Government, China) unless a source named the cloud
    chosen = (None if "azure_cloud" in cfg.sources else cloud_of_host(host)) or infer(cfg)[0]
    credential = ProviderCredential(provider_for_config(cfg, chosen))
    try:
        sign_store_with(uri, f"https://{host}", workspace, credential, chosen.name)
    except ImportError as exc:  # its folder is on the path (so sessions route through it) but it breaks
        raise ImportError(f"{exc}\n{AZUREML_MLFLOW_BROKEN_FIX}") from exc
    return uri


def lazy_link_store(store_uri: str | None = None, artifact_uri: str | None = None):
    """The ``mlflow.tracking_store`` plugin of the ``spark-tracking-aml`` scheme: MLflow's first
    request in a process whose link was not cached at interpreter start resolves it here (once:
    the result is cached for the node), and gets the real store. A link that fails gives the
    embedded store, with a message (see ``session_link``)."""
    from .._compat.mlflow import build_store

    # MLflow calls this under its store-building lock, once per URI and process
    if store_uri and store_uri.startswith(AZUREML_PREFIX):
        return azureml_store(store_uri, artifact_uri)
    return build_store(session_link.resolve_pending(), artifact_uri)


def lazy_link_registry(store_uri: str | None = None, tracking_uri: str | None = None):
    """The ``mlflow.model_registry_store`` plugin of the ``spark-tracking-aml`` scheme: MLflow
    takes the registry URI from the tracking URI, and without a registry store for this scheme
    ``register_model``, ``log_model(registered_model_name=...)`` and ``models:/`` loads raised
    ``UnsupportedModelRegistryStoreURIException``. A session through azureml-mlflow gets its
    registry (``azureml_model_registry_builder``, the same service context, signed with this
    session's credential); a link still to resolve is resolved (as ``lazy_link_store`` does) and
    gets the registry of the URI it resolved to (https: MLflow's REST registry with
    spark_tracking's request auth; the embedded store's when the link failed)."""
    from .._compat.mlflow import build_registry_store

    uri = store_uri or ""
    if not uri.startswith(AZUREML_PREFIX):
        uri = session_link.resolve_pending()
    if uri.startswith(AZUREML_PREFIX):
        uri = _signed_azureml_uri(uri)
    return build_registry_store(uri)
