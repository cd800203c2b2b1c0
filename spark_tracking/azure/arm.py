"""The thin ARM boundary: GET a resource, list Databricks workspaces. Errors become
AzureLinkError naming the resource, the HTTP answer and the fix; no business logic here."""

from __future__ import annotations

from typing import Any

from . import AzureLinkError
from .credentials import TokenProvider, describe_identity

API_VERSIONS = {
    "Microsoft.MachineLearningServices/workspaces": "2024-04-01",
    "Microsoft.Databricks/workspaces": "2024-05-01",
}


class ArmClient:
    """Azure Resource Manager, as far as the link needs it: GETs to ``endpoint`` (the
    ``azure_arm_endpoint`` setting, else the cloud's) with a bearer token from ``tokens``,
    retried on 429 and 5xx with Retry-After; failures raise :class:`AzureLinkError` with the fix."""

    def __init__(self, endpoint: str, tokens: TokenProvider, timeout: float = 30.0, session=None):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.endpoint = endpoint.rstrip("/")
        self.tokens = tokens
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            # ARM throttles with 429 and Retry-After; brief 5xx happen. GETs are safe to repeat.
            retry = Retry(
                total=3,
                connect=1,
                backoff_factor=0.5,
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=("GET",),
                respect_retry_after_header=True,
                raise_on_status=False,
            )
            session.mount("https://", HTTPAdapter(max_retries=retry))
            session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session = session

    def get(self, resource_id: str, what: str, fix_404: str) -> dict[str, Any]:
        """GET ``resource_id`` (an ARM id) and return its JSON."""
        provider = "/".join(resource_id.split("/providers/", 1)[-1].split("/")[:2])
        version = API_VERSIONS.get(provider, "2022-09-01")
        return self._request(f"{self.endpoint}{resource_id}?api-version={version}", what, resource_id, fix_404)

    def list_databricks_workspaces(self, subscription_id: str) -> list[dict[str, Any]]:
        """Every Databricks workspace of the subscription, as ARM returns them (all pages)."""
        url: str | None = (
            f"{self.endpoint}/subscriptions/{subscription_id}/providers/Microsoft.Databricks/workspaces"
            f"?api-version={API_VERSIONS['Microsoft.Databricks/workspaces']}"
        )
        items: list[dict[str, Any]] = []
        while url:
            page = self._request(
                url, "Databricks workspaces of subscription", subscription_id, "check the subscription id"
            )
            items.extend(page.get("value") or [])
            url = page.get("nextLink")
        return items

    def _request(self, url: str, what: str, name: str, fix_404: str) -> dict[str, Any]:
        import requests

        token = self.tokens.token()
        try:
            response = self.session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise AzureLinkError(
                f"Azure Resource Manager at {self.endpoint} is unreachable while reading {what} {name}: "
                f"{type(exc).__name__}: {exc}. Check this machine's network and proxy settings, and that "
                f"azure_cloud (SPARK_TRACKING_AZURE_CLOUD) names the workspace's cloud"
            ) from None
        if response.status_code == 200:
            return response.json()
        code, message = _arm_error(response)
        answer = f"HTTP {response.status_code} {code}: {message}".rstrip(": ")
        if response.status_code == 404:
            raise AzureLinkError(f"{what} {name} was not found ({answer}). {fix_404}")
        if response.status_code == 401:
            raise AzureLinkError(
                f"ARM did not accept the token of {describe_identity(token)} reading {what} {name} ({answer}). "
                f"Check that azure_cloud (SPARK_TRACKING_AZURE_CLOUD) is the workspace's cloud and AZURE_TENANT_ID "
                f"the tenant of the subscription"
            )
        if response.status_code == 403:
            raise AzureLinkError(
                f"ARM refused to let {describe_identity(token)} read {what} {name} ({answer}). Grant it the "
                f"Reader role on that resource (or a role with */read on it), and check that AZURE_TENANT_ID "
                f"is the tenant of the subscription"
            )
        raise AzureLinkError(f"ARM failed to return {what} {name} ({answer}); try again later")


def _arm_error(response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or ""), str(error.get("message") or "")
    except ValueError:
        return "", response.text[:200]
