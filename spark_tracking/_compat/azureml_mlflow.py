"""Every touch of azureml-mlflow's private modules, one function each, with the versions it was
checked on. Imported only when a session goes through azureml-mlflow's ``azureml://`` store."""

from __future__ import annotations


def sign_store_with(tracking_uri: str, host_url: str, workspace, credential, cloud_name: str) -> None:
    """Make azureml-mlflow's store (and its artifact repository) for ``tracking_uri`` sign with
    ``credential`` (an azure-core ``TokenCredential``) instead of its own credential chain.

    azureml-mlflow builds one service context per tracking URI (without its query) and keeps it
    for the process; its loader takes one registered ahead (``add_service_context``), which its
    store builder and artifact repository then use. ``cloud_name`` is one of its known clouds,
    looked up without its cloud-metadata request to ARM. Checked: azureml-mlflow 1.62.0.post6
    (``_internal.service_context_loader._AzureMLServiceContextLoader``,
    ``_internal.utils.ServiceContext``, ``_common._cloud.cloud._get_cloud_or_default``)."""
    from azureml.mlflow._common._cloud.cloud import _get_cloud_or_default
    from azureml.mlflow._internal.service_context_loader import _AzureMLServiceContextLoader
    from azureml.mlflow._internal.utils import ServiceContext

    context = ServiceContext(
        host_url=host_url,
        subscription_id=workspace.subscription_id,
        workspace_name=workspace.name,
        resource_group_name=workspace.resource_group,
        auth=credential,
        cloud=_get_cloud_or_default(cloud_name),
    )
    _AzureMLServiceContextLoader.add_service_context(tracking_uri, context)


def send_requests_with_auth(tracking_store, auth_name: str) -> None:
    """Make every MLflow REST request of azureml-mlflow's tracking store name the request-auth
    plugin ``auth_name`` too, so that the requests of this route pass through the same
    ``requests`` auth as those of the https route (AML's workarounds live there once).

    azureml-mlflow's ``AzureMLRestStore`` is MLflow's ``RestStore`` with host credentials of its
    own: ``get_host_credentials`` returns ``MlflowHostCreds(url, token=...)`` for each request,
    from the attribute ``get_host_creds`` that ``RestStore`` calls before every request (checked:
    azureml-mlflow 1.62.0.post6, ``_store.azureml_reststore.AzureMLAbstractRestStore`` and
    ``_store.tracking.store.AzureMLRestStore``). MLflow's ``http_request`` passes
    ``fetch_auth(host_creds.auth)`` to ``requests`` as its auth when ``auth`` is set (MLflow 2.9.2,
    3.0.1, 3.17: ``mlflow.utils.rest_utils``; the registry exists from MLflow 2.8). The token
    azureml-mlflow put in the credentials stays: it is the same one, from the same provider."""
    fetch = tracking_store.get_host_creds

    def host_creds():
        creds = fetch()
        creds.auth = auth_name
        return creds

    tracking_store.get_host_creds = host_creds
