"""Every setting of spark_tracking, declared once, resolved in one order.

Resolution order — the first source that has a value wins, later ones never overwrite:

1. an explicit argument (``configure(tracking_uri=...)``, ``Config.resolve(explicit=...)``)
2. Spark conf ``spark.sparktracking.<name>`` (read only when a SparkContext is already running)
3. environment ``SPARK_TRACKING_<NAME>``, then the foreign variables a setting honours
   (``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` set by the user are respected)
4. the config file (JSON, non-secret; written by ``spark-tracking link`` or the init script)
5. the embedded default

The config file is the first of ``$SPARK_TRACKING_CONFIG_FILE``,
``~/.spark_tracking/config.json`` and ``/etc/spark_tracking/config.json`` that exists.

This module imports nothing heavy: it runs in the startup hook of every Python process.
"""

from __future__ import annotations

import os
import sys

# No ``typing`` import at run time (it costs milliseconds in every process's startup hook):
# annotations are strings (``from __future__ import annotations``) that nothing evaluates.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, Callable

ENV_PREFIX = "SPARK_TRACKING_"
SPARK_CONF_PREFIX = "spark.sparktracking."
#: Where MLflow's tracking URI came from when spark_tracking set it (so a later configure()
#: can tell its own value from one the user exported).
MANAGED_URI_ENV = "SPARK_TRACKING_MANAGED_URI"
MANAGED_EXPERIMENT_ENV = "SPARK_TRACKING_MANAGED_EXPERIMENT"
_MANAGED = {"MLFLOW_TRACKING_URI": MANAGED_URI_ENV, "MLFLOW_EXPERIMENT_NAME": MANAGED_EXPERIMENT_ENV}
USER_CONFIG_FILE = os.path.join("~", ".spark_tracking", "config.json")
#: The source name of a tracking URI the Databricks Runtime set, not the user (see platform_default_uri).
PLATFORM_DEFAULT = "platform default (MLFLOW_TRACKING_URI set by the Databricks Runtime)"
_PLATFORM_URIS = ("databricks", "databricks-uc")
SYSTEM_CONFIG_FILE = "/etc/spark_tracking/config.json"


class ConfigError(ValueError):
    """A setting has a value that cannot be used. The message names the value, its source
    and the fix, followed by the masked configuration."""


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


def _parse_path(raw: str) -> str:
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
    _parse_path: "path",
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
        _parse_path,
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
        _parse_path,
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
        "then stays in the worker's spill file and ships with its next task.",
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

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The :class:`Setting` called ``name`` (KeyError for an unknown name)."""
    return _BY_NAME[name]


def config_file_candidates(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Config files in the order they are looked for; the first that exists is read."""
    environ = os.environ if environ is None else environ
    chosen = explicit or environ.get(setting("config_file").env)
    if chosen:
        return [_parse_path(chosen)]
    return [_parse_path(USER_CONFIG_FILE), SYSTEM_CONFIG_FILE]


def find_config_file(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The config file a session reads: the first of :func:`config_file_candidates` that exists, or None."""
    for path in config_file_candidates(explicit, environ):
        if os.path.isfile(path):
            return path
    return None


class _JsonOptions:
    # what json.JSONDecoder hands CPython's C scanner, defaults throughout
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def load_json_file(path: str) -> Any:
    """The JSON document in ``path`` (OSError when unreadable, ValueError when not JSON).

    The startup hook reads the config file and the AML link cache in every process, and
    importing ``json`` costs more than all the rest the hook does (it imports ``re``, which pulls
    in ``enum``, ``functools`` and ``collections``). So this reads with the C scanner that
    ``json.loads`` itself uses on CPython, without importing ``json``; elsewhere, ``json``."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        from _json import make_scanner
    except ImportError:  # not CPython
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        # typeshed types the context as a make_scanner; CPython takes any object with these attributes
        value, end = make_scanner(_JsonOptions)(text, start)  # type: ignore[arg-type]
    except StopIteration as stop:
        raise ValueError(f"Expecting value: char {stop.value}") from None
    if text[end:].strip(" \t\n\r"):
        raise ValueError(f"Extra data: char {end}")
    return value


def read_config_file(path: str) -> dict[str, Any]:
    """Read a config file; unknown keys and secrets are refused with the fix."""
    try:
        data = load_json_file(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} could not be read: {exc}. Fix or delete it.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, not {type(data).__name__}.")
    for key in data:
        if key not in _BY_NAME:
            raise ConfigError(f"config file {path} has unknown key {key!r}; known keys: {', '.join(sorted(_BY_NAME))}.")
        if _BY_NAME[key].secret:
            raise ConfigError(
                f"config file {path} holds secret {key!r}; secrets belong in the "
                f"environment ({_BY_NAME[key].env}), not in files. Remove it."
            )
    return data


def write_config_file(values: Mapping[str, Any], path: str | None = None) -> str:
    """Merge ``values`` into the config file (atomically) and return its path. Secrets refused."""
    path = path or config_file_candidates()[0]
    current = read_config_file(path) if os.path.isfile(path) else {}
    for key, value in values.items():
        if key not in _BY_NAME or _BY_NAME[key].secret:
            raise ConfigError(f"{key!r} cannot be written to a config file")
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    import json

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(current, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def platform_default_uri(environ: Mapping[str, str] | None = None) -> str | None:
    """The tracking URI the Databricks Runtime makes the default, or None.

    Open-source MLflow has no "databricks" default (``get_tracking_uri()`` reads a set URI, then
    ``MLFLOW_TRACKING_URI``, then local files); on Databricks the runtime makes it the default,
    likely through ``MLFLOW_TRACKING_URI=databricks`` in the driver's environment (assumed here;
    a runtime that calls ``mlflow.set_tracking_uri("databricks")`` instead is handled where the
    session applies its URI). So ``databricks`` / ``databricks-uc`` seen together with
    ``DATABRICKS_RUNTIME_VERSION`` is the platform's default, not a choice the user made: it
    ranks below every setting and below an AML link (source: docs/platform.md, Databricks Runtime).
    """
    environ = os.environ if environ is None else environ
    raw = str(environ.get("MLFLOW_TRACKING_URI", "")).strip()
    if raw.lower() in _PLATFORM_URIS and environ.get("DATABRICKS_RUNTIME_VERSION"):
        return raw
    return None


def active_spark_conf(wanted: Callable[[str], bool] | None = None) -> dict[str, str]:
    """``spark.sparktracking.*`` (or the keys ``wanted`` accepts) of the running SparkContext,
    or {} (never starts Spark)."""
    wanted = wanted or (lambda key: key.startswith(SPARK_CONF_PREFIX))
    if "pyspark" not in sys.modules:  # at interpreter start (the hook): not even _compat's imports
        return {}
    from ._compat import pyspark as compat

    sc = compat.active_spark_context()
    if sc is None:
        return {}
    try:
        return {k: v for k, v in sc.getConf().getAll() if wanted(k)}
    except Exception:  # noqa: BLE001 - a dying or Connect-only session: no conf to read
        return {}


class Config:
    """Resolved settings. Attribute access by setting name; ``sources`` tells where each came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]):
        self._values = values
        self.sources = sources

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        """Every setting's resolved value, by name (secrets included: never print it; use ``debug_string``)."""
        return dict(self._values)

    @property
    def embedded_store_uri(self) -> str:
        """The SQLite store under ``home`` (``<home>/mlflow.db``), used when no ``tracking_uri`` is set."""
        return "sqlite:///" + os.path.join(self.home, "mlflow.db")

    @property
    def embedded_artifact_root(self) -> str:
        """The artifact folder of the embedded store (``<home>/artifacts``)."""
        return os.path.join(self.home, "artifacts")

    @property
    def effective_tracking_uri(self) -> str:
        """``tracking_uri`` when set, else :attr:`embedded_store_uri`."""
        return self.tracking_uri or self.embedded_store_uri

    @property
    def tracking_uri_chosen(self) -> bool:
        """True when ``tracking_uri`` comes from a setting someone made, not the platform default."""
        return bool(self.tracking_uri) and self.sources.get("tracking_uri") != PLATFORM_DEFAULT

    def debug_string(self) -> str:
        """One line per setting that is not at its default, secrets masked."""
        parts = []
        for s in SETTINGS:
            source = self.sources.get(s.name, "default")
            if source == "default":
                continue
            value = "***" if s.secret else self._values[s.name]
            parts.append(f"{s.name}={value!r} (from {source})")
        return "config: " + ("; ".join(parts) if parts else "all defaults")

    def __repr__(self) -> str:
        return f"<Config {self.debug_string()}>"

    @classmethod
    def resolve(
        cls,
        explicit: Mapping[str, Any] | None = None,
        spark_conf: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Resolve every setting in the documented order. Raises ConfigError naming the source."""
        explicit = {k: v for k, v in (explicit or {}).items() if v is not None}
        environ = os.environ if environ is None else environ
        spark_conf = active_spark_conf() if spark_conf is None else spark_conf
        for key in explicit:
            if key not in _BY_NAME:
                raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(_BY_NAME))}")

        file_path = find_config_file(explicit.get("config_file"), environ)
        file_values = read_config_file(file_path) if file_path else {}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for s in SETTINGS:
            for source, raw in cls._candidates(s, explicit, spark_conf, environ, file_values, file_path):
                try:
                    values[s.name] = raw if source == "argument" and not isinstance(raw, str) else s.parse(raw)
                except (TypeError, ValueError) as exc:
                    shown = "***" if s.secret else repr(raw)
                    raise ConfigError(
                        f"{s.name}={shown} from {source} is not a valid {s.type_name}: {exc}. "
                        f"Fix {source} (the setting is documented in the README's settings table)."
                    ) from None
                sources[s.name] = source
                break
            else:
                default = s.default
                values[s.name] = s.parse(default) if s.parse is _parse_path and default else default
        if values["config_file"] is None and file_path:
            values["config_file"] = file_path
        return cls(values, sources)

    @staticmethod
    def _candidates(s: Setting, explicit, spark_conf, environ, file_values, file_path) -> Iterable[tuple[str, Any]]:
        if s.name in explicit:
            yield "argument", explicit[s.name]
        if s.name == "config_file":  # where to read files from cannot come from a file
            if s.env in environ:
                yield f"env {s.env}", environ[s.env]
            return
        if s.spark_conf in spark_conf:
            yield f"spark conf {s.spark_conf}", spark_conf[s.spark_conf]
        if environ.get(s.env, "") != "":
            yield f"env {s.env}", environ[s.env]
        platform = platform_default_uri(environ) if s.name == "tracking_uri" else None
        for name in s.also_env:
            raw = environ.get(name, "")
            if raw and raw != environ.get(_MANAGED.get(name, ""), None) and raw != platform:
                yield f"env {name}", raw
        if s.name in file_values:
            yield f"config file {file_path}", file_values[s.name]
        if platform:
            yield PLATFORM_DEFAULT, platform


def settings_table_markdown() -> str:
    """The README's settings table, generated from SETTINGS (see ``spark-tracking settings``)."""
    rows = ["| setting | env var | Spark conf | type | default | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "—" if s.default is None else f"`{s.default}`"
        env = f"`{s.env}`" + "".join(f", `{e}`" for e in s.also_env)
        conf = "—" if s.name == "config_file" else f"`{s.spark_conf}`"
        rows.append(f"| {s.name} | {env} | {conf} | {s.type_name} | {default} | {s.doc} |")
    return "\n".join(rows)
