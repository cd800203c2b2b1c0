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
        ),
        Cloud(
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn",
            "https://login.chinacloudapi.cn",
            "https://management.chinacloudapi.cn/.default",
            "api.ml.azure.cn",
            "https://studio.ml.azure.cn",
        ),
        Cloud(
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net",
            "https://login.microsoftonline.us",
            "https://management.usgovcloudapi.net/.default",
            "api.ml.azure.us",
            "https://ml.azure.us",
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
