"""Helpers the cluster init script runs with the cluster Python, after the wheel is installed.

``python -m spark_tracking.install.node COMMAND``:

- ``missing-requirements``: this distribution's requirements that nothing installed satisfies,
  one per line. A requirement met by an equivalent distribution counts as present (the
  runtime's ``mlflow`` provides the ``mlflow`` package that ``mlflow-skinny`` would install over
  it). A present distribution outside the range is reported on stderr and left as it is.
- ``constraints``: ``name==version`` for every installed distribution, so that installing
  what is missing can never replace what the runtime provides. Distributions whose version is
  not PEP 440 (Ubuntu's system packages in ``/databricks/python3``, e.g. ``distro-info
  1.1build1``) are left out: pip refuses a whole constraints file over one such line ("Invalid
  requirement"), and pip cannot install over them anyway.
- ``write-config PATH``: write the non-secret ``SPARK_TRACKING_*`` settings of the
  environment to the config file, exactly (settings not in the environment are removed).
  Prints whether the file changed. A value that does not parse fails with its name and fix.
- ``check``: resolve the configuration as a session on this node will, print where runs go
  (credentials masked), and fail on a half-configured service principal.

Standard library and ``spark_tracking.config`` only: this runs before anything else is known
to be importable, and must never print a secret.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
import os
import re
import sys

from ..config import SETTINGS, Config, ConfigError, read_config_file, write_config_file

DIST_NAME = "spark-tracking"
#: A requirement on the key is satisfied by any of these installed distributions (same package).
EQUIVALENT = {"mlflow-skinny": ("mlflow",), "mlflow": ("mlflow-skinny",)}
#: The service principal azure-identity's EnvironmentCredential reads; all or none.
SERVICE_PRINCIPAL_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
#: Settings the config file never holds: where the file is.
_NOT_IN_FILE = {"config_file"}


def _packaging(module: str):
    try:
        return importlib.import_module(f"packaging.{module}")
    except ImportError:  # a bare runtime: pip's vendored copy is always there
        return importlib.import_module(f"pip._vendor.packaging.{module}")


def constraint_lines(installed: dict[str, str], skip: str = "") -> tuple[list[str], list[str]]:
    """(``name==version`` lines pip accepts, ``name version`` of what was left out as not PEP 440)."""
    versions = _packaging("version")
    lines, left_out = [], []
    for name, version in sorted(installed.items()):
        if name == skip:
            continue
        try:
            versions.Version(version)
        except versions.InvalidVersion:
            left_out.append(f"{name} {version}")
            continue
        lines.append(f"{name}=={version}")
    return lines, left_out


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution on sys.path (first one wins)."""
    canonical = _packaging("utils").canonicalize_name
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def missing_requirements(requirements: list[str], installed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(requirements to install, warnings about present distributions outside their range).

    Pure: ``requirements`` as in ``Requires-Dist``, ``installed`` from installed_versions().
    Requirements behind an extra are skipped (the runtime provides pyspark and friends).
    """
    requirement, canonical = _packaging("requirements").Requirement, _packaging("utils").canonicalize_name
    missing, warnings = [], []
    for text in requirements:
        req = requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonical(req.name)
        for candidate in (name, *EQUIVALENT.get(name, ())):
            if candidate in installed:
                version = installed[candidate]
                if req.specifier and not req.specifier.contains(version, prereleases=True):
                    warnings.append(
                        f"{candidate} {version} (from the runtime) is outside spark-tracking's tested "
                        f"range {req.name}{req.specifier}; left unchanged. Fix if tracking fails: "
                        f"use a Databricks Runtime whose {candidate} is in that range."
                    )
                break
        else:
            missing.append(str(req))
    return missing, warnings


def settings_from_env(environ) -> dict[str, object]:
    """The non-secret settings present in ``environ``, parsed (ConfigError names a bad one)."""
    values: dict[str, object] = {}
    for s in SETTINGS:
        raw = environ.get(s.env, "")
        if s.secret or s.name in _NOT_IN_FILE or raw == "":
            continue
        try:
            s.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{s.env}={raw!r} is not a valid {s.type_name}: {exc}. Fix the cluster's "
                f"environment variable (spark-tracking install --set {s.name}=...)."
            ) from None
        values[s.name] = raw
    return values


def write_config(path: str, environ) -> bool:
    """Write exactly the environment's non-secret settings to ``path``; True when it changed."""
    wanted = settings_from_env(environ)
    current = read_config_file(path) if os.path.isfile(path) else None
    if current == wanted:
        return False
    updates: dict[str, object] = {s.name: None for s in SETTINGS if s.name not in _NOT_IN_FILE and not s.secret}
    updates.update(wanted)
    write_config_file(updates, path)
    return True


def _mask_uri(uri: str) -> str:
    return re.sub(r"//[^/@]+@", "//***@", uri)


def check(environ) -> tuple[list[str], list[str]]:
    """(information lines, errors) about the configuration a session on this node resolves to."""
    info: list[str] = []
    errors: list[str] = []
    present = [name for name in SERVICE_PRINCIPAL_ENV if environ.get(name)]
    if present and len(present) < len(SERVICE_PRINCIPAL_ENV):
        absent = [name for name in SERVICE_PRINCIPAL_ENV if name not in present]
        errors.append(
            f"service principal half configured: {', '.join(present)} set, {', '.join(absent)} missing. "
            "Fix: spark-tracking install --cluster-id <id> --tenant-id ... --client-id ... with "
            "AZURE_CLIENT_SECRET in your environment (stored in the secret scope)."
        )
    try:
        cfg = Config.resolve(spark_conf={}, environ=environ)
    except ConfigError as exc:
        errors.append(str(exc))
        return info, errors
    if cfg.disabled:
        info.append(f"spark_tracking is disabled ({cfg.sources.get('disabled')}): sessions stay unconfigured")
        return info, errors
    if cfg.tracking_uri:
        info.append(f"runs go to {_mask_uri(cfg.tracking_uri)} (from {cfg.sources['tracking_uri']})")
    elif (source := _aml_source(cfg, environ, errors)) is not None:
        info.append(
            f"runs go to the Azure ML workspace named by {source.description}; each driver session "
            "resolves it through ARM (check with: spark-tracking doctor)"
        )
        info.append(
            "credentials: "
            + (
                "service principal (AZURE_CLIENT_ID from the cluster environment)"
                if present
                else "the cluster's managed identity or azure-identity defaults"
            )
        )
    elif not errors:
        info.append(
            f"WARNING: no central store configured: runs go to the embedded store {cfg.embedded_store_uri} "
            "on the driver's local disk and are lost with the cluster. Fix: spark-tracking install "
            "--cluster-id <id> --set aml_workspace_id=<ARM id> (or --set tracking_uri=<URI>)."
        )
    info.append(cfg.debug_string())
    return info, errors


def _aml_source(cfg, environ, errors: list[str]):
    """The AML link source a session will follow (files and variables only: no network here)."""
    from ..azure import AzureLinkError
    from ..azure.link import find_source

    try:
        return find_source(cfg, environ=environ, spark_conf={})
    except AzureLinkError as exc:
        errors.append(str(exc))
        return None


def _restore_user_disabled() -> None:
    # The init script turns the hook off for its own processes; checks see the user's value.
    if "SPARK_TRACKING_INIT_USER_DISABLED" in os.environ:
        user_value = os.environ.pop("SPARK_TRACKING_INIT_USER_DISABLED")
        if user_value:
            os.environ["SPARK_TRACKING_DISABLED"] = user_value
        else:
            os.environ.pop("SPARK_TRACKING_DISABLED", None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spark_tracking.install.node``; see the module docstring."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    _restore_user_disabled()
    if command == "missing-requirements":
        missing, warnings = missing_requirements(metadata.requires(DIST_NAME) or [], installed_versions())
        for line in warnings:
            print("WARNING: " + line, file=sys.stderr)
        if missing:
            print("\n".join(missing))
        return 0
    if command == "constraints":
        canonical = _packaging("utils").canonicalize_name
        lines, left_out = constraint_lines(installed_versions(), skip=canonical(DIST_NAME))
        if left_out:
            print("not pinned (versions pip cannot parse): " + ", ".join(left_out), file=sys.stderr)
        print("\n".join(lines))
        return 0
    if command == "write-config":
        (path,) = args
        try:
            changed = write_config(path, os.environ)
        except ConfigError as exc:
            print(str(exc))
            return 1
        names = sorted(read_config_file(path))
        print(f"config file {path} {'written' if changed else 'unchanged'}: {json.dumps(names)}")
        return 0
    if command == "check":
        info, errors = check(os.environ)
        print("\n".join(errors or info))
        return 1 if errors else 0
    print(f"unknown command {command!r}; see python -m spark_tracking.install.node", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
