"""Per-session auto-configuration: ``configure()``.

configure() points MLflow at the central store and names the experiment, through MLflow's
own environment variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``) so that it
costs microseconds, needs no ``import mlflow``, and reaches subprocesses. Run-context tags and
the Spark binding are added at run creation by MLflow plugins (see ``plugins.py``).

Why the experiment goes through ``MLFLOW_EXPERIMENT_NAME`` rather than a
``mlflow.default_experiment_provider`` plugin: MLflow asks its built-in Databricks providers
first, and on a Databricks notebook they answer with a workspace notebook id that means
nothing to an AML store. The environment variable is consulted before every provider.
"""

from __future__ import annotations

import os
import sys
import threading

from . import context
from .config import MANAGED_EXPERIMENT_ENV, MANAGED_URI_ENV, Config, ConfigError

#: MLflow's request-auth plugin name, set by configure() for AML stores; this marker tells
#: spark_tracking's own value from one the user exported.
_AUTH_ENV = "MLFLOW_TRACKING_AUTH"
MANAGED_AUTH_ENV = "SPARK_TRACKING_MANAGED_AUTH"


def _logger():
    import logging  # imported on first use: this module runs in every process's startup hook

    return logging.getLogger(__name__)

#: mlflow's SQL store reads its default artifact root from this variable when it has none;
#: set for the embedded store only, so artifacts land in <home>/artifacts, not ./mlruns.
_ARTIFACT_ROOT_ENV = "_MLFLOW_SERVER_ARTIFACT_ROOT"

_lock = threading.RLock()
_current: Config | None = None
_current_uri: str | None = None


def current_config() -> Config | None:
    """The configuration of the last successful configure() in this process, or None."""
    return _current


def current_tracking_uri() -> str | None:
    """The tracking URI the last successful configure() set (an AML link resolved), or None."""
    return _current_uri


def configure(*, strict: bool | None = None, **settings) -> Config | None:
    """Point MLflow at the central store and name the experiment for this session.

    Keyword arguments are settings (see ``spark_tracking.config.SETTINGS``), e.g.
    ``tracking_uri=``, ``experiment_name=``, ``home=``; they win over every other source:
    explicit argument > Spark conf ``spark.sparktracking.*`` > ``SPARK_TRACKING_*`` /
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` > config file > embedded default.

    Idempotent: calling it again re-resolves and changes only what changed. Never raises into
    the host unless ``strict=True`` (or ``SPARK_TRACKING_STRICT=1``); a failure is logged with
    the fix and leaves MLflow as it was. Returns the resolved Config, or None when disabled or
    failed. ``SPARK_TRACKING_DISABLED=1`` turns it into a no-op.
    """
    global _current, _current_uri
    if strict is not None:
        settings["strict"] = strict
    try:
        with _lock:
            cfg = Config.resolve(settings)
            if cfg.disabled:
                _logger().debug("spark_tracking is disabled (%s)", cfg.sources.get("disabled"))
                return None
            uri, auth = _store_of(cfg)
            _apply_tracking_uri(cfg, uri, auth)
            _apply_experiment(cfg)
            _current, _current_uri = cfg, uri
            return cfg
    except Exception as exc:
        if settings.get("strict") or _strict_from_env():
            raise
        message = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        _logger().warning("spark_tracking: tracking left unconfigured: %s", message)
        return None



def _strict_from_env() -> bool:
    return os.environ.get("SPARK_TRACKING_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


def _store_of(cfg: Config) -> tuple[str, str | None]:
    """(tracking URI, MLflow request-auth name) of the session.

    The configured tracking URI if any (AML endpoints signed with the cached Azure token), else
    the linked AML workspace when a source names one (see ``azure.link``; not in Spark workers,
    which forward to the driver), else the embedded store."""
    if cfg.tracking_uri:
        if not cfg.tracking_uri.startswith(("azureml://", "https://")):  # only these can be AML's
            return cfg.tracking_uri, None
        from .azure import store

        chosen = store.for_uri(cfg.tracking_uri)
        return chosen.uri, chosen.auth
    if not context.in_spark_worker():
        from .azure import link  # files and variables only, unless a source names a workspace

        source = link.find_source(cfg)
        if source is not None:
            from .azure import AUTH_NAME

            resolved = link.resolve(cfg, source=source)
            _logger().info("spark_tracking: logging to AML workspace %s (from %s)", resolved.workspace_id,
                           resolved.source)
            return resolved.tracking_uri, AUTH_NAME
    return cfg.effective_tracking_uri, None


def _apply_auth(auth: str | None) -> None:
    current = os.environ.get(_AUTH_ENV)
    managed = os.environ.get(MANAGED_AUTH_ENV)
    if current and current != managed:
        if auth and current != auth:
            _logger().warning("spark_tracking: MLFLOW_TRACKING_AUTH=%s is set; the AML store needs %s. "
                              "Unset MLFLOW_TRACKING_AUTH to let spark_tracking sign requests", current, auth)
        return  # the user's own choice
    if auth:
        os.environ[_AUTH_ENV] = os.environ[MANAGED_AUTH_ENV] = auth
    else:
        os.environ.pop(_AUTH_ENV, None)
        os.environ.pop(MANAGED_AUTH_ENV, None)


def _apply_tracking_uri(cfg: Config, uri: str, auth: str | None = None) -> None:
    _apply_auth(auth)
    if uri == cfg.embedded_store_uri:
        os.makedirs(cfg.home, exist_ok=True)
        os.environ.setdefault(_ARTIFACT_ROOT_ENV, cfg.embedded_artifact_root)
    previous = os.environ.get(MANAGED_URI_ENV)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ[MANAGED_URI_ENV] = uri
    fluent_utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if fluent_utils is not None:
        # mlflow is already imported: its global URI (set by mlflow.set_tracking_uri) wins over
        # the environment, so update it too, unless the user set it to something of their own.
        set_uri = getattr(fluent_utils, "_tracking_uri", None)
        if set_uri is None or set_uri in (previous, uri):
            fluent_utils.set_tracking_uri(uri)


def _apply_experiment(cfg: Config) -> None:
    source = cfg.sources.get("experiment_name", "default")
    if source == "env MLFLOW_EXPERIMENT_NAME":
        return  # the user's own choice
    if source == "default" and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return
    name = cfg.experiment_name or context.experiment_name_for(context.detect())
    if not name:
        _retry_experiment_in_ipython()
        return
    os.environ["MLFLOW_EXPERIMENT_NAME"] = name
    os.environ[MANAGED_EXPERIMENT_ENV] = name


_ipython_hooked = False


def _retry_experiment_in_ipython() -> None:
    """In a notebook the path may only be known once a cell runs: look again before each cell."""
    global _ipython_hooked
    ip_mod = sys.modules.get("IPython")
    shell = ip_mod.get_ipython() if ip_mod is not None else None
    if shell is None or _ipython_hooked:
        return
    _ipython_hooked = True

    def pre_run_cell(*_args):
        if os.environ.get(MANAGED_EXPERIMENT_ENV) or _current is None:
            try:
                shell.events.unregister("pre_run_cell", pre_run_cell)
            except ValueError:
                pass
            return
        name = context.experiment_name_for(context.detect())
        if name and not os.environ.get("MLFLOW_EXPERIMENT_NAME"):
            os.environ["MLFLOW_EXPERIMENT_NAME"] = name
            os.environ[MANAGED_EXPERIMENT_ENV] = name

    shell.events.register("pre_run_cell", pre_run_cell)
