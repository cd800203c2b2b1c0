"""The link to an Azure Machine Learning workspace: which workspace, which cloud, which
credential, and the MLflow endpoint that receives the runs.

- ``clouds``: the three Azure clouds (ARM endpoint, authority, token scope, AML hosts).
- ``resources``: pure parsing of ARM ids, AML ``config.json`` and tracking URIs.
- ``credentials``: azure-identity credentials with a per-process token cache.
- ``arm``: the thin ARM client (GET a resource, list Databricks workspaces).
- ``link``: resolution of the workspace from its sources, in the documented order.
- ``mlflow_auth``: the MLflow request-auth plugin that signs every store request.
- ``cli``: ``spark-tracking link`` and ``spark-tracking doctor``.

Nothing here is imported by the startup hook unless an AML link is configured.
"""

from __future__ import annotations

#: MLflow request-auth plugin name (``MLFLOW_TRACKING_AUTH``) that signs AML store requests.
AUTH_NAME = "spark-tracking-azure"
#: The keys of an AML ``config.json`` that name its workspace (``Workspace.from_config()``).
AML_CONFIG_KEYS = ("subscription_id", "resource_group", "workspace_name")


class AzureLinkError(RuntimeError):
    """The AML link could not be resolved or used. The message names what was tried and the fix."""
