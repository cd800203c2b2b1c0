"""What ``spark-tracking install`` and ``uninstall`` change in a cluster spec. Pure: dicts in,
dicts out, no network.

A cluster is "installed" when its spec carries, and only these fields are ever touched:

- ``init_scripts``: one entry for ``spark-tracking-init.sh`` (any earlier entry for a file of
  that name is replaced, other init scripts keep their order);
- ``spark_env_vars``: ``SPARK_TRACKING_WHEEL`` (the wheel the init script installs),
  ``SPARK_TRACKING_INIT_PACKAGES`` (optional packages it installs, ``--azureml-mlflow``), the
  non-secret settings given with ``--set`` as ``SPARK_TRACKING_<NAME>``, and, with a service
  principal, ``AZURE_TENANT_ID`` / ``AZURE_CLIENT_ID`` / ``AZURE_CLIENT_SECRET`` as
  ``{{secrets/<scope>/<key>}}`` references (never values), and ``SPARK_TRACKING_RELAY_SECRET``
  as a reference to the random relay secret install keeps in that scope;
- ``spark_conf``: ``spark.sparktracking.<name>`` for settings given with ``--spark-conf``.

Settings go to environment variables by default because they reach every process of the
cluster (init script, notebooks, Python workers); Spark conf reaches only code that has a
SparkContext, and wins over the environment there (a per-cluster override).

Install keeps ``SPARK_TRACKING_*`` variables set by an earlier install unless ``--unset``
removes them, so re-running it to upgrade the wheel keeps the link. Uninstall removes exactly
what install can add, which brings a spec that had none of it back to the original.
"""

from __future__ import annotations

import difflib
import json
import posixpath
import re
from dataclasses import dataclass, field

from ..settings import ENV_PREFIX, SETTINGS, SPARK_CONF_PREFIX

INIT_SCRIPT_NAME = "spark-tracking-init.sh"
WHEEL_ENV = "SPARK_TRACKING_WHEEL"
#: Optional packages the init script installs under the runtime's constraints (space-separated).
PACKAGES_ENV = "SPARK_TRACKING_INIT_PACKAGES"
#: azureml-mlflow, installed by the init script (``install --azureml-mlflow``), never as a free
#: cluster library: 1.62.0.post6 pins mlflow-skinny <= 3.15.0, which pip would put over the
#: runtime's mlflow (docs/platform.md).
AZUREML_MLFLOW = "azureml-mlflow>=1.62"
MANAGED_FIELDS = ("init_scripts", "spark_env_vars", "spark_conf")
#: env var -> secret key in the scope
SECRET_KEYS = {
    "AZURE_TENANT_ID": "azure-tenant-id",
    "AZURE_CLIENT_ID": "azure-client-id",
    "AZURE_CLIENT_SECRET": "azure-client-secret",
}
DEFAULT_SCOPE = "spark-tracking"
#: The driver relay's secret: random, kept in the scope, given to driver and executors alike
#: through their environment (Spark writes job properties, the fallback, to its event logs).
RELAY_SECRET_ENV = "SPARK_TRACKING_RELAY_SECRET"
RELAY_SECRET_KEY = "relay-secret"
_SECRET_REF = re.compile(r"^\{\{secrets/([^/}]+)/([^/}]+)\}\}$")
_SETTINGS = {s.name: s for s in SETTINGS}


class PlanError(ValueError):
    """An option that cannot be installed; the message names the value and the fix."""


@dataclass(frozen=True)
class Target:
    """Where the wheel and the init script are uploaded, seen from the API and from a node."""

    kind: str  # "volumes" | "workspace"
    folder: str  # API path: /Volumes/c/s/v/dir or /Shared/dir (workspace paths without /Workspace)

    def api_path(self, name: str) -> str:
        """The file as the REST API names it."""
        return posixpath.join(self.folder, name)

    def node_path(self, name: str) -> str:
        """The file as the init script sees it on a node."""
        path = self.api_path(name)
        return path if self.kind == "volumes" else "/Workspace" + path

    def init_script_entry(self) -> dict:
        """The ``init_scripts`` entry of the cluster spec for the uploaded init script."""
        return {self.kind: {"destination": self.api_path(INIT_SCRIPT_NAME)}}


def parse_target(text: str) -> Target:
    """``/Volumes/<catalog>/<schema>/<volume>[/dir]`` or a workspace folder (``/Workspace/...``,
    ``/Shared/...``, ``/Users/...``)."""
    path = posixpath.normpath("/" + text.strip().strip("/")) if text and text.strip() else ""
    if path.startswith("/Volumes/"):
        if len(path.split("/")) < 5:
            raise PlanError(f"--target {text!r} names no volume: use /Volumes/<catalog>/<schema>/<volume>[/folder].")
        return Target("volumes", path)
    if path.startswith("/Workspace/"):
        path = path[len("/Workspace") :]
    if path.startswith(("/Shared/", "/Users/", "/Repos/")) or path == "/Shared":
        return Target("workspace", path)
    raise PlanError(
        f"--target {text!r} is neither a Unity Catalog volume nor a workspace folder. Fix: pass "
        "/Volumes/<catalog>/<schema>/<volume>/spark_tracking (recommended) or /Workspace/Shared/spark_tracking."
    )


@dataclass
class InstallOptions:
    """What the admin asked for (already validated by ``options()``)."""

    target: Target
    wheel_name: str
    settings: dict[str, str] = field(default_factory=dict)  # -> SPARK_TRACKING_<NAME>
    unset: tuple[str, ...] = ()
    spark_conf: dict[str, str] = field(default_factory=dict)  # -> spark.sparktracking.<name>
    secret_scope: str = DEFAULT_SCOPE
    service_principal: bool = False
    packages: tuple[str, ...] = ()  # -> SPARK_TRACKING_INIT_PACKAGES (added to an earlier install's)


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, str]:
    """``["name=value", ...]`` -> dict; names must be known, non-secret settings that parse."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise PlanError(f"{flag} {item!r} is not NAME=VALUE (e.g. {flag} aml_workspace_id=/subscriptions/...).")
        check_setting_name(name, flag)
        setting = _SETTINGS[name]
        try:
            setting.parse(value)
        except (TypeError, ValueError) as exc:
            raise PlanError(f"{flag} {name}={value!r} is not a valid {setting.type_name}: {exc}.") from None
        if re.match(r"^[a-z][a-z0-9+.-]*://[^/@]+@", value, re.I):
            raise PlanError(
                f"{flag} {name}=...: the value holds credentials (user:password@), which would be "
                "visible in the cluster spec. Fix: pass the URI without them; credentials belong "
                "in the secret scope (--tenant-id/--client-id) or the store's own auth."
            )
        out[name] = value
    return out


def check_setting_name(name: str, flag: str) -> None:
    """Refuse unknown, secret or location settings with the list of what is allowed."""
    allowed = sorted(s.name for s in SETTINGS if not s.secret and s.name != "config_file")
    if name not in allowed:
        raise PlanError(f"{flag} {name!r}: not a setting the cluster can carry; use one of {', '.join(allowed)}.")


def _secret_ref(scope: str, key: str) -> str:
    return f"{{{{secrets/{scope}/{key}}}}}"


def managed(spec: dict) -> dict:
    """The fields of a cluster spec this module may change (absent fields stay absent)."""
    return {name: json.loads(json.dumps(spec[name])) for name in MANAGED_FIELDS if spec.get(name)}


def _is_ours(entry: dict) -> bool:
    for location in entry.values():
        if isinstance(location, dict) and posixpath.basename(str(location.get("destination", ""))) == INIT_SCRIPT_NAME:
            return True
    return False


def _ours_env(name: str, value: str) -> bool:
    if name.startswith(ENV_PREFIX):
        return True
    ref = _SECRET_REF.match(str(value))
    return name in SECRET_KEYS and ref is not None and ref.group(2) == SECRET_KEYS[name]


def _clean(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v}


def apply_install(spec: dict, opts: InstallOptions) -> dict:
    """The managed fields after install (the input is not modified)."""
    fields = managed(spec)
    scripts = list(fields.get("init_scripts", []))
    entry = opts.target.init_script_entry()
    if entry not in scripts:
        scripts = [s for s in scripts if not _is_ours(s)] + [entry]
    fields["init_scripts"] = scripts

    env = dict(fields.get("spark_env_vars", {}))
    for name in opts.unset:
        env.pop(_SETTINGS[name].env, None)
    env[WHEEL_ENV] = opts.target.node_path(opts.wheel_name)
    for name, value in opts.settings.items():
        env[_SETTINGS[name].env] = value
    if opts.packages:
        kept = str(env.get(PACKAGES_ENV, "")).split()
        env[PACKAGES_ENV] = " ".join(kept + [pkg for pkg in opts.packages if pkg not in kept])
    if opts.service_principal:
        for name, key in SECRET_KEYS.items():
            env[name] = _secret_ref(opts.secret_scope, key)
    env[RELAY_SECRET_ENV] = _secret_ref(opts.secret_scope, RELAY_SECRET_KEY)
    fields["spark_env_vars"] = env

    conf = dict(fields.get("spark_conf", {}))
    for name in opts.unset:
        conf.pop(_SETTINGS[name].spark_conf, None)
    for name, value in opts.spark_conf.items():
        conf[_SETTINGS[name].spark_conf] = value
    fields["spark_conf"] = conf
    return _clean(fields)


def apply_uninstall(spec: dict) -> dict:
    """The managed fields after uninstall: everything install can add is gone."""
    fields = managed(spec)
    fields["init_scripts"] = [s for s in fields.get("init_scripts", []) if not _is_ours(s)]
    fields["spark_env_vars"] = {k: v for k, v in fields.get("spark_env_vars", {}).items() if not _ours_env(k, v)}
    fields["spark_conf"] = {
        k: v for k, v in fields.get("spark_conf", {}).items() if not k.startswith(SPARK_CONF_PREFIX)
    }
    return _clean(fields)


def changed_fields(before: dict, after: dict) -> list[str]:
    """Names of the managed fields that differ (the update mask)."""
    return [name for name in MANAGED_FIELDS if before.get(name) != after.get(name)]


def render_diff(before: dict, after: dict, label: str) -> str:
    """A unified diff of the managed fields as JSON; empty when nothing changes."""

    def lines(fields: dict) -> list[str]:
        return json.dumps({k: fields[k] for k in MANAGED_FIELDS if k in fields}, indent=2, sort_keys=True).splitlines(
            True
        )

    return "".join(difflib.unified_diff(lines(before), lines(after), f"{label} (now)", f"{label} (after)"))


#: The line of the init script that ``bake_init_script`` replaces with the install's settings
#: (the script tells a copy nobody baked by ``BAKED=0``, and logs what its environment lacks).
BAKED_MARKER = "BAKED=0  # spark-tracking install: no settings baked into this copy\n"


def bake_init_script(script: bytes, env: dict[str, str]) -> bytes:
    """The init script with the install's non-secret ``SPARK_TRACKING_*`` variables written into
    it: in standard access mode on DBR 19+ only the predefined DB_* variables reach init scripts
    (docs/platform.md), so the cluster's environment variables never do. A variable that does reach
    the script wins over its baked value; secrets (``{{secrets/...}}`` references) are never
    baked. The wheel's path is prefixed with ``SPARK_TRACKING_INIT_ROOT`` like every other path
    of the script (empty on a real node; a test's stand-in for ``/``)."""
    import shlex

    text = script.decode()
    if BAKED_MARKER not in text:
        raise PlanError(f"the init script has no line {BAKED_MARKER.strip()!r} to bake the settings into")
    lines = ["BAKED=1  # spark-tracking install: settings baked into this copy (cluster variables that reach it win)\n"]
    for name in sorted(env):
        value = str(env[name])
        if not name.startswith(ENV_PREFIX) or _SECRET_REF.match(value):
            continue
        quoted = shlex.quote(value)
        if name == WHEEL_ENV:
            quoted = '"${SPARK_TRACKING_INIT_ROOT:-}"' + quoted
        lines.append(f'if [[ -z "${{{name}:-}}" ]]; then export {name}={quoted}; fi\n')
    return text.replace(BAKED_MARKER, "".join(lines), 1).encode()


def cluster_fragment(opts: InstallOptions) -> dict:
    """The fields to merge into a cluster JSON (Terraform, DABs, the clusters API)."""
    return apply_install({}, opts)


def policy_definition(opts: InstallOptions) -> dict:
    """A cluster-policy definition that fixes the installation on every cluster using it."""
    fragment = cluster_fragment(opts)
    policy: dict[str, dict] = {}
    for index, entry in enumerate(fragment.get("init_scripts", [])):
        for kind, location in entry.items():
            policy[f"init_scripts.{index}.{kind}.destination"] = {"type": "fixed", "value": location["destination"]}
    for name, value in fragment.get("spark_env_vars", {}).items():
        policy[f"spark_env_vars.{name}"] = {"type": "fixed", "value": value}
    for name, value in fragment.get("spark_conf", {}).items():
        policy[f"spark_conf.{name}"] = {"type": "fixed", "value": value}
    return policy
