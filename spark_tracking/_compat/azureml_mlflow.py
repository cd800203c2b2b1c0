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
