"""Azure AD tokens through azure-identity, cached per process.

Which credential (setting ``azure_credential``, env ``SPARK_TRACKING_AZURE_CREDENTIAL``):

- ``auto`` (default): azure-identity's ``DefaultAzureCredential`` limited to the sources that
  make sense on a cluster or a laptop, tried in this order: a service principal from the
  environment (``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID`` and ``AZURE_CLIENT_SECRET`` or
  ``AZURE_CLIENT_CERTIFICATE_PATH``: on a cluster, environment variables filled from a
  Databricks secret scope), workload identity, managed identity, the Azure CLI.
- ``service_principal``, ``workload_identity``, ``managed_identity``, ``azure_cli``: only that one.

A source that is not there is skipped; one that fails (a wrong secret) stops the chain. The
error lists every source tried and how to fix each. Tokens live only in this process's memory
(never in files, logs or the environment), are shared by all threads and are renewed before
they expire: at most five minutes, or half the token's lifetime, ahead.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, NamedTuple

from . import AzureLinkError
from .clouds import KNOWN_AUTHORITY_HOSTS, Cloud

logger = logging.getLogger(__name__)


class Source(NamedTuple):
    """A credential source: its ``azure_credential`` name, what it is, and how to make it work."""

    name: str
    what: str
    fix: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "service_principal",
            "service principal from the environment",
            "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH); "
            "on a cluster as environment variables from a secret scope, e.g. "
            "AZURE_CLIENT_SECRET={{secrets/<scope>/azure-client-secret}} ('spark-tracking install' writes them)",
        ),
        Source(
            "workload_identity",
            "workload identity",
            "set AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID (Kubernetes workload identity)",
        ),
        Source(
            "managed_identity",
            "managed identity",
            "run on an Azure VM whose managed identity has access to the workspace (AZURE_CLIENT_ID picks "
            "a user-assigned one)",
        ),
        Source("azure_cli", "Azure CLI", "run 'az login' (for your own machine; clusters use a service principal)"),
    )
}
CHOICES = ("auto", *SOURCES)


def _clock() -> float:
    return time.time()  # looked up per call, so a test can move time for the whole process


def build_credential(kind: str, cloud: Cloud, authority_host: str | None = None):
    """An azure-identity credential for ``kind`` (one of CHOICES) in ``cloud``."""
    from azure.identity import (
        AzureCliCredential,
        DefaultAzureCredential,
        EnvironmentCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    authority = authority_host or cloud.authority_host
    common: dict[str, Any] = {"authority": authority}
    if authority not in KNOWN_AUTHORITY_HOSTS:
        # an authority of no public cloud (Azure Stack, a test double): MSAL would otherwise ask
        # login.microsoftonline.com to validate it
        common["disable_instance_discovery"] = True
    if kind == "auto":
        return DefaultAzureCredential(
            exclude_shared_token_cache_credential=True,
            exclude_visual_studio_code_credential=True,
            exclude_powershell_credential=True,
            exclude_developer_cli_credential=True,
            exclude_interactive_browser_credential=True,
            **common,
        )
    if kind == "service_principal":
        return EnvironmentCredential(**common)
    if kind == "workload_identity":
        return WorkloadIdentityCredential(**common)
    if kind == "managed_identity":
        return ManagedIdentityCredential()
    if kind == "azure_cli":
        return AzureCliCredential()
    raise AzureLinkError(
        f"azure_credential={kind!r} is not one of {', '.join(CHOICES)}; "
        "set SPARK_TRACKING_AZURE_CREDENTIAL to one of them"
    )


def explain_failure(kind: str, scope: str, exc: Exception) -> AzureLinkError:
    """The credential error with every source tried and the fix for each."""
    tried = list(SOURCES.values()) if kind == "auto" else [SOURCES[kind]]
    fixes = "\n".join(f"  - {s.what}: {s.fix}" for s in tried)
    detail = str(getattr(exc, "message", None) or exc).strip()
    return AzureLinkError(
        f"no Azure AD token for {scope} (azure_credential={kind}): {detail}\n"
        f"Sources tried ({'in this order' if len(tried) > 1 else 'only this one'}) and how to make each work:\n"
        f"{fixes}"
    )


class TokenProvider:
    """One scope's bearer token for the whole process: thread-safe, renewed before expiry."""

    #: renew this long before expiry at most (half the lifetime for shorter tokens)
    MARGIN = 300.0

    def __init__(self, credential, scope: str, kind: str = "auto", clock: Callable[[], float] = _clock):
        self.credential = credential
        self.scope = scope
        self.kind = kind
        self.clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_on = 0.0
        self._renew_at = 0.0

    def token(self) -> str:
        """A token valid for at least the renewal margin; obtains a new one when due."""
        with self._lock:
            now = self.clock()
            if self._token is not None and now < self._renew_at:
                return self._token
            try:
                access = self.credential.get_token(self.scope)
            except Exception as exc:  # noqa: BLE001 - any credential failure: the current token while it lasts, else explained
                if self._token is not None and now < self._expires_on - 30:
                    # keep working on the current token while it lasts; try again next call
                    logger.warning(
                        "spark_tracking: renewing the Azure token failed (%s); the current "
                        "one is valid for %.0f s more",
                        type(exc).__name__,
                        self._expires_on - now,
                    )
                    return self._token
                raise explain_failure(self.kind, self.scope, exc) from None
            lifetime = max(0.0, access.expires_on - now)
            self._token, self._expires_on = access.token, float(access.expires_on)
            self._renew_at = access.expires_on - min(self.MARGIN, lifetime / 2)
            return self._token

    def expires_on(self) -> float:
        """When the current token expires (seconds since the epoch; 0 before the first token)."""
        return self._expires_on


class ProviderCredential:
    """A ``TokenProvider`` as an azure-core ``TokenCredential``, for clients that take one
    (azureml-mlflow): they get this process's token, renewed as usual, for the ARM scope of the
    configured cloud, whichever scope they ask for (AML's endpoints accept only that one)."""

    def __init__(self, provider: TokenProvider):
        self.provider = provider

    def get_token(self, *scopes: str, **kwargs):
        """The current ARM-audience token as an ``AccessToken``."""
        from azure.core.credentials import AccessToken

        token = self.provider.token()
        return AccessToken(token, int(self.provider.expires_on()))


_providers: dict[tuple, TokenProvider] = {}
_providers_lock = threading.Lock()


def token_provider(cloud: Cloud, kind: str = "auto", authority_host: str | None = None) -> TokenProvider:
    """The process-wide provider of ARM-audience tokens (used for ARM and AML's MLflow endpoint)."""
    key = (cloud.name, kind, authority_host)
    with _providers_lock:
        provider = _providers.get(key)
        if provider is None:
            try:
                credential = build_credential(kind, cloud, authority_host)
            except (ValueError, OSError) as exc:  # an unreadable certificate, a malformed setting
                raise explain_failure(kind, cloud.arm_scope, exc) from None
            provider = _providers[key] = TokenProvider(credential, cloud.arm_scope, kind)
        return provider


def provider_for_config(cfg, chosen=None) -> TokenProvider:
    """The token provider of ``cfg``'s settings ``azure_cloud`` (or the cloud ``clouds.infer``
    finds from ``azure_arm_endpoint`` / an AML ``tracking_uri``; ``chosen`` overrides it),
    ``azure_credential`` and ``azure_authority_host``; :class:`AzureLinkError` for an unknown cloud."""
    from .clouds import infer

    try:
        chosen = chosen or infer(cfg)[0]
    except ValueError as exc:
        raise AzureLinkError(str(exc)) from None
    return token_provider(chosen, cfg.azure_credential, cfg.azure_authority_host)


def reset() -> None:
    """Forget every cached credential and token (tests; after the credential changed)."""
    with _providers_lock:
        _providers.clear()


def token_claims(token: str) -> dict:
    """The (unverified) claims of a JWT access token: who it is for, for error messages."""
    import base64
    import json

    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def describe_identity(token: str) -> str:
    """Who ``token`` was issued to (app id, object id, user, tenant), for error messages."""
    claims = token_claims(token)
    parts = [f"{k}={claims[k]}" for k in ("appid", "oid", "upn", "tid") if claims.get(k)]
    return "the identity " + (", ".join(parts) if parts else "of the token")
