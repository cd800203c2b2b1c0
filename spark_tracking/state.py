"""This process's session: which configuration and store are in force, and how a store is
applied to MLflow (its environment variables, and its global URI when it is imported).

The ground floor under ``session`` (which decides the store), ``azure`` (whose plugins resolve a
link at MLflow's first request and read the session's settings) and ``status`` (which reports
the session): they all read and set the session here, so none of them imports another to do it.
Runs in every process's startup hook: standard library only, imported lazily.
"""

from __future__ import annotations

import _thread
import os
import sys

from .config import MANAGED_URI_ENV, Config, is_platform_uri

#: MLflow's request-auth plugin name, set for AML stores; the marker tells spark_tracking's own
#: value from one the user exported.
AUTH_ENV = "MLFLOW_TRACKING_AUTH"
MANAGED_AUTH_ENV = "SPARK_TRACKING_MANAGED_AUTH"


def logger():
    """The session's logger (``logging`` imported on first use: this runs in every start-up hook)."""
    import logging

    return logging.getLogger("spark_tracking.session")


class StoreChoice:
    """Where a session's runs go, and why (``settings --resolved`` and ``doctor`` print ``why``)."""

    __slots__ = ("auth", "pending", "uri", "why")

    def __init__(self, uri: str, auth: str | None, why: str, pending=None):
        self.uri, self.auth, self.why = uri, auth, why
        #: the link source still to resolve (at MLflow's first request), or None
        self.pending = pending

    def __repr__(self) -> str:
        return f"StoreChoice({self.uri!r}, {self.why!r})"


#: held while the session changes (configure, a link resolved at MLflow's first request);
#: not ``threading``: it costs a millisecond at every interpreter start
lock = _thread.RLock()
_current: Config | None = None
_choice: StoreChoice | None = None
#: why the last configure() in this process left tracking unconfigured (``status`` names it)
_last_failure: str | None = None


def current_config() -> Config | None:
    """The configuration of the last successful configure() in this process, or None."""
    return _current


def active_config() -> Config:
    """The configuration in force in this process: the last successful configure()'s, else the
    settings resolved now (Spark conf > environment > config file > defaults)."""
    return _current or Config.resolve()


def current_tracking_uri() -> str | None:
    """The tracking URI the last successful configure() set (an AML link resolved), or None."""
    return _choice.uri if _choice is not None else None


def current_choice() -> StoreChoice | None:
    """Where this session's runs go and why, or None before configure()."""
    return _choice


def last_failure() -> str | None:
    """Why the last configure() left tracking unconfigured, or None."""
    return _last_failure


def use(cfg: Config, choice: StoreChoice) -> None:
    """Make ``choice`` this process's store for ``cfg``: MLflow's variables (and its global URI
    when it is imported), then the session's state. Call with ``lock`` held."""
    global _current, _choice, _last_failure
    _apply_tracking_uri(cfg, choice.uri, choice.auth)
    _current, _choice, _last_failure = cfg, choice, None


def failed(message: str) -> None:
    """Record why configure() left tracking unconfigured."""
    global _last_failure
    _last_failure = message


def _apply_auth(auth: str | None) -> None:
    current = os.environ.get(AUTH_ENV)
    managed = os.environ.get(MANAGED_AUTH_ENV)
    if current and current != managed:
        if auth and current != auth:
            logger().warning(
                "spark_tracking: MLFLOW_TRACKING_AUTH=%s is set; the AML store needs %s. "
                "Unset MLFLOW_TRACKING_AUTH to let spark_tracking sign requests",
                current,
                auth,
            )
        return  # the user's own choice
    if auth:
        os.environ[AUTH_ENV] = os.environ[MANAGED_AUTH_ENV] = auth
    else:
        os.environ.pop(AUTH_ENV, None)
        os.environ.pop(MANAGED_AUTH_ENV, None)


def _apply_tracking_uri(cfg: Config, uri: str, auth: str | None = None) -> None:
    _apply_auth(auth)
    if uri == cfg.embedded_store_uri:  # its artifacts: embedded_store.sqlite_store
        os.makedirs(cfg.home, exist_ok=True)
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
        if set_uri is None or set_uri in (previous, uri) or is_platform_uri(set_uri):
            fluent_utils.set_tracking_uri(uri)


def env_flag(env: str) -> bool:
    """True when the environment variable ``env`` says yes (1, true, yes, on)."""
    return os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on")
