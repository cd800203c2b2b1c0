"""A session's AML link resolved into its store: at ``configure()``, or at MLflow's first request
in a process whose link was not in the node's cache at interpreter start (``resolve_pending``,
called by the ``spark-tracking-aml`` store plugin); and what happens when it fails.

A link that fails never scatters runs: the session logs to the embedded store in ``home`` (a
known place), says so on stderr (a notebook shows it under the cell) and records it for
``spark-tracking doctor``, with the command that moves the runs once the link works. In a
Databricks job (a job cluster, or a job id in the notebook context) the default is strict
instead: the driver's disk goes with the job cluster, so the link failure fails the run (and the
job) with the cause and the fix; ``strict=false`` set explicitly brings the fallback back.
"""

from __future__ import annotations

import os
import sys

from .. import context, state
from ..config import Config
from ..state import StoreChoice, logger
from . import AzureLinkError, link, store

#: Written to ``<home>`` when a session fell back to the embedded store (read by doctor).
FALLBACK_FILE = "link-failure.json"


def resolve(cfg: Config, source) -> StoreChoice:
    """Resolve a link source (ARM, unless cached) into the store; AzureLinkError when it fails."""
    resolved = link.resolve(cfg, source=source)
    chosen = store.for_link(resolved)
    if chosen.auth:
        store.check_request_auth_supported()
    logger().info("spark_tracking: logging to AML workspace %s (from %s)", resolved.workspace_id, resolved.source)
    return StoreChoice(
        chosen.uri, chosen.auth, f"the Azure ML workspace {resolved.workspace_id} named by {source.description}"
    )


def resolve_pending() -> str:
    """Resolve the link this session left for MLflow's first request; returns the tracking URI
    the session uses from now on (the embedded store, with a message, when the link fails)."""
    with state.lock:
        choice = state.current_choice()
        uri = state.current_tracking_uri()
        if choice is not None and choice.pending is None and uri:
            return uri
        cfg = state.active_config()
        try:
            source = choice.pending if choice is not None and choice.pending is not None else link.find_source(cfg)
            if source is None:
                raise AzureLinkError(
                    "no Azure ML workspace is named in this process any more (settings changed "
                    "since the session started)"
                )
            choice = resolve(cfg, source)
        except AzureLinkError as exc:
            choice = fall_back(cfg, exc)  # raises when the session is strict (a job, by default)
        state.use(cfg, choice)
        return choice.uri


def _job_strictness(cfg: Config) -> str | None:
    """Where this session runs when that makes it strict by default, or None.

    Unless ``strict`` was set explicitly, a Databricks job (``context.job_cluster_reason``) is
    strict: a job cluster deletes the driver's disk minutes after the job, which still succeeds,
    so a fallback there loses the runs without anyone seeing it."""
    if "strict" in cfg.sources:  # strict=false chosen explicitly: the fallback is wanted
        return None
    return context.job_cluster_reason()


def fall_back(cfg: Config, exc: BaseException) -> StoreChoice:
    """The link failed: the embedded store at a known home, said where the user looks; or, in a
    strict session (a job, by default), an error that fails the run with the cause and the fix."""
    if cfg.strict or state.env_flag("SPARK_TRACKING_STRICT"):
        raise exc
    job = _job_strictness(cfg)
    if job is not None:
        failed = type(exc)(
            f"the Azure ML link failed: {exc}\nThis session runs in {job}: its runs are not sent to the "
            f"embedded store on the driver's local disk, which is deleted with the cluster, so the run fails "
            f"instead. Fix the link (spark-tracking doctor checks each step; an expired service-principal "
            f"secret: store a new one in the secret scope), or set SPARK_TRACKING_STRICT=false to log to the "
            f"local store anyway"
        )
        failed.fatal = True  # type: ignore[attr-defined]  # configure() raises it too
        logger().error("spark_tracking: %s", failed)
        raise failed from exc
    uri = cfg.embedded_store_uri
    where = (
        "the driver's local disk: it is gone when the cluster stops"
        if os.environ.get("DATABRICKS_RUNTIME_VERSION")
        else "this machine's disk"
    )
    message = (
        f"spark_tracking: the Azure ML link failed: {exc}\n"
        f"spark_tracking: runs of this session go to the embedded store {uri} ({where}), not to Azure ML. "
        f"Fix the link (spark-tracking doctor checks each step), then move them: "
        f"spark-tracking move-runs --from {uri}"
    )
    print(message, file=sys.stderr)  # a notebook shows stderr under the cell that logged
    logger().warning("%s", message)
    _record_fallback(cfg, str(exc), uri)
    return StoreChoice(uri, None, f"embedded store, because the Azure ML link failed: {exc}")


def _record_fallback(cfg: Config, error: str, uri: str) -> None:
    import json
    import time

    try:
        os.makedirs(cfg.home, exist_ok=True)
        path = os.path.join(cfg.home, FALLBACK_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump({"time": time.time(), "error": error, "store": uri}, fh)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # the message above is what the user sees; this record only helps doctor


def read_fallback(cfg: Config) -> dict | None:
    """The last fallback a session on this machine recorded in ``home``, or None."""
    import json

    try:
        with open(os.path.join(cfg.home, FALLBACK_FILE), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
