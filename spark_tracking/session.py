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
``spark-tracking-aml`` tracking-store plugin, ``azure.store.lazy_link_store``). An explicit
``configure()`` call resolves it at once.

A link that fails never scatters runs: the session logs to the embedded store in ``home`` (a
known place), says so on stderr (a notebook shows it under the cell) and records it for
``spark-tracking doctor``, with the command that moves the runs once the link works. In a
Databricks job (a job cluster, or a job id in the notebook context) the default is strict
instead: the driver's disk goes with the job cluster, so the link failure fails the run (and the
job) with the cause and the fix; ``strict=false`` set explicitly brings the fallback back.

The experiment: when the name is known at configure time (a script, a Jupyter notebook) it goes
to ``MLFLOW_EXPERIMENT_NAME``; a Databricks notebook's path is only known once its kernel and
dbutils are up, so ``plugins.SparkTrackingExperiment`` (a default-experiment provider asked
before MLflow's Databricks notebook provider) names it at the first run. Against AML the name is
the last segment of the path (``/Users/me/proj/train`` -> ``train``): AML cannot find
experiments whose names hold "/" (azure-sdk-for-python#45209); azureml-mlflow does the same.
"""

from __future__ import annotations

import _thread
import os
import sys

from . import context
from .config import MANAGED_EXPERIMENT_ENV, MANAGED_URI_ENV, Config, ConfigError

#: MLflow's request-auth plugin name, set by configure() for AML stores; this marker tells
#: spark_tracking's own value from one the user exported.
_AUTH_ENV = "MLFLOW_TRACKING_AUTH"
MANAGED_AUTH_ENV = "SPARK_TRACKING_MANAGED_AUTH"
#: Written to ``<home>`` when a session fell back to the embedded store (read by doctor).
FALLBACK_FILE = "link-failure.json"
#: URI schemes an AML endpoint can be spoken in (checked before importing ``azure.store``).
_AML_SCHEMES = ("azureml://", "https://", "spark-tracking-aml:")


def _logger():
    import logging  # imported on first use: this module runs in every process's startup hook

    return logging.getLogger(__name__)


#: mlflow's SQL store reads its default artifact root from this variable when it has none;
#: set for the embedded store only, so artifacts land in <home>/artifacts, not ./mlruns.
_ARTIFACT_ROOT_ENV = "_MLFLOW_SERVER_ARTIFACT_ROOT"

_lock = _thread.RLock()  # not ``threading``: it costs a millisecond at every interpreter start
_current: Config | None = None
_current_uri: str | None = None
_choice: StoreChoice | None = None
#: why the last configure() in this process left tracking unconfigured (session_status names it)
_last_failure: str | None = None
_warned_unconfigured = False


class StoreChoice:
    """Where a session's runs go, and why (``settings --resolved`` and ``doctor`` print ``why``)."""

    __slots__ = ("auth", "pending", "uri", "why")

    def __init__(self, uri: str, auth: str | None, why: str, pending=None):
        self.uri, self.auth, self.why = uri, auth, why
        #: the link source still to resolve (at MLflow's first request), or None
        self.pending = pending

    def __repr__(self) -> str:
        return f"StoreChoice({self.uri!r}, {self.why!r})"


def current_config() -> Config | None:
    """The configuration of the last successful configure() in this process, or None."""
    return _current


def active_config() -> Config:
    """The configuration in force in this process: the last successful configure()'s, else the
    settings resolved now (Spark conf > environment > config file > defaults)."""
    return _current or Config.resolve()


def current_tracking_uri() -> str | None:
    """The tracking URI the last successful configure() set (an AML link resolved), or None."""
    return _current_uri


def current_choice() -> StoreChoice | None:
    """Where this session's runs go and why, or None before configure()."""
    return _choice


def configure(*, strict: bool | None = None, resolve_link: bool = True, **settings) -> Config | None:
    """Point MLflow at the central store and name the experiment for this session.

    Keyword arguments are settings (see ``spark_tracking.config.SETTINGS``), e.g.
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
    global _current, _current_uri, _choice, _last_failure
    if strict is not None:
        settings["strict"] = strict
    try:
        with _lock:
            cfg = Config.resolve(settings)
            if cfg.disabled:
                _logger().debug("spark_tracking is disabled (%s)", cfg.sources.get("disabled"))
                return None
            try:
                choice = choose_store(cfg)
                if choice.pending is not None and resolve_link:
                    choice = _resolve_link(cfg, choice.pending)
            except _link_error() as exc:
                choice = _fall_back(cfg, exc)
            _apply_tracking_uri(cfg, choice.uri, choice.auth)
            _current, _current_uri, _choice = cfg, choice.uri, choice
            _last_failure = None
            _apply_experiment(cfg)
            return cfg
    except Exception as exc:
        if settings.get("strict") or _strict_from_env() or getattr(exc, "fatal", False):
            raise
        message = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        _logger().warning("spark_tracking: tracking left unconfigured: %s", message)
        _last_failure = message
        return None


def _strict_from_env() -> bool:
    return _env_flag("SPARK_TRACKING_STRICT")


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


def _resolve_link(cfg: Config, source) -> StoreChoice:
    """Resolve a link source (ARM, unless cached) into the store; AzureLinkError when it fails."""
    from .azure import link, store

    resolved = link.resolve(cfg, source=source)
    chosen = store.for_link(resolved)
    if chosen.auth:
        store.check_request_auth_supported()
    _logger().info("spark_tracking: logging to AML workspace %s (from %s)", resolved.workspace_id, resolved.source)
    return StoreChoice(
        chosen.uri, chosen.auth, f"the Azure ML workspace {resolved.workspace_id} named by {source.description}"
    )


def resolve_pending_link() -> str:
    """Resolve the link this session left for MLflow's first request; returns the tracking URI
    the session uses from now on (the embedded store, with a message, when the link fails).
    Called by the ``spark-tracking-aml`` tracking-store plugin."""
    global _current, _current_uri, _choice
    with _lock:
        if _choice is not None and _choice.pending is None and _current_uri:
            return _current_uri
        cfg = _current or Config.resolve()
        from .azure import AzureLinkError, link

        try:
            source = _choice.pending if _choice is not None and _choice.pending is not None else link.find_source(cfg)
            if source is None:
                raise AzureLinkError(
                    "no Azure ML workspace is named in this process any more (settings changed "
                    "since the session started)"
                )
            choice = _resolve_link(cfg, source)
        except AzureLinkError as exc:
            choice = _fall_back(cfg, exc)  # raises when the session is strict (a job, by default)
        _apply_tracking_uri(cfg, choice.uri, choice.auth)
        _current, _current_uri, _choice = cfg, choice.uri, choice
        return choice.uri


def _job_strictness(cfg: Config) -> str | None:
    """Where this session runs when that makes it strict by default, or None.

    Unless ``strict`` was set explicitly, a Databricks job (``context.job_cluster_reason``) is
    strict: a job cluster deletes the driver's disk minutes after the job, which still succeeds,
    so a fallback there loses the runs without anyone seeing it."""
    if "strict" in cfg.sources:  # strict=false chosen explicitly: the fallback is wanted
        return None
    return context.job_cluster_reason()


def _fall_back(cfg: Config, exc: BaseException) -> StoreChoice:
    """The link failed: the embedded store at a known home, said where the user looks; or, in a
    strict session (a job, by default), an error that fails the run with the cause and the fix."""
    if cfg.strict or _strict_from_env():
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
        _logger().error("spark_tracking: %s", failed)
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
    _logger().warning("%s", message)
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


def _apply_auth(auth: str | None) -> None:
    current = os.environ.get(_AUTH_ENV)
    managed = os.environ.get(MANAGED_AUTH_ENV)
    if current and current != managed:
        if auth and current != auth:
            _logger().warning(
                "spark_tracking: MLFLOW_TRACKING_AUTH=%s is set; the AML store needs %s. "
                "Unset MLFLOW_TRACKING_AUTH to let spark_tracking sign requests",
                current,
                auth,
            )
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
    if "mlflow" in sys.modules:
        _apply_to_imported_mlflow(uri, previous)


def _apply_to_imported_mlflow(uri: str, previous: str | None) -> None:
    from ._compat.mlflow import global_tracking_uri, global_tracking_uri_module, import_finished

    if not import_finished():
        # configured from MLflow's own import (hook.start_at_mlflow_import): nothing can have set
        # MLflow's global URI yet, and its API is half-initialised; the environment is enough
        return
    fluent_utils = global_tracking_uri_module()
    if fluent_utils is not None:
        # mlflow is already imported: its global URI (set by mlflow.set_tracking_uri) wins over
        # the environment, so update it too, unless the user set it to something of their own.
        # A "databricks" set there on Databricks is the runtime's doing, not the user's (the
        # other way the runtime may make it the default; see config.platform_default_uri).
        set_uri = global_tracking_uri()
        runtime = os.environ.get("DATABRICKS_RUNTIME_VERSION") and str(set_uri).lower() in (
            "databricks",
            "databricks-uc",
        )
        if set_uri is None or set_uri in (previous, uri) or runtime:
            fluent_utils.set_tracking_uri(uri)


class SessionStatus:
    """Whether this process's session is configured, as ``doctor`` and the first run report it.

    ``level``: PASS (configured, MLflow uses the session's store), WARN (deliberately off, or
    MLflow's URI set to something else in this process), FAIL (a config file or the Databricks
    Runtime says this machine is set up, yet the session is not configured, or the runtime's
    default replaced the session's store), or "" (nothing configured and nothing expected)."""

    __slots__ = ("detail", "fix", "level")

    def __init__(self, level: str, detail: str, fix: str = ""):
        self.level, self.detail, self.fix = level, detail, fix

    @property
    def configured(self) -> bool:
        """True when MLflow in this process logs where the session was configured to."""
        return self.level == "PASS"

    def __repr__(self) -> str:
        return f"SessionStatus({self.level!r}, {self.detail!r})"


_RESTART = "restart the notebook's Python (dbutils.library.restartPython(), or Detach & re-attach)"


def session_status(uri_in_force: str | None) -> SessionStatus:
    """Check this process's session against ``uri_in_force`` (``mlflow.get_tracking_uri()``).

    Files, environment and this module's state only (no network, no ``import mlflow``)."""
    from . import hook
    from .config import find_config_file

    config_file = find_config_file()
    on_runtime = bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
    expected = (
        f"the config file {config_file} says this machine is set up for spark_tracking"
        if config_file
        else ("this is a Databricks Runtime" if on_runtime else "")
    )
    if _env_flag("SPARK_TRACKING_DISABLED"):  # the user's choice (a cluster environment variable)
        return SessionStatus("WARN", "spark_tracking is disabled in this process (SPARK_TRACKING_DISABLED)")
    cfg, uri = _current, _current_uri
    if cfg is None:
        if _last_failure:
            cause = f"configure() failed: {_last_failure}"
            fix = f"fix that setting, then run spark_tracking.configure() or {_RESTART}"
        elif not hook.enabled_on_path():
            cause = f"the startup hook is not enabled in any folder on sys.path ({hook.PTH_NAME})"
            fix = (
                "on a cluster the init script enables it: its log (/var/log/spark_tracking/init.log on the "
                "driver, or the cluster's init script logs) says why it did not; elsewhere: spark-tracking hook "
                "enable. Or call spark_tracking.configure() at the top of the notebook"
            )
        else:
            cause = "the startup hook has not run in this process (MLflow not imported yet?)"
            fix = "import mlflow (it loads spark_tracking's plugins), or call spark_tracking.configure()"
        if not expected:
            return SessionStatus("", f"this session is not configured: {cause}", fix)
        return SessionStatus(
            "FAIL",
            f"this session is not configured ({cause}), although {expected}; MLflow logs to {uri_in_force}",
            fix,
        )
    if uri_in_force is None or uri_in_force == uri:
        why = f" ({_choice.why})" if _choice is not None else ""
        return SessionStatus("PASS", f"configured: runs go to {uri}{why}")
    if on_runtime and str(uri_in_force).lower() in ("databricks", "databricks-uc"):
        return SessionStatus(
            "FAIL",
            f"MLflow's tracking URI is {uri_in_force!r}, the Databricks Runtime's default, set after "
            f"spark_tracking configured this session for {uri}",
            "run spark_tracking.configure() (it sets the session's store again)",
        )
    return SessionStatus(
        "WARN",
        f"MLflow's tracking URI was set to {uri_in_force} in this process (mlflow.set_tracking_uri or "
        f"MLFLOW_TRACKING_URI); spark_tracking configured {uri}",
        "leave the URI to spark_tracking, or spark_tracking.configure(tracking_uri=...) to choose another store",
    )


def warn_at_first_run(uri_in_force: str | None) -> None:
    """Say so, once per process, when a run is created in a session that should be configured and
    is not (``session_status`` FAIL): on stderr (a notebook shows it under the cell) and in the log.
    Called by the run-context plugin at run creation."""
    global _warned_unconfigured
    if _warned_unconfigured:
        return
    status = session_status(uri_in_force)
    if status.level != "FAIL":
        return
    _warned_unconfigured = True
    message = f"spark_tracking: {status.detail}. Fix: {status.fix}"
    print(message, file=sys.stderr)
    _logger().warning("%s", message)


def _env_flag(env: str) -> bool:
    return os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on")


def aml_safe_experiment_name(name: str) -> str:
    """The last path segment of ``name`` (AML cannot find names holding "/"; azureml-mlflow
    keeps the last segment of a Databricks-style name the same way)."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    return last or name


def default_experiment_name(ctx: context.RunContext | None = None) -> str | None:
    """The experiment this session names by default: the ``experiment_name`` setting, else the
    notebook or script (``context.experiment_name_for``); AML-safe when the store is AML."""
    cfg = _current
    name = (cfg.experiment_name if cfg is not None else None) or context.experiment_name_for(ctx or context.detect())
    if name and "/" in name and is_aml_uri(_current_uri):
        return aml_safe_experiment_name(name)
    return name


def _apply_experiment(cfg: Config) -> None:
    source = cfg.sources.get("experiment_name", "default")
    if source == "env MLFLOW_EXPERIMENT_NAME":
        if "/" in cfg.experiment_name and is_aml_uri(_current_uri):
            _logger().warning(
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
