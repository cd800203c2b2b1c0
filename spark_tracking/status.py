"""Whether this process's session is configured, said where a user looks: ``doctor``, notebook
01 and the first run of a session that should be configured and is not (never silently
elsewhere: a config file or the Databricks Runtime says this machine is set up)."""

from __future__ import annotations

import os
import sys

from . import hook
from .config import find_config_file, is_platform_uri
from .state import current_choice, current_config, env_flag, last_failure, logger

_warned_unconfigured = False


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

    Files, environment and the session's state only (no network, no ``import mlflow``)."""
    config_file = find_config_file()
    on_runtime = bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))
    expected = (
        f"the config file {config_file} says this machine is set up for spark_tracking"
        if config_file
        else ("this is a Databricks Runtime" if on_runtime else "")
    )
    if env_flag("SPARK_TRACKING_DISABLED"):  # the user's choice (a cluster environment variable)
        return SessionStatus("WARN", "spark_tracking is disabled in this process (SPARK_TRACKING_DISABLED)")
    choice = current_choice() if current_config() is not None else None
    uri = choice.uri if choice is not None else None
    if choice is None:
        failure = last_failure()
        if failure:
            cause = f"configure() failed: {failure}"
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
        return SessionStatus("PASS", f"configured: runs go to {uri} ({choice.why})")
    if is_platform_uri(uri_in_force):
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
    logger().warning("%s", message)
