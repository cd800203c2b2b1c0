"""Every setting of spark_tracking, declared once (``SETTINGS``): its name, environment
variable, Spark conf key, parser, default and meaning. ``config`` resolves them in the
documented order; the README's settings table is generated from here.

Runs in the startup hook of every Python process: standard library only, no ``typing``.
"""

from __future__ import annotations

import os

# annotations are strings (``from __future__ import annotations``) that nothing evaluates
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

ENV_PREFIX = "SPARK_TRACKING_"
SPARK_CONF_PREFIX = "spark.sparktracking."


def _parse_bool(raw: str) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not a boolean; use 1/true/yes/on or 0/false/no/off")


def _parse_positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value < 0:
            raise ValueError(f"{raw!r} is negative; use a number >= 0")
        return value

    parse.__name__ = kind.__name__
    return parse


def parse_path(raw: str) -> str:
    """A path setting: ``~`` expanded, made absolute."""
    return os.path.abspath(os.path.expanduser(str(raw)))


def _parse_str(raw: str) -> str:
    return str(raw)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        for choice in choices:
            if str(raw).strip().lower() == choice.lower():
                return choice
        raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")

    parse.__name__ = "choice"
    return parse


_int = _parse_positive(int)
_float = _parse_positive(float)


def _parse_interval(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{raw!r} is not a number of seconds > 0; use e.g. 10")
    return value


_TYPE_NAMES = {
    _parse_bool: "bool",
    _int: "int",
    _float: "float",
    _parse_interval: "float",
    parse_path: "path",
    _parse_str: "str",
}


class Setting:
    """One setting: its name, how to parse it, its default and what it means.
    ``also_env``: foreign environment variables honoured after ``SPARK_TRACKING_<NAME>``."""

    __slots__ = ("also_env", "default", "doc", "name", "parse", "secret")

    def __init__(
        self,
        name: str,
        parse: Callable[[str], Any],
        default: Any,
        doc: str,
        secret: bool = False,
        also_env: tuple[str, ...] = (),
    ):
        self.name, self.parse, self.default, self.doc = name, parse, default, doc
        self.secret, self.also_env = secret, also_env

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"

    @property
    def env(self) -> str:
        """The environment variable of this setting: ``SPARK_TRACKING_<NAME>``."""
        return ENV_PREFIX + self.name.upper()

    @property
    def spark_conf(self) -> str:
        """The Spark configuration key of this setting: ``spark.sparktracking.<name>``."""
        return SPARK_CONF_PREFIX + self.name

    @property
    def type_name(self) -> str:
        """The type named in errors and in the configuration reference (``bool``, ``int``, ``choice``...)."""
        return _TYPE_NAMES.get(self.parse, "str" if self.parse.__name__ != "choice" else "choice")


SETTINGS: tuple[Setting, ...] = (
    # -- session -----------------------------------------------------------------------------
    Setting("disabled", _parse_bool, False, "Turn spark_tracking off: no configuration, no hook work, no forwarding."),
    Setting(
        "strict",
        _parse_bool,
        False,
        "Raise configuration errors into the host (notebook, init script) instead of "
        "logging them and leaving tracking off; a failed Azure ML link fails the run instead of "
        "falling back to the embedded store. Unset: true in a Databricks job (job cluster or job run).",
    ),
    Setting(
        "tracking_uri",
        _parse_str,
        None,
        'Central store. Unset: the AML workspace a link source names (see "Link to Azure ML"), '
        "else the embedded store `sqlite:///<home>/mlflow.db`.",
        also_env=("MLFLOW_TRACKING_URI",),
    ),
    Setting(
        "home",
        parse_path,
        os.path.join("~", ".spark_tracking"),
        "Folder of the embedded store (`mlflow.db`, `artifacts/`) and the driver spool.",
    ),
    Setting(
        "experiment_name",
        _parse_str,
        None,
        "Experiment of new runs. Unset: the notebook path (Databricks, Jupyter) or the script name.",
        also_env=("MLFLOW_EXPERIMENT_NAME",),
    ),
    Setting(
        "config_file",
        parse_path,
        None,
        "Config file to read (JSON). Unset: `~/.spark_tracking/config.json`, then "
        "`/etc/spark_tracking/config.json`. Explicit argument or environment only.",
    ),
    # -- forwarding from Spark tasks ---------------------------------------------------------
    Setting(
        "forwarding",
        _parse_bool,
        True,
        "Forward logging calls made inside Spark tasks to the run active on the driver.",
    ),
    Setting(
        "relay_host",
        _parse_str,
        None,
        "Address the driver relay listens on. Unset: `spark.driver.host`, or 127.0.0.1 when Spark runs locally.",
    ),
    Setting("relay_port", _int, 0, "Port of the driver relay; 0 picks a free port."),
    Setting(
        "relay_max_connections",
        _int,
        1024,
        "Authenticated connections the relay keeps at once; when full, the one idle the "
        "longest makes room (its task reconnects); refused only when all are busy.",
    ),
    Setting(
        "relay_max_frame_bytes",
        _int,
        8 * 1024 * 1024,
        "Largest frame the relay reads; a larger one closes that connection.",
    ),
    Setting(
        "buffer_max_points",
        _int,
        100_000,
        "Points a Python worker holds in memory; beyond it they spill to local disk.",
    ),
    Setting("ship_interval", _float, 0.2, "Seconds a point may wait in a task before it is shipped to the driver."),
    Setting(
        "task_flush_timeout",
        _float,
        30.0,
        "Seconds the end of a task waits to hand its points to the driver; what is left "
        "then goes to the worker's spill file (a write that outlasts the timeout on a busy "
        "machine is waited for, up to 10 s more) and ships with its next task.",
    ),
    Setting(
        "task_drop_dir",
        _parse_str,
        None,
        "Spark Connect where tasks cannot reach the driver (serverless): a folder the client "
        "and the tasks can both write (a Unity Catalog volume) where tasks leave what they log; "
        "it reaches the run at flush() or exit. Unset there: task points are dropped, with a warning.",
    ),
    Setting(
        "aggregate", _parse_bool, True, "Add a mean-across-workers series per metric and step when several workers log."
    ),
    Setting(
        "system_metrics",
        _parse_bool,
        False,
        "Sample the system metrics (CPU, memory, GPU) of every process that runs a Spark task or a "
        "training rank into the driver's run, per worker (`system/<name>/worker_<w>`). Also on when "
        "MLflow logs system metrics for the run (`mlflow.enable_system_metrics_logging()`, "
        "`start_run(log_system_metrics=True)`).",
        also_env=("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING",),
    ),
    Setting(
        "system_metrics_interval",
        _parse_interval,
        10.0,
        "Seconds between two system-metrics samples of a worker (MLflow's default).",
        also_env=("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",),
    ),
    # -- sink (driver to store) --------------------------------------------------------------
    Setting("batch_max_metrics", _int, 1000, "Metrics per log_batch request (MLflow allows at most 1000)."),
    Setting(
        "rate_limit",
        _float,
        0.0,
        "Write requests per second to the store, for all executors together; 0 = no "
        "limit. Databricks-hosted MLflow allows 47 log-batch requests/s.",
    ),
    Setting(
        "spool_max_bytes",
        _int,
        1024 * 1024 * 1024,
        "Disk the driver spool may use for points the store did not take yet.",
    ),
    # -- Azure Machine Learning link ---------------------------------------------------------
    Setting(
        "azure_cloud",
        _choice("AzureCloud", "AzureChinaCloud", "AzureUSGovernment"),
        "AzureCloud",
        "Azure cloud of the AML workspace: AzureCloud, AzureChinaCloud or AzureUSGovernment (ARM "
        "endpoint, Azure AD authority and token scope follow).",
    ),
    Setting(
        "aml_workspace_id",
        _parse_str,
        None,
        "ARM resource id of the AML workspace to log to (`/subscriptions/…/providers/"
        "Microsoft.MachineLearningServices/workspaces/<name>`).",
    ),
    Setting("subscription_id", _parse_str, None, "Subscription of the AML workspace (with the next two)."),
    Setting("resource_group", _parse_str, None, "Resource group of the AML workspace."),
    Setting("workspace_name", _parse_str, None, "Name of the AML workspace."),
    Setting(
        "databricks_resource_id",
        _parse_str,
        None,
        "ARM resource id of this Databricks workspace, whose AML link is followed. Unset: "
        "`DATABRICKS_AZURE_RESOURCE_ID` (databricks-sdk), or the cluster tags.",
    ),
    Setting(
        "azure_credential",
        _choice("auto", "service_principal", "workload_identity", "managed_identity", "azure_cli"),
        "auto",
        "Where Azure AD tokens come from: auto (service principal from `AZURE_CLIENT_ID`/"
        "`AZURE_TENANT_ID`/`AZURE_CLIENT_SECRET`, workload identity, managed identity, Azure CLI) "
        "or only the one named.",
    ),
    Setting(
        "azure_authority_host",
        _parse_str,
        None,
        "Azure AD authority. Unset: the cloud's (login.microsoftonline.com, ...).",
        also_env=("AZURE_AUTHORITY_HOST",),
    ),
    Setting(
        "azure_arm_endpoint",
        _parse_str,
        None,
        "Azure Resource Manager endpoint. Unset: the cloud's (https://management.azure.com, ...).",
    ),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The :class:`Setting` called ``name`` (KeyError for an unknown name)."""
    return SETTINGS_BY_NAME[name]


def settings_table_markdown() -> str:
    """The README's settings table, generated from SETTINGS (see ``spark-tracking settings``)."""
    rows = ["| setting | env var | Spark conf | type | default | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "—" if s.default is None else f"`{s.default}`"
        env = f"`{s.env}`" + "".join(f", `{e}`" for e in s.also_env)
        conf = "—" if s.name == "config_file" else f"`{s.spark_conf}`"
        rows.append(f"| {s.name} | {env} | {conf} | {s.type_name} | {default} | {s.doc} |")
    return "\n".join(rows)
