"""Helpers the cluster init script runs with the cluster Python, after the wheel is installed.

``python -m spark_tracking.install.node COMMAND``:

- ``missing-requirements``: this distribution's requirements that nothing installed satisfies,
  one per line, plus MLflow (``RUNTIME_REQUIREMENTS``: the wheel does not require it, see
  setup.py). A requirement met by an equivalent distribution counts as present (the
  runtime's ``mlflow`` provides the ``mlflow`` package that ``mlflow-skinny`` would install over
  it). A present distribution outside the range is reported on stderr and left as it is.
- ``constraints``: ``name==version`` for every installed distribution, so that installing
  what is missing can never replace what the runtime provides; an installed ``mlflow`` also
  pins ``mlflow-skinny`` to its own version (and the other way round): both install the same
  ``mlflow/`` package folder, so a newer skinny over DBR 14.3/15.4 ML's full ``mlflow`` 2.x
  would replace it (measured: mlflow 2.9.2 + skinny -> ``import mlflow`` reports 3.18.0).
  Distributions whose version is not PEP 440 (Ubuntu's system packages in
  ``/databricks/python3``, e.g. ``distro-info 1.1build1``) are left out: pip refuses a whole
  constraints file over one such line ("Invalid requirement"), and pip cannot install over them.
- ``unsatisfied REQUIREMENT...``: the given requirements (``SPARK_TRACKING_INIT_PACKAGES``) that
  nothing installed satisfies, with the same equivalence, one per line.
- ``to-install REPORT``: from pip's ``--dry-run --report`` of those packages under the
  constraints, ``name==version`` of what to install, leaving out a distribution whose
  equivalent is installed at that same version (the runtime's ``mlflow`` is the
  ``mlflow-skinny`` azureml-mlflow asks for: nothing is written over its folder).
- ``write-config PATH``: write the non-secret ``SPARK_TRACKING_*`` settings of the
  environment to the config file, exactly (settings not in the environment are removed).
  Prints whether the file changed. A value that does not parse fails with its name and fix.
- ``check``: resolve the configuration as a session on this node will, print where runs go
  (credentials masked), and fail on a half-configured service principal.

Standard library and ``spark_tracking.config`` only: this runs before anything else is known
to be importable, and must never print a secret.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import sys

from .._compat.pip import packaging_module
from ..config import Config, ConfigError, read_config_file, write_config_file
from ..settings import SETTINGS

DIST_NAME = "spark-tracking"
#: A requirement on the key is satisfied by any of these installed distributions (same package).
EQUIVALENT = {"mlflow-skinny": ("mlflow",), "mlflow": ("mlflow-skinny",)}
#: Requirements the init script meets that the wheel does not declare: MLflow, as ``mlflow`` or
#: ``mlflow-skinny``, whichever the runtime has (no single requirement can say "either"; a
#: requirement on ``mlflow-skinny`` in the wheel made pip install the newest skinny over the full
#: ``mlflow`` 2.x of DBR 14.3/15.4 ML). The range is the one CI runs (2.9.2, 3.0.1, the latest).
RUNTIME_REQUIREMENTS = ("mlflow-skinny>=2.9,<4",)
#: The service principal azure-identity's EnvironmentCredential reads; all or none.
SERVICE_PRINCIPAL_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
#: Settings the config file never holds: where the file is.
_NOT_IN_FILE = {"config_file"}


def constraint_lines(installed: dict[str, str], skip: str = "") -> tuple[list[str], list[str]]:
    """(``name==version`` lines pip accepts, ``name version`` of what was left out as not PEP 440)."""
    versions = packaging_module("version")
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


def equivalent_pins(installed: dict[str, str]) -> dict[str, str]:
    """Pins for the distributions absent here whose equivalent is installed (``mlflow-skinny``
    at the runtime ``mlflow``'s version, and the other way round)."""
    return {
        other: installed[name]
        for name, others in EQUIVALENT.items()
        if name in installed
        for other in others
        if other not in installed
    }


def unsatisfied(requirements: list[str], installed: dict[str, str]) -> list[str]:
    """The requirements nothing installed satisfies (an equivalent distribution counts)."""
    requirement, canonical = packaging_module("requirements").Requirement, packaging_module("utils").canonicalize_name
    out = []
    for text in requirements:
        req = requirement(text)
        name = canonical(req.name)
        if not any(
            candidate in installed and req.specifier.contains(installed[candidate], prereleases=True)
            for candidate in (name, *EQUIVALENT.get(name, ()))
        ):
            out.append(text)
    return out


def to_install(report: dict, installed: dict[str, str]) -> list[str]:
    """``name==version`` of what pip's ``--dry-run --report`` would install, minus a distribution
    whose equivalent is installed at the same version (same package folder, same code)."""
    canonical = packaging_module("utils").canonicalize_name
    out = []
    for item in report.get("install", []):
        meta = item.get("metadata") or {}
        name, version = canonical(meta.get("name", "")), meta.get("version", "")
        if any(installed.get(other) == version for other in EQUIVALENT.get(name, ())):
            continue
        out.append(f"{name}=={version}")
    return out


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution on sys.path (first one wins)."""
    canonical = packaging_module("utils").canonicalize_name
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
    requirement, canonical = packaging_module("requirements").Requirement, packaging_module("utils").canonicalize_name
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


def mlflow_overwritten(installed: dict[str, str]) -> str | None:
    """The warning for an ``mlflow-skinny`` installed over the runtime's full ``mlflow`` at
    another version (a cluster library or ``%pip`` of a package that requires it, e.g.
    azureml-mlflow): both own the ``mlflow/`` folder, so ``import mlflow`` reports the skinny's
    version and the runtime's MLflow is gone (measured: 2.9.2 + skinny -> 3.18.0)."""
    full, skinny = installed.get("mlflow"), installed.get("mlflow-skinny")
    if not (full and skinny) or full == skinny:
        return None
    return (
        f"WARNING: mlflow-skinny {skinny} is installed over the runtime's mlflow {full} (the same mlflow/ "
        f"package folder): import mlflow now runs MLflow {skinny}. Fix: remove the library that brought it "
        "(azureml-mlflow as a cluster library does: use 'spark-tracking install --azureml-mlflow'), then "
        f"pip uninstall -y mlflow-skinny && pip install --force-reinstall --no-deps mlflow=={full}"
    )


def check(environ, installed: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(information lines, errors) about the configuration a session on this node resolves to."""
    info: list[str] = []
    errors: list[str] = []
    overwritten = mlflow_overwritten(installed_versions() if installed is None else installed)
    if overwritten:
        info.append(overwritten)
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
        requirements = [*(metadata.requires(DIST_NAME) or []), *RUNTIME_REQUIREMENTS]
        missing, warnings = missing_requirements(requirements, installed_versions())
        for line in warnings:
            print("WARNING: " + line, file=sys.stderr)
        if missing:
            print("\n".join(missing))
        return 0
    if command == "constraints":
        canonical = packaging_module("utils").canonicalize_name
        installed = installed_versions()
        lines, left_out = constraint_lines({**equivalent_pins(installed), **installed}, skip=canonical(DIST_NAME))
        if left_out:
            print("not pinned (versions pip cannot parse): " + ", ".join(left_out), file=sys.stderr)
        print("\n".join(lines))
        return 0
    if command == "unsatisfied":
        print("\n".join(unsatisfied(args, installed_versions())))
        return 0
    if command == "to-install":
        (path,) = args
        with open(path, encoding="utf-8") as fh:
            print("\n".join(to_install(json.load(fh), installed_versions())))
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
