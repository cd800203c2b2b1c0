"""The Azure clouds spark_tracking knows: where ARM and Azure AD live, which token scope ARM
(and AML's MLflow endpoint) accept, and the AML hosts. Selected by the ``azure_cloud`` setting."""

from __future__ import annotations

from typing import NamedTuple


class Cloud(NamedTuple):
    """One Azure cloud's endpoints (selected by the ``azure_cloud`` setting)."""

    name: str
    arm_endpoint: str
    authority_host: str
    #: The ARM audience; AML's MLflow endpoint accepts ARM tokens too.
    arm_scope: str
    #: Host suffix of AML's regional APIs (``<region>.<suffix>``), MLflow endpoint included.
    aml_api_suffix: str
    studio_url: str
    #: Host suffix of Azure Databricks workspaces (databricks-sdk ``environments.py`` ALL_ENVS).
    databricks_dns_zone: str = ""


CLOUDS: dict[str, Cloud] = {
    c.name.lower(): c
    for c in (
        Cloud(
            "AzureCloud",
            "https://management.azure.com",
            "https://login.microsoftonline.com",
            "https://management.azure.com/.default",
            "api.azureml.ms",
            "https://ml.azure.com",
            ".azuredatabricks.net",
        ),
        Cloud(
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn",
            "https://login.chinacloudapi.cn",
            "https://management.chinacloudapi.cn/.default",
            "api.ml.azure.cn",
            "https://studio.ml.azure.cn",
            ".databricks.azure.cn",
        ),
        Cloud(
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net",
            "https://login.microsoftonline.us",
            "https://management.usgovcloudapi.net/.default",
            "api.ml.azure.us",
            "https://ml.azure.us",
            ".databricks.azure.us",
        ),
    )
}

#: Authority hosts of the clouds above: azure-identity needs no instance discovery for them.
KNOWN_AUTHORITY_HOSTS = frozenset(c.authority_host for c in CLOUDS.values())


def cloud(name: str) -> Cloud:
    """The cloud called ``name`` (case-insensitive); a clear error names the choices."""
    try:
        return CLOUDS[str(name).strip().lower()]
    except KeyError:
        names = ", ".join(c.name for c in CLOUDS.values())
        raise ValueError(f"unknown Azure cloud {name!r}; set SPARK_TRACKING_AZURE_CLOUD to one of {names}") from None


def cloud_of_host(host: str) -> Cloud | None:
    """The cloud whose AML regional APIs ``host`` (``<region>.<suffix>[:port]``) belongs to."""
    host = host.lower().split(":")[0]
    return next((c for c in CLOUDS.values() if host.endswith("." + c.aml_api_suffix)), None)


def is_aml_host(host: str) -> bool:
    """True for a host of AML's regional APIs in any known cloud."""
    return cloud_of_host(host) is not None


def _host(url_or_host: str) -> str:
    text = str(url_or_host or "").strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].split(":", 1)[0]


def cloud_of_arm_endpoint(endpoint: str) -> Cloud | None:
    """The cloud whose Azure Resource Manager is at ``endpoint`` (a URL or host)."""
    host = _host(endpoint)
    return next((c for c in CLOUDS.values() if _host(c.arm_endpoint) == host), None) if host else None


def cloud_of_databricks_host(host: str) -> Cloud | None:
    """The cloud of an Azure Databricks workspace URL (``adb-….azuredatabricks.net``,
    ``….databricks.azure.us``, ``….databricks.azure.cn``: databricks-sdk's DNS zones)."""
    host = _host(host)
    return next((c for c in CLOUDS.values() if host.endswith(c.databricks_dns_zone)), None) if host else None


def cloud_of_uri(uri: str) -> Cloud | None:
    """The cloud of an AML tracking URI (``https://`` or ``azureml://`` on an AML regional host)."""
    return cloud_of_host(_host(uri)) if uri else None


def infer(cfg) -> tuple[Cloud, str]:
    """(the cloud, why) for a configuration: ``azure_cloud`` when a source set it, else the cloud
    of ``azure_arm_endpoint``, else of an AML ``tracking_uri``'s host, else AzureCloud. So a
    configuration that names a sovereign cloud's ARM or AML host gets that cloud's token scope
    and authority without also naming the cloud (the token scope is per cloud: docs/platform.md)."""
    if "azure_cloud" in cfg.sources:
        return cloud(cfg.azure_cloud), f"azure_cloud ({cfg.sources['azure_cloud']})"
    for name, find in (("azure_arm_endpoint", cloud_of_arm_endpoint), ("tracking_uri", cloud_of_uri)):
        value = getattr(cfg, name, None)
        found = find(value) if value else None
        if found is not None:
            return found, f"inferred from {name} ({cfg.sources.get(name, 'default')})"
    return cloud(cfg.azure_cloud), "azure_cloud (default)"
