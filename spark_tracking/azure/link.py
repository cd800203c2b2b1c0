"""Which AML workspace this session logs to, resolved from its sources in a fixed order.

The first source that names a workspace wins:

1. ``aml_workspace_id`` (an ARM id), or ``subscription_id`` + ``resource_group`` +
   ``workspace_name``: each an argument, Spark conf ``spark.sparktracking.*``, environment
   ``SPARK_TRACKING_*`` or the spark_tracking config file (in that order, as every setting);
2. an AML ``config.json`` in the working directory or a parent (also ``.azureml/config.json``),
   as ``Workspace.from_config()`` finds it;
3. the Databricks workspace's own link: ARM ``properties.parameters.amlWorkspaceId`` of the
   ``Microsoft.Databricks/workspaces`` resource, whose id is the setting
   ``databricks_resource_id``, else the databricks-sdk configuration
   (``DATABRICKS_AZURE_RESOURCE_ID``, or ``azure_workspace_resource_id`` of the profile in
   ``~/.databrickscfg``), else found from the cluster tags of a running Spark session
   (``spark.databricks.clusterUsageTags.azureSubscriptionId`` and ``spark.databricks.workspaceUrl``).

Then the AML workspace resource is read from ARM for its region and MLflow tracking URI. A
resolved link is cached (no secrets: ids and URLs) in ``<home>/aml-link.json`` for twelve
hours, so a new Python process on the same machine does not call ARM again.
"""

from __future__ import annotations

import os
import time

from . import AML_CONFIG_KEYS, AzureLinkError

TYPE_CHECKING = False  # the type checker's view only: ``typing`` costs every process start
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# This module runs in the startup hook of every process (configure() asks find_source whether
# any source names a workspace): what only a found source needs is imported when it is found,
# and nothing here imports ``typing`` (annotations are strings nothing evaluates).

CACHE_FILE = "aml-link.json"
CACHE_SECONDS = 12 * 3600
DATABRICKS_SDK_ENV = "DATABRICKS_AZURE_RESOURCE_ID"
_TAG_SUBSCRIPTION = "spark.databricks.clusterUsageTags.azureSubscriptionId"
_WORKSPACE_URL = "spark.databricks.workspaceUrl"


class Record:
    """A small immutable record (a NamedTuple without importing ``typing``)."""

    _fields: tuple = ()
    __slots__ = ()

    def __init__(self, *args, **kwargs):
        values = dict(zip(self._fields, args), **kwargs)
        for name in self._fields:
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _asdict(self) -> dict:
        return {name: getattr(self, name) for name in self._fields}

    def __iter__(self):
        return iter(tuple(getattr(self, name) for name in self._fields))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._asdict() == self._asdict()

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._asdict().items())})"


class Link(Record):
    """A resolved link: what ``spark-tracking link`` records and a session logs to:
    ``workspace_id``, ``tracking_uri``, ``region``, ``cloud``, ``source``."""

    _fields = ("workspace_id", "tracking_uri", "region", "cloud", "source")
    __slots__ = _fields
    workspace_id: str
    tracking_uri: str
    region: str
    cloud: str
    source: str

    @property
    def workspace(self):
        """The workspace as a :class:`WorkspaceRef` (subscription, resource group, name)."""
        from .resources import parse_workspace_id

        return parse_workspace_id(self.workspace_id)


class Source(Record):
    """Where the workspace comes from, found without the network: ``kind`` is "aml" (a
    workspace ref), "databricks" (a Databricks resource id), "databricks-url" (subscription and
    workspace URL from the cluster tags) or "databricks-cluster" (the same, read once Spark is
    up); ``value``; ``description``."""

    _fields = ("kind", "value", "description")
    __slots__ = _fields
    kind: str
    value: Any
    description: str


def find_source(
    cfg,
    *,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    spark_conf: Mapping[str, str] | None = None,
    use_profiles: bool = False,
) -> Source | None:
    """The first source that names a workspace, or None. Cheap: files and variables only
    (``use_profiles`` also reads the databricks-sdk profile file; the link command does).

    On a Databricks driver with Azure credentials configured but no other source and no Spark
    session yet (interpreter start), the workspace's own link is a source still to be read: the
    cluster tags are read when it is resolved, at MLflow's first request. So "follow the
    workspace's link" never ends in the local embedded store only because Spark was not up."""
    environ = os.environ if environ is None else environ
    named = any(
        getattr(cfg, k)
        for k in ("aml_workspace_id", "subscription_id", "resource_group", "workspace_name", "databricks_resource_id")
    )
    config_path = None if named else find_aml_config(cwd)
    if not (named or config_path or environ.get(DATABRICKS_SDK_ENV) or use_profiles):
        conf = spark_conf if spark_conf is not None else _spark_conf()
        if not (conf.get(_TAG_SUBSCRIPTION) and conf.get(_WORKSPACE_URL)):
            if environ.get("DATABRICKS_RUNTIME_VERSION") and _azure_credentials_configured(cfg, environ):
                return Source(
                    "databricks-cluster", None, "the Databricks workspace's link (cluster tags, read once Spark is up)"
                )
            return None  # the common case, at every process start: nothing names a workspace
    return _first_source(cfg, config_path, environ, spark_conf, use_profiles)


def _azure_credentials_configured(cfg, environ: Mapping[str, str]) -> bool:
    """An admin gave this machine an Azure identity (spark-tracking install does): then the
    Databricks workspace's own AML link is worth following."""
    return bool(
        environ.get("AZURE_CLIENT_ID")
        or environ.get("AZURE_FEDERATED_TOKEN_FILE")
        or cfg.sources.get("azure_credential")
    )


def _first_source(cfg, config_path, environ, spark_conf, use_profiles) -> Source | None:
    from .resources import DATABRICKS_PROVIDER, WorkspaceRef, parse_workspace_id, read_aml_config

    if cfg.aml_workspace_id:
        return Source(
            "aml", parse_workspace_id(cfg.aml_workspace_id), f"aml_workspace_id ({cfg.sources.get('aml_workspace_id')})"
        )
    parts = {k: getattr(cfg, k) for k in ("subscription_id", "resource_group", "workspace_name")}
    if any(parts.values()):
        missing = [k for k, v in parts.items() if not v]
        if missing:
            given = ", ".join(f"{k} ({cfg.sources.get(k)})" for k, v in parts.items() if v)
            raise AzureLinkError(
                f"{given} set but {', '.join(missing)} not: set all three (SPARK_TRACKING_SUBSCRIPTION_ID, "
                f"SPARK_TRACKING_RESOURCE_GROUP, SPARK_TRACKING_WORKSPACE_NAME) or aml_workspace_id"
            )
        return Source(
            "aml",
            WorkspaceRef(*parts.values()),
            f"subscription_id, resource_group, workspace_name ({cfg.sources.get('workspace_name')})",
        )
    if config_path:
        return Source("aml", read_aml_config(config_path), f"AML config file {config_path}")
    if cfg.databricks_resource_id:
        return Source(
            "databricks",
            parse_workspace_id(cfg.databricks_resource_id, DATABRICKS_PROVIDER, "databricks_resource_id"),
            f"the Databricks workspace's link (databricks_resource_id, {cfg.sources.get('databricks_resource_id')})",
        )
    sdk_id = environ.get(DATABRICKS_SDK_ENV) or (_profile_resource_id(environ) if use_profiles else None)
    if sdk_id:
        return Source(
            "databricks",
            parse_workspace_id(sdk_id, DATABRICKS_PROVIDER, DATABRICKS_SDK_ENV),
            "the Databricks workspace's link (databricks-sdk configuration)",
        )
    conf = spark_conf if spark_conf is not None else _spark_conf()
    if conf.get(_TAG_SUBSCRIPTION) and conf.get(_WORKSPACE_URL):
        return Source(
            "databricks-url",
            (conf[_TAG_SUBSCRIPTION], conf[_WORKSPACE_URL]),
            "the Databricks workspace's link (cluster tags)",
        )
    return None


def find_aml_config(start: str | None = None) -> str | None:
    """The AML ``config.json`` that ``Workspace.from_config()`` would read: in ``start`` (the
    working directory) or a parent, as ``.azureml/config.json`` or ``config.json``. A
    ``config.json`` without any AML key is someone else's file and is passed over."""
    folder = os.path.abspath(start or os.getcwd())
    while True:
        for candidate in (os.path.join(folder, ".azureml", "config.json"), os.path.join(folder, "config.json")):
            if os.path.isfile(candidate) and _looks_like_aml_config(candidate):
                return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _looks_like_aml_config(path: str) -> bool:
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and any(k in data for k in (*AML_CONFIG_KEYS, "Scope"))


def _profile_resource_id(environ: Mapping[str, str]) -> str | None:
    """``azure_workspace_resource_id`` of the databricks-sdk profile (its file and profile variables)."""
    import configparser

    path = os.path.expanduser(environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg")
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None
    profile = environ.get("DATABRICKS_CONFIG_PROFILE") or "DEFAULT"
    section = parser.defaults() if profile == "DEFAULT" else (parser[profile] if parser.has_section(profile) else {})
    return section.get("azure_workspace_resource_id") or None


def _spark_conf() -> dict[str, str]:
    from ..config import active_spark_conf

    return active_spark_conf(lambda key: key in (_TAG_SUBSCRIPTION, _WORKSPACE_URL))


def cache_key(cfg, source: Source) -> str:
    """Names a link in the cache: the cloud, the ARM endpoint and what the source names."""
    named = getattr(source.value, "id", source.value)  # an ARM id, or (subscription, workspace URL)
    return f"{str(cfg.azure_cloud).lower()}|{cfg.azure_arm_endpoint or ''}|{source.kind}|{named}"


def cached(cfg, source: Source) -> Link | None:
    """The link of ``source`` from the cache in ``<home>`` when it is fresh, else None. Reads
    one file: what the startup hook may do (a new process on a node where the link was
    resolved once needs no ARM call)."""
    entry = _read_cache(os.path.join(cfg.home, CACHE_FILE)).get(cache_key(cfg, source))
    if entry and time.time() - entry.get("resolved_at", 0) < CACHE_SECONDS:
        try:
            return Link(**{f: entry[f] for f in Link._fields})
        except KeyError:  # an entry of an older layout: resolve again
            return None
    return None


def resolve(cfg, *, arm=None, source: Source | None = None, use_cache: bool = True, **find_kwargs) -> Link:
    """Resolve the link (ARM calls through ``arm``, built from ``cfg`` when None)."""
    from .clouds import cloud_of_uri, infer
    from .resources import aml_link_of_databricks, parse_workspace_id, tracking_uri_of

    source = source or find_source(cfg, **find_kwargs)
    if source is None:
        raise AzureLinkError(
            "no Azure ML workspace is named: set SPARK_TRACKING_AML_WORKSPACE_ID (or subscription_id, "
            "resource_group, workspace_name), put the workspace's config.json in the working directory, "
            "or link the Databricks workspace to an AML workspace in the Azure portal"
        )
    try:
        chosen, _ = infer(cfg)
    except ValueError as exc:
        raise AzureLinkError(str(exc)) from None
    key = cache_key(cfg, source)
    cache_path = os.path.join(cfg.home, CACHE_FILE)
    if use_cache:
        found = cached(cfg, source)
        if found is not None:
            return found
    if arm is None:
        from .arm import ArmClient
        from .credentials import provider_for_config

        arm = ArmClient(cfg.azure_arm_endpoint or chosen.arm_endpoint, provider_for_config(cfg))
    if source.kind == "aml":
        ref = source.value
    else:
        if source.kind == "databricks":
            databricks_id = source.value.id
        else:
            tags = source.value if source.kind == "databricks-url" else _cluster_tags()
            databricks_id = _find_databricks_id(arm, *tags)
        resource = arm.get(
            databricks_id,
            "Databricks workspace",
            "Check databricks_resource_id / DATABRICKS_AZURE_RESOURCE_ID (the 'Resource ID' on "
            "the Databricks workspace's Properties page)",
        )
        ref = parse_workspace_id(
            aml_link_of_databricks(resource, databricks_id),
            what=f"amlWorkspaceId of Databricks workspace {databricks_id}",
        )
    workspace = arm.get(
        ref.id,
        "Azure ML workspace",
        f"Check the workspace id from {source.description}: subscription, resource group and "
        f"name must match the workspace's 'Resource ID' in the Azure portal",
    )
    tracking_uri = tracking_uri_of(workspace, ref, chosen)
    # the cloud of the AML host ARM reports is the workspace's (a sovereign cloud's ARM reports
    # its own AML hosts): recorded with the link, it gives sessions that cloud's token scope
    link = Link(
        ref.id,
        tracking_uri,
        str(workspace.get("location") or ""),
        (cloud_of_uri(tracking_uri) or chosen).name,
        source.description,
    )
    if use_cache:
        _write_cache(cache_path, key, link)
    return link


def _cluster_tags() -> tuple[str, str]:
    conf = _spark_conf()
    if not (conf.get(_TAG_SUBSCRIPTION) and conf.get(_WORKSPACE_URL)):
        raise AzureLinkError(
            "the Databricks workspace's link is read from the cluster tags of a running Spark session, and "
            "none is running in this process. Fix: set SPARK_TRACKING_DATABRICKS_RESOURCE_ID to the workspace's "
            "ARM id ('spark-tracking install' does), or start Spark before the first MLflow call"
        )
    return conf[_TAG_SUBSCRIPTION], conf[_WORKSPACE_URL]


def _find_databricks_id(arm, subscription_id: str, workspace_url: str) -> str:
    host = workspace_url.replace("https://", "").strip("/").lower()
    for item in arm.list_databricks_workspaces(subscription_id):
        if str((item.get("properties") or {}).get("workspaceUrl") or "").lower() == host:
            return item["id"]
    raise AzureLinkError(
        f"no Databricks workspace with URL {host} is visible in subscription {subscription_id}: grant the "
        f"credential Reader on the Databricks workspace, or set SPARK_TRACKING_DATABRICKS_RESOURCE_ID"
    )


def _read_cache(path: str) -> dict[str, Any]:
    from ..config import load_json_file  # not json: this runs at every interpreter start

    try:
        data = load_json_file(path)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: str, key: str, link: Link) -> None:
    import json
    import logging

    data = _read_cache(path)
    data[key] = {**link._asdict(), "resolved_at": time.time()}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home only costs the next process an ARM call
        logging.getLogger(__name__).debug("spark_tracking: could not cache the AML link in %s: %s", path, exc)
