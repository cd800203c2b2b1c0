"""Every setting of spark_tracking (declared once, in ``settings``), resolved in one order.

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

from .settings import (
    ENV_PREFIX,
    SETTINGS,
    SETTINGS_BY_NAME,
    SPARK_CONF_PREFIX,
    Setting,
    parse_path,
    setting,
    settings_table_markdown,
)

# No ``typing`` import at run time (it costs milliseconds in every process's startup hook):
# annotations are strings (``from __future__ import annotations``) that nothing evaluates.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, Callable


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


__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "SPARK_CONF_PREFIX",
    "Config",
    "ConfigError",
    "Setting",
    "active_spark_conf",
    "config_file_candidates",
    "find_config_file",
    "load_json_file",
    "platform_default_uri",
    "read_config_file",
    "setting",
    "settings_table_markdown",
    "write_config_file",
]


class ConfigError(ValueError):
    """A setting has a value that cannot be used. The message names the value, its source
    and the fix, followed by the masked configuration."""


def config_file_candidates(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Config files in the order they are looked for; the first that exists is read."""
    environ = os.environ if environ is None else environ
    chosen = explicit or environ.get(setting("config_file").env)
    if chosen:
        return [parse_path(chosen)]
    return [parse_path(USER_CONFIG_FILE), SYSTEM_CONFIG_FILE]


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
        if key not in SETTINGS_BY_NAME:
            known = ", ".join(sorted(SETTINGS_BY_NAME))
            raise ConfigError(f"config file {path} has unknown key {key!r}; known keys: {known}.")
        if SETTINGS_BY_NAME[key].secret:
            raise ConfigError(
                f"config file {path} holds secret {key!r}; secrets belong in the "
                f"environment ({SETTINGS_BY_NAME[key].env}), not in files. Remove it."
            )
    return data


def write_config_file(values: Mapping[str, Any], path: str | None = None) -> str:
    """Merge ``values`` into the config file (atomically) and return its path. Secrets refused."""
    path = path or config_file_candidates()[0]
    current = read_config_file(path) if os.path.isfile(path) else {}
    for key, value in values.items():
        if key not in SETTINGS_BY_NAME or SETTINGS_BY_NAME[key].secret:
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
    return raw if is_platform_uri(raw, environ) else None


def is_platform_uri(uri, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``uri`` is ``databricks`` / ``databricks-uc`` on a Databricks Runtime: the
    platform's default (see ``platform_default_uri``), not a store the user chose."""
    environ = os.environ if environ is None else environ
    return str(uri).lower() in _PLATFORM_URIS and bool(environ.get("DATABRICKS_RUNTIME_VERSION"))


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
            if key not in SETTINGS_BY_NAME:
                raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(SETTINGS_BY_NAME))}")

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
                values[s.name] = s.parse(default) if s.parse is parse_path and default else default
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
