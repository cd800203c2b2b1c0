"""Per-session auto-configuration: ``configure()``.

configure() points MLflow at the central store and names the experiment, through MLflow's
own environment variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``) so that it
costs microseconds, needs no ``import mlflow``, and reaches subprocesses. Run-context tags and
the Spark binding are added at run creation by MLflow plugins (see ``plugins.py``).

Which store (``choose_store``), first that applies:

1. ``tracking_uri`` set by an argument, Spark conf, ``SPARK_TRACKING_TRACKING_URI``, a
   ``MLFLOW_TRACKING_URI`` the user exported, or the config file;
2. the Azure ML workspace a link source names (``azure.link``), outside Spark workers;
3. the platform default: ``MLFLOW_TRACKING_URI=databricks`` as the Databricks Runtime sets it
   (``config.platform_default_uri``) — an AML link wins over it;
4. the embedded store ``sqlite:///<home>/mlflow.db``.

Interpreter start (the startup hook) reads only files and the environment: a link that is not
in the node's link cache yet is resolved at MLflow's first request in the process (the
``spark-tracking-aml`` tracking-store plugin, ``azure.tracking_store.lazy_link_store``). An explicit
``configure()`` call resolves it at once.

A link that fails never scatters runs: the embedded store at a known home with a message, or, in a
Databricks job, an error that fails the run (``azure.session_link``). The session's state (which
configuration and store are in force) lives in ``state``; whether it is configured, as users are
told, in ``status``.

The experiment: when the name is known at configure time (a script, a Jupyter notebook) it goes
to ``MLFLOW_EXPERIMENT_NAME``; a Databricks notebook's path is only known once its kernel and
dbutils are up, so ``plugins.SparkTrackingExperiment`` (a default-experiment provider asked
before MLflow's Databricks notebook provider) names it at the first run. Against AML the name is
the last segment of the path (``/Users/me/proj/train`` -> ``train``): AML cannot find
experiments whose names hold "/" (azure-sdk-for-python#45209); azureml-mlflow does the same.
"""

from __future__ import annotations

import os
import sys

from . import context, state
from .config import MANAGED_EXPERIMENT_ENV, Config, ConfigError
from .state import StoreChoice, active_config, current_choice, current_config, current_tracking_uri, logger

__all__ = [
    "StoreChoice",
    "active_config",
    "choose_store",
    "configure",
    "current_choice",
    "current_config",
    "current_tracking_uri",
    "default_experiment_name",
]

#: URI schemes an AML endpoint can be spoken in (checked before importing ``azure.store``).
_AML_SCHEMES = ("azureml://", "https://", "spark-tracking-aml:")


def configure(*, strict: bool | None = None, resolve_link: bool = True, **settings) -> Config | None:
    """Point MLflow at the central store and name the experiment for this session.

    Keyword arguments are settings (see ``spark_tracking.settings.SETTINGS``), e.g.
    ``tracking_uri=``, ``experiment_name=``, ``home=``; they win over every other source:
    explicit argument > Spark conf ``spark.sparktracking.*`` > ``SPARK_TRACKING_*`` /
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` > config file > platform default
    (``MLFLOW_TRACKING_URI=databricks`` from the Databricks Runtime) > embedded default.

    ``resolve_link=False`` (the startup hook) never touches the network: an AML link missing
    from the node's cache is resolved at MLflow's first request instead.

    Idempotent: calling it again re-resolves and changes only what changed. Never raises into
    the host unless ``strict=True`` (or ``SPARK_TRACKING_STRICT=1``); a configuration error is
    logged with the fix and leaves MLflow as it was; a link that fails sends the session to the
    embedded store with a message (see the module docstring). Returns the resolved Config, or
    None when disabled or failed. ``SPARK_TRACKING_DISABLED=1`` turns it into a no-op.
    """
    if strict is not None:
        settings["strict"] = strict
    try:
        with state.lock:
            cfg = Config.resolve(settings)
            if cfg.disabled:
                logger().debug("spark_tracking is disabled (%s)", cfg.sources.get("disabled"))
                return None
            try:
                choice = choose_store(cfg)
                if choice.pending is not None and resolve_link:
                    from .azure import session_link

                    choice = session_link.resolve(cfg, choice.pending)
            except _link_error() as exc:
                from .azure import session_link

                choice = session_link.fall_back(cfg, exc)
            state.use(cfg, choice)
            _apply_experiment(cfg)
            return cfg
    except Exception as exc:
        if settings.get("strict") or state.env_flag("SPARK_TRACKING_STRICT") or getattr(exc, "fatal", False):
            raise
        message = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        logger().warning("spark_tracking: tracking left unconfigured: %s", message)
        state.failed(message)
        return None


def _link_error():
    """AzureLinkError, imported only when a link is in play (it is cheap, but not free)."""
    if "spark_tracking.azure" not in sys.modules:
        return ()
    from .azure import AzureLinkError

    return AzureLinkError


def is_aml_uri(uri: str | None) -> bool:
    """True for a URI that speaks to an AML MLflow endpoint (or the link still to resolve)."""
    if not uri or not uri.startswith(_AML_SCHEMES):
        return False
    from .azure.store import is_aml_tracking_uri

    return is_aml_tracking_uri(uri)


def choose_store(cfg: Config) -> StoreChoice:
    """Where ``cfg`` sends runs, and why; files and environment only (no network).

    Raises AzureLinkError when a link source is malformed (the session then falls back)."""
    source_of_uri = cfg.sources.get("tracking_uri")
    if cfg.tracking_uri_chosen:
        why = f"tracking_uri from {source_of_uri}"
        if not cfg.tracking_uri.startswith(("azureml://", "https://")):  # only these can be AML's
            return StoreChoice(cfg.tracking_uri, None, why)
        from .azure import store

        chosen = store.for_uri(cfg.tracking_uri)
        return StoreChoice(chosen.uri, chosen.auth, why + (" (an Azure ML endpoint)" if chosen.auth else ""))
    platform = f", over {cfg.tracking_uri!r}, the {source_of_uri}" if cfg.tracking_uri else ""
    if not context.in_spark_worker():
        from .azure import link  # files and variables only, unless a source names a workspace

        source = link.find_source(cfg)
        if source is not None:
            from .azure import store

            cached = link.cached(cfg, source)
            if cached is not None:
                chosen = store.for_link(cached)
                return StoreChoice(
                    chosen.uri,
                    chosen.auth,
                    f"the Azure ML workspace {cached.workspace_id} named by {source.description}"
                    f"{platform} (link from the cache in {cfg.home})",
                )
            return StoreChoice(
                store.lazy_uri(link.cache_key(cfg, source)),
                None,
                f"the Azure ML workspace named by {source.description}{platform}; resolved at MLflow's first request",
                pending=source,
            )
    if cfg.tracking_uri:
        return StoreChoice(
            cfg.tracking_uri,
            None,
            f"{source_of_uri}: Databricks-managed MLflow, because no tracking_uri and no Azure ML link is configured",
        )
    return StoreChoice(
        cfg.embedded_store_uri, None, "embedded default: no tracking_uri and no Azure ML link is configured"
    )


def aml_safe_experiment_name(name: str) -> str:
    """The last path segment of ``name`` (AML cannot find names holding "/"; azureml-mlflow
    keeps the last segment of a Databricks-style name the same way)."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    return last or name


def default_experiment_name(ctx: context.RunContext | None = None) -> str | None:
    """The experiment this session names by default: the ``experiment_name`` setting, else the
    notebook or script (``context.experiment_name_for``); AML-safe when the store is AML."""
    cfg = current_config()
    name = (cfg.experiment_name if cfg is not None else None) or context.experiment_name_for(ctx or context.detect())
    if name and "/" in name and is_aml_uri(current_tracking_uri()):
        return aml_safe_experiment_name(name)
    return name


def _apply_experiment(cfg: Config) -> None:
    source = cfg.sources.get("experiment_name", "default")
    if source == "env MLFLOW_EXPERIMENT_NAME":
        if "/" in cfg.experiment_name and is_aml_uri(current_tracking_uri()):
            logger().warning(
                "spark_tracking: MLFLOW_EXPERIMENT_NAME=%r holds '/': Azure ML cannot find such "
                "experiments again; use a plain name such as %r",
                cfg.experiment_name,
                aml_safe_experiment_name(cfg.experiment_name),
            )
        return  # the user's own choice
    if source == "default" and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return
    name = default_experiment_name()
    if name:
        set_experiment_env(name)
    # else: a notebook whose path is not known yet: plugins.SparkTrackingExperiment names it at the first run


def set_experiment_env(name: str) -> None:
    """Name the experiment of new runs (and of subprocesses) through MLflow's own variable."""
    os.environ["MLFLOW_EXPERIMENT_NAME"] = name
    os.environ[MANAGED_EXPERIMENT_ENV] = name
