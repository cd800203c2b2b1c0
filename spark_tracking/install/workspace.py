"""The Databricks REST boundary of the installer, through databricks-sdk. No decisions here:
each method is one or two API calls, and reads never write.

Authentication is databricks-sdk's own (``WorkspaceClient(profile=...)``): a
``~/.databrickscfg`` profile, ``DATABRICKS_HOST`` + ``DATABRICKS_TOKEN``, Azure CLI, an
Azure service principal (``ARM_CLIENT_ID``...), or OAuth — whatever the SDK finds first.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Callable

from .plan import MANAGED_FIELDS, Target

#: Clusters API: edit/update is accepted only in these states (INVALID_STATE otherwise) ...
EDITABLE_STATES = ("RUNNING", "TERMINATED")
#: ... and these pass by themselves (docs/platform.md, Clusters API)
TRANSITIONAL_STATES = ("PENDING", "RESTARTING", "RESIZING")

_log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class _ProgressReader(io.BytesIO):
    """Bytes for an upload body that report how much the HTTP client has read."""

    def __init__(self, data: bytes, progress: Progress | None):
        super().__init__(data)
        self._total = len(data)
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self._progress is not None and chunk:
            self._progress(self.tell(), self._total)
        return chunk


def client(profile: str | None = None):
    """A WorkspaceClient with the SDK's usual authentication chain."""
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient(profile=profile) if profile else WorkspaceClient()


class Workspace:
    """One Databricks workspace, as far as the installer needs it."""

    def __init__(self, ws):
        self._ws = ws

    @property
    def host(self) -> str:
        """The workspace URL, as the SDK configuration resolved it."""
        return self._ws.config.host

    # -- clusters -------------------------------------------------------------------------------
    def cluster(self, cluster_id: str) -> tuple[str, str, dict]:
        """(name, state, spec as a dict) of a cluster."""
        details = self._ws.clusters.get(cluster_id).as_dict()
        return details.get("cluster_name", ""), str(details.get("state", "")), details

    def update_cluster(self, cluster_id: str, fields: dict, mask: list[str]) -> None:
        """Partial update of ``mask`` fields; a field in the mask but not in ``fields`` is cleared."""
        from databricks.sdk.service.compute import UpdateClusterResource

        assert set(mask) <= set(MANAGED_FIELDS)
        resource = UpdateClusterResource.from_dict({k: fields[k] for k in mask if k in fields})
        self._ws.clusters.update(cluster_id, ",".join(mask), cluster=resource)

    def wait_until_editable(
        self, cluster_id: str, timeout: float = 1200.0, poll: float = 10.0, clock=None, sleep=None
    ) -> str:
        """Wait until the cluster is RUNNING or TERMINATED (the states in which Databricks accepts a
        spec change) and return its state; TimeoutError after ``timeout`` seconds."""
        import time

        clock, sleep = clock or time.monotonic, sleep or time.sleep
        deadline = clock() + timeout
        while True:
            state = self.cluster(cluster_id)[1]
            if state in EDITABLE_STATES or state not in TRANSITIONAL_STATES:
                return state
            if clock() >= deadline:
                raise TimeoutError(f"cluster {cluster_id} is still {state} after {timeout:.0f} s")
            sleep(poll)

    def start_cluster(self, cluster_id: str) -> None:
        """Start a terminated cluster (returns without waiting for it)."""
        self._ws.clusters.start(cluster_id)

    def restart_cluster(self, cluster_id: str) -> None:
        """Restart a running cluster (returns without waiting for it)."""
        self._ws.clusters.restart(cluster_id)

    # -- files ------------------------------------------------------------------------------------
    def read_file(self, target: Target, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        from databricks.sdk.errors import NotFound
        from databricks.sdk.service.files import FilesAPI
        from databricks.sdk.service.workspace import ExportFormat

        path = target.api_path(name)
        try:
            if target.kind == "volumes":
                contents = FilesAPI(self._ws.api_client).download(path).contents
                return contents.read() if contents is not None else b""
            return base64.b64decode(self._ws.workspace.export(path, format=ExportFormat.AUTO).content or "")
        except NotFound:
            return None

    def folder_exists(self, target: Target) -> bool:
        """Whether ``target``'s folder exists (a volume directory or a workspace folder)."""
        from databricks.sdk.errors import NotFound
        from databricks.sdk.service.files import FilesAPI

        try:
            if target.kind == "volumes":
                FilesAPI(self._ws.api_client).get_directory_metadata(target.folder)
            else:
                self._ws.workspace.get_status(target.folder)
            return True
        except NotFound:
            return False

    def create_folder(self, target: Target) -> None:
        """Create ``target``'s folder, parents included."""
        from databricks.sdk.service.files import FilesAPI

        if target.kind == "volumes":
            FilesAPI(self._ws.api_client).create_directory(target.folder)
        else:
            self._ws.workspace.mkdirs(target.folder)

    def write_file(self, target: Target, name: str, data: bytes, progress: Progress | None = None) -> None:
        """Upload (overwrite). Volumes stream the body and report progress as it is sent."""
        from databricks.sdk.service.files import FilesAPI
        from databricks.sdk.service.workspace import ImportFormat

        path = target.api_path(name)
        if target.kind == "volumes":
            # the plain Files API: one PUT (these files are far below multipart sizes)
            FilesAPI(self._ws.api_client).upload(path, _ProgressReader(data, progress), overwrite=True)
            return
        if progress:
            progress(0, len(data))
        self._ws.workspace.import_(
            path, content=base64.b64encode(data).decode(), format=ImportFormat.AUTO, overwrite=True
        )
        if progress:
            progress(len(data), len(data))

    def azure_resource_id(self) -> str | None:
        """This workspace's ARM resource id when the SDK configuration knows it (Azure)."""
        return getattr(self._ws.config, "azure_workspace_resource_id", None) or None

    # -- secrets ----------------------------------------------------------------------------------
    def scope_exists(self, scope: str) -> bool:
        """Whether the secret scope exists."""
        return any(s.name == scope for s in self._ws.secrets.list_scopes())

    def create_scope(self, scope: str) -> None:
        """Create a Databricks-backed secret scope."""
        self._ws.secrets.create_scope(scope)

    def secret_keys(self, scope: str) -> set[str]:
        """The keys the scope holds (empty when it does not exist): its list of keys, the Secrets
        API's way to check what is there. Values are never read: the REST ``secrets/get`` is for
        DBUtils and answers BAD_REQUEST outside a notebook (databricks-sdk
        ``SecretsAPI.get_secret`` docstring), so an installer cannot compare a stored value."""
        from databricks.sdk.errors import NotFound

        try:
            return {s.key for s in self._ws.secrets.list_secrets(scope) if s.key}
        except NotFound:
            return set()

    def current_user(self) -> str | None:
        """The user (or service principal) this client acts as, when the API says."""
        try:
            me = self._ws.current_user.me()
        except Exception as exc:  # noqa: BLE001 - only used in a note
            _log.debug("cannot tell the current user: %s", type(exc).__name__)
            return None
        return me.user_name or me.display_name

    def put_secret(self, scope: str, key: str, value: str) -> None:
        """Store ``value`` under ``scope/key`` (overwrites)."""
        self._ws.secrets.put_secret(scope, key, string_value=value)
