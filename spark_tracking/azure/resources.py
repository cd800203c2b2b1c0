"""Pure helpers: ARM resource ids, AML ``config.json`` files and AML tracking URIs. No I/O
beyond reading a config file, no network: the logic the link resolution is built from."""

from __future__ import annotations

from . import AML_CONFIG_KEYS, AzureLinkError

TYPE_CHECKING = False  # the type checker's view only: ``typing`` costs every process start
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from .clouds import Cloud

# The startup hook parses the workspace id a link source names (``parse_workspace_id``) in every
# process on a linked node: that path imports neither ``re`` nor ``typing`` nor ``urllib``.

AML_PROVIDER = "Microsoft.MachineLearningServices/workspaces"
DATABRICKS_PROVIDER = "Microsoft.Databricks/workspaces"


class WorkspaceRef(tuple):
    """An ARM workspace resource: AML or Databricks (a named tuple)."""

    __slots__ = ()
    _fields = ("subscription_id", "resource_group", "name", "provider")

    def __new__(cls, subscription_id: str, resource_group: str, name: str, provider: str = AML_PROVIDER):
        """A reference to the workspace ``name`` of ``provider`` in a subscription's group."""
        return tuple.__new__(cls, (subscription_id, resource_group, name, provider))

    def __repr__(self) -> str:
        return f"WorkspaceRef({', '.join(f'{k}={v!r}' for k, v in zip(self._fields, self))})"

    @property
    def subscription_id(self) -> str:
        """The subscription id."""
        return self[0]

    @property
    def resource_group(self) -> str:
        """The resource group."""
        return self[1]

    @property
    def name(self) -> str:
        """The workspace's name."""
        return self[2]

    @property
    def provider(self) -> str:
        """The resource provider and type, e.g. ``Microsoft.MachineLearningServices/workspaces``."""
        return self[3]

    @property
    def id(self) -> str:
        """The ARM resource id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{self.provider}/{self.name}"
        )


def _id_parts(text: str) -> tuple[str, str, str, str] | None:
    """(subscription, group, provider, name) of ``/subscriptions/<s>/resourceGroups/<g>/providers/
    <namespace>/<type>/<name>`` (fixed words in any case, one leading and trailing "/" optional)."""
    text = text[1:] if text.startswith("/") else text
    text = text[:-1] if text.endswith("/") else text
    parts = text.split("/")
    if len(parts) != 8 or not all(parts) or any(c in parts[7] for c in "?#"):
        return None
    if [parts[0].lower(), parts[2].lower(), parts[4].lower()] != ["subscriptions", "resourcegroups", "providers"]:
        return None
    return parts[1], parts[3], f"{parts[5]}/{parts[6]}", parts[7]


def parse_workspace_id(text: str, provider: str = AML_PROVIDER, what: str = "aml_workspace_id") -> WorkspaceRef:
    """Parse an ARM resource id of ``provider``; the error shows the expected shape."""
    parts = _id_parts(str(text).strip())
    if parts is None or parts[2].lower() != provider.lower():
        raise AzureLinkError(
            f"{what}={text!r} is not an ARM id of a {provider} resource; expected "
            f"/subscriptions/<subscription id>/resourceGroups/<group>/providers/{provider}/<name> "
            f"(the 'Resource ID' on the resource's Properties page in the Azure portal)"
        )
    sub, group, found, name = parts
    return WorkspaceRef(sub, group, name, found)


def read_aml_config(path: str) -> WorkspaceRef:
    """The workspace named by an AML ``config.json`` (keys subscription_id, resource_group,
    workspace_name; or ``Scope``, an ARM id, as AI Studio writes it)."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise AzureLinkError(f"AML config file {path} could not be read: {exc}") from None
    if isinstance(data.get("Scope"), str):
        return parse_workspace_id(data["Scope"], what=f"'Scope' in {path}")
    missing = [k for k in AML_CONFIG_KEYS if not str(data.get(k) or "").strip()]
    if missing:
        raise AzureLinkError(
            f"AML config file {path} lacks {', '.join(missing)}; download it again from the AML "
            f"workspace's overview page in the Azure portal ('Download config.json')"
        )
    return WorkspaceRef(*(str(data[k]).strip() for k in AML_CONFIG_KEYS))


def aml_link_of_databricks(resource: Mapping[str, Any], databricks_id: str) -> str:
    """The AML workspace id a Databricks workspace resource records as its link."""
    value = (((resource.get("properties") or {}).get("parameters") or {}).get("amlWorkspaceId") or {}).get("value")
    if not value:
        raise AzureLinkError(
            f"Databricks workspace {databricks_id} has no linked Azure ML workspace "
            f"(properties.parameters.amlWorkspaceId is empty). Link one on the Databricks workspace's "
            f"overview page in the Azure portal ('Link Azure ML workspace'), or name the workspace "
            f"with SPARK_TRACKING_AML_WORKSPACE_ID or 'spark-tracking link --workspace-id ID'"
        )
    return str(value)


#: The MLflow API version in AML tracking URIs: ARM reports ``/mlflow/v1.0/``; azureml-mlflow
#: speaks ``/mlflow/v2.0/`` for MLflow >= 2 (and v1.0 only for MLflow 1.x, which this package
#: does not support), so every URI this package builds or converts uses v2.0.
_API_V1, _API_V2 = "/mlflow/v1.0/", "/mlflow/v2.0/"


def to_https(uri: str) -> str:
    """``azureml://host/mlflow/v1.0/path?`` (as ARM reports it) as the https URL MLflow's REST
    client uses: ``https://host/mlflow/v2.0/path``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri.strip())
    if parts.scheme not in ("azureml", "https"):
        raise AzureLinkError(f"{uri!r} is not an AML tracking URI (azureml://<region>.api.azureml.ms/mlflow/...)")
    path = parts.path.rstrip("/")
    if path.lower().startswith(_API_V1):
        path = _API_V2 + path[len(_API_V1) :]
    return urlunsplit(("https", parts.netloc, path, "", ""))


def tracking_uri_of(workspace: Mapping[str, Any], ref: WorkspaceRef, cloud: Cloud) -> str:
    """The https MLflow tracking URI of an AML workspace resource (as ARM returns it): its
    ``properties.mlFlowTrackingUri`` when ARM reports one, else built from its region."""
    reported = (workspace.get("properties") or {}).get("mlFlowTrackingUri")
    if reported:
        return to_https(reported)
    region = str(workspace.get("location") or "").replace(" ", "").lower()
    if not region:
        raise AzureLinkError(f"ARM returned AML workspace {ref.id} without a location or MLflow tracking URI")
    return f"https://{region}.{cloud.aml_api_suffix}/mlflow/v2.0{ref.id}"


def workspace_ref_of_tracking_uri(uri: str) -> WorkspaceRef | None:
    """The AML workspace an AML tracking URI points at, or None for other URIs."""
    from urllib.parse import urlsplit

    path = urlsplit(uri).path
    at = path.lower().find("/subscriptions/")
    if at < 0:
        return None
    try:
        return parse_workspace_id(path[at:])
    except AzureLinkError:
        return None
