"""``spark-tracking install`` and ``spark-tracking uninstall``: put spark_tracking on a Databricks
cluster (wheel + init script + settings + secrets), or take it off, in one command.

Authentication: databricks-sdk's chain (``--profile`` from ``~/.databrickscfg``, else
``DATABRICKS_HOST``/``DATABRICKS_TOKEN``, Azure CLI, ``ARM_*`` service principal, OAuth).
The service principal's secret is read from ``$AZURE_CLIENT_SECRET`` (never a flag, never printed).
"""

from __future__ import annotations

import json
import os
import sys

from .plan import DEFAULT_SCOPE, INIT_SCRIPT_NAME, WHEEL_ENV, PlanError


def register(subparsers) -> None:
    """Add ``install`` and ``uninstall`` to the ``spark-tracking`` parser."""
    p = subparsers.add_parser(
        "install",
        help="install spark_tracking on a Databricks cluster (wheel, init script, settings)",
        description="Upload the wheel and the init script, store the service principal in a secret scope, "
        "and add the init script, environment variables and Spark conf to the cluster spec. "
        "Idempotent: a second run changes nothing.",
    )
    p.add_argument("--cluster-id", help="the cluster to install on")
    p.add_argument(
        "--target",
        help="folder for the wheel and init script: /Volumes/<catalog>/<schema>/<volume>/"
        "spark_tracking or /Workspace/Shared/spark_tracking (default: where the "
        "cluster's current install is)",
    )
    p.add_argument("--wheel", help="the spark_tracking wheel to install (default: build one from this source checkout)")
    p.add_argument(
        "--aml-workspace-id", help="ARM id of the Azure ML workspace to log to (= --set aml_workspace_id=...)"
    )
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar="NAME=VALUE",
        help="a setting for every process of the cluster (env var SPARK_TRACKING_<NAME>); repeatable",
    )
    p.add_argument(
        "--unset",
        action="append",
        metavar="NAME",
        default=[],
        help="remove a setting an earlier install set; repeatable",
    )
    p.add_argument(
        "--spark-conf",
        action="append",
        metavar="NAME=VALUE",
        help="a setting as Spark conf spark.sparktracking.<name> (wins over --set in Spark sessions)",
    )
    p.add_argument("--tenant-id", help="service principal tenant (stored in the secret scope)")
    p.add_argument("--client-id", help="service principal client id; its secret is read from $AZURE_CLIENT_SECRET")
    p.add_argument(
        "--secret-scope",
        default=DEFAULT_SCOPE,
        help=f"secret scope for the service principal (default: {DEFAULT_SCOPE})",
    )
    p.add_argument(
        "--azureml-mlflow",
        action="store_true",
        help="have the init script install azureml-mlflow (the route to AML's artifacts and models) under the "
        "runtime's constraints; not as a cluster library, whose mlflow-skinny pin would replace the runtime's mlflow",
    )
    p.add_argument(
        "--replace-secrets",
        action="store_true",
        help="store the service principal given now even when the secret scope already holds one (a new "
        "service principal, a rotated secret); without it, keys already in the scope are kept",
    )
    _common(p)
    p.add_argument(
        "--print-policy",
        action="store_true",
        help="for job clusters and clusters managed as code: upload the wheel and the init script (baked with "
        "the policy's settings) to --target, store the secrets, and print the cluster-policy definition and "
        "cluster JSON; no cluster is touched",
    )
    p.set_defaults(func=_install)

    u = subparsers.add_parser(
        "uninstall",
        help="take spark_tracking off a Databricks cluster's spec",
        description="Remove the init script, SPARK_TRACKING_* variables, secret references "
        "and spark.sparktracking.* conf from the cluster spec. Uploaded files and "
        "secrets stay (other clusters may use them).",
    )
    u.add_argument("--cluster-id", required=True, help="the cluster to uninstall from")
    _common(u)
    u.set_defaults(func=_uninstall)


def _common(p) -> None:
    p.add_argument("--profile", help="~/.databrickscfg profile (default: the SDK's usual auth chain)")
    p.add_argument("--dry-run", action="store_true", help="print the exact change and make no change")
    p.add_argument(
        "--restart",
        action="store_true",
        help="accept a restart of a running cluster, or start a terminated one, to apply the change",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until a PENDING, RESTARTING or RESIZING cluster is RUNNING or TERMINATED (the states "
        "in which Databricks accepts a spec change) instead of stopping",
    )


def _fail(message: str) -> int:
    print(f"spark-tracking: error: {message}", file=sys.stderr)
    return 2


def _progress(name: str):
    tty = sys.stderr.isatty()
    shown = {"last": -1}

    def report(sent: int, total: int) -> None:
        percent = 100 if total == 0 else sent * 100 // total
        if percent == shown["last"] or (not tty and percent not in (0, 100)):
            return
        shown["last"] = percent
        line = f"  uploading {name}: {percent:3d}% ({sent / 1024:.1f}/{total / 1024:.1f} KiB)"
        sys.stderr.write(("\r" + line + ("\n" if percent == 100 else "")) if tty else line + "\n")
        sys.stderr.flush()

    return report


def _init_script_bytes() -> bytes:
    from importlib import resources

    return (resources.files("spark_tracking") / "resources" / INIT_SCRIPT_NAME).read_bytes()


def _wheel(path: str | None) -> tuple[str, bytes]:
    """(file name, bytes) of the wheel to upload; built from the source checkout when not given."""
    if path:
        name = os.path.basename(path)
        if not (name.startswith("spark_tracking-") and name.endswith(".whl")):
            raise PlanError(
                f"--wheel {path!r} is not a spark_tracking wheel (spark_tracking-<version>-py3-none-any.whl)."
            )
        try:
            with open(path, "rb") as fh:
                return name, fh.read()
        except OSError as exc:
            raise PlanError(f"--wheel {path!r} cannot be read: {exc}.") from None
    import subprocess
    import tempfile

    import spark_tracking

    source = os.path.dirname(os.path.dirname(os.path.abspath(spark_tracking.__file__)))
    if not os.path.isfile(os.path.join(source, "setup.py")):
        from .._version import __version__

        raise PlanError(
            "no --wheel given and spark_tracking is not a source checkout. Fix: "
            f"pip download spark-tracking=={__version__} --no-deps -d . and pass --wheel."
        )
    with tempfile.TemporaryDirectory() as out:
        print(f"building the wheel from {source}", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", source, "-w", out],
            capture_output=True,
            text=True,
        )
        wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
        if done.returncode != 0 or len(wheels) != 1:
            raise PlanError(
                f"building the wheel from {source} failed: {done.stderr.strip()[-2000:]}. "
                "Fix: pip install wheel setuptools, or build it yourself and pass --wheel."
            )
        with open(os.path.join(out, wheels[0]), "rb") as fh:
            return wheels[0], fh.read()


def _options(args, cluster_spec: dict | None = None):
    from . import plan as p

    settings = p.parse_assignments(args.settings, "--set")
    if args.aml_workspace_id:
        settings["aml_workspace_id"] = args.aml_workspace_id
    for name in args.unset:
        p.check_setting_name(name, "--unset")
    spark_conf = p.parse_assignments(args.spark_conf, "--spark-conf")
    target_text = args.target
    if not target_text and cluster_spec:
        current = (cluster_spec.get("spark_env_vars") or {}).get(WHEEL_ENV, "")
        if current:
            target_text = os.path.dirname(current)
    if not target_text:
        raise PlanError(
            "--target is required for a first install: pass /Volumes/<catalog>/<schema>/<volume>/"
            "spark_tracking (or /Workspace/Shared/spark_tracking)."
        )
    target = p.parse_target(target_text)
    secrets = None
    if args.client_id or args.tenant_id:
        secret = os.environ.get("AZURE_CLIENT_SECRET", "")
        missing = [
            flag for flag, value in (("--tenant-id", args.tenant_id), ("--client-id", args.client_id)) if not value
        ]
        if missing or not secret:
            what = ", ".join(missing + ([] if secret else ["$AZURE_CLIENT_SECRET"]))
            raise PlanError(
                f"a service principal needs --tenant-id, --client-id and $AZURE_CLIENT_SECRET; "
                f"missing: {what}. Fix: export AZURE_CLIENT_SECRET=... (read from the environment "
                "so it stays out of your shell history) and pass both flags."
            )
        secrets = {"AZURE_TENANT_ID": args.tenant_id, "AZURE_CLIENT_ID": args.client_id, "AZURE_CLIENT_SECRET": secret}
    return p.InstallOptions(
        target=target,
        wheel_name="",
        settings=settings,
        unset=tuple(args.unset),
        spark_conf=spark_conf,
        secret_scope=args.secret_scope,
        service_principal=secrets is not None,
        packages=(p.AZUREML_MLFLOW,) if args.azureml_mlflow else (),
    ), secrets


def _install(args) -> int:
    return _guarded(_do_install, args)


def _uninstall(args) -> int:
    return _guarded(_do_uninstall, args)


def _guarded(func, args) -> int:
    """Run a command; refusals and Databricks errors become one clear line, not a traceback."""
    from databricks.sdk.errors import DatabricksError

    try:
        return func(args)
    except PlanError as exc:
        return _fail(str(exc))
    except DatabricksError as exc:
        return _fail(
            f"Databricks refused the request: {type(exc).__name__}: {exc}. Fix the cause above "
            "(permissions on the cluster, volume or secret scope; the cluster id) and run again; "
            "steps already done are skipped."
        )


def _workspace(args):
    from .workspace import Workspace, client

    try:
        return Workspace(client(args.profile))
    except ValueError as exc:  # the SDK found no usable credentials
        raise PlanError(
            f"cannot authenticate to Databricks ({exc}). Fix: pass --profile <name> from "
            "~/.databrickscfg, or set DATABRICKS_HOST and DATABRICKS_TOKEN, or log in with "
            "`az login` and set DATABRICKS_HOST."
        ) from None


def _do_install(args) -> int:
    from .installer import plan_install

    if args.print_policy:
        return _publish(args)
    if not args.cluster_id:
        return _fail("--cluster-id is required (or --print-policy for clusters managed as code).")
    ws = _workspace(args)
    _wait_if_asked(ws, args)
    _, _, spec = ws.cluster(args.cluster_id)
    opts, secrets = _options(args, cluster_spec=spec)
    _follow_the_workspace_link(opts, ws, spec)
    _bake_the_cloud(opts, ws.host, spec)
    wheel_name, wheel_bytes = _wheel(args.wheel)
    opts.wheel_name = wheel_name
    files = {wheel_name: wheel_bytes, INIT_SCRIPT_NAME: _init_script_bytes()}
    plan = plan_install(ws, args.cluster_id, opts, files, secrets, args.restart, _progress, args.replace_secrets)
    return _finish(plan, args, "install", f"spark-tracking install --target {opts.target.folder} --print-policy")


def _publish(args) -> int:
    """``install --print-policy``: upload the files the policy refers to (the init script baked
    with the policy's own settings: job clusters and policy-managed clusters get no install of
    their own), store the secrets, then print the policy. The plan goes to stderr, the policy
    to stdout."""
    from .installer import plan_publish

    if not args.target:
        raise PlanError(
            "--print-policy needs --target: the folder the policy's init script and wheel are uploaded to "
            "(/Volumes/<catalog>/<schema>/<volume>/spark_tracking or /Workspace/Shared/spark_tracking)."
        )
    opts, secrets = _options(args)
    ws = _workspace(args)
    _follow_the_workspace_link(opts, ws, {})
    _bake_the_cloud(opts, ws.host, {})
    wheel_name, wheel_bytes = _wheel(args.wheel)
    opts.wheel_name = wheel_name
    files = {wheel_name: wheel_bytes, INIT_SCRIPT_NAME: _init_script_bytes()}
    plan = plan_publish(ws, opts, files, secrets, _progress, args.replace_secrets)
    plan.describe(sys.stderr)
    if args.dry_run:
        print(f"dry run: nothing uploaded ({len(plan.steps)} step(s) would run)", file=sys.stderr)
    else:
        plan.execute()
        print(
            f"files: done ({len(plan.steps)} step(s))" if plan.changes else "files: already in place, nothing changed",
            file=sys.stderr,
        )
    _print_policy(opts)
    return 0


#: settings that name the store; without any, nodes follow the Databricks workspace's AML link
_STORE_SETTINGS = ("tracking_uri", "aml_workspace_id", "subscription_id", "workspace_name", "databricks_resource_id")


def _follow_the_workspace_link(opts, ws, spec: dict) -> None:
    """No store named (here or by an earlier install): give the nodes this workspace's ARM id,
    known to the databricks-sdk configuration on Azure, so sessions follow its AML link (a
    session starts before Spark, so it cannot read the id from the cluster tags)."""
    from ..config import setting

    env = spec.get("spark_env_vars") or {}
    kept = [n for n in _STORE_SETTINGS if n not in opts.unset and setting(n).env in env]
    if any(n in opts.settings for n in _STORE_SETTINGS) or kept:
        return
    resource_id = ws.azure_resource_id()
    if resource_id:
        opts.settings["databricks_resource_id"] = resource_id


def _bake_the_cloud(opts, databricks_host: str, spec: dict) -> None:
    """No cloud named (here or by an earlier install): set ``azure_cloud`` to the sovereign cloud
    the settings or the workspace point at, so that every node asks that cloud's Azure AD for
    that cloud's token scope. In order: the ``azure_arm_endpoint`` setting, an AML
    ``tracking_uri``'s host (``<region>.api.ml.azure.us`` / ``.cn``), the Databricks workspace's
    own host (``.databricks.azure.us`` / ``.cn``, databricks-sdk's DNS zones). The public cloud
    is the default and is not written."""
    from ..azure.clouds import cloud_of_arm_endpoint, cloud_of_databricks_host, cloud_of_uri
    from ..config import setting

    kept = setting("azure_cloud").env in (spec.get("spark_env_vars") or {}) and "azure_cloud" not in opts.unset
    if "azure_cloud" in opts.settings or kept:
        return
    for value, find in (
        (opts.settings.get("azure_arm_endpoint"), cloud_of_arm_endpoint),
        (opts.settings.get("tracking_uri"), cloud_of_uri),
        (databricks_host, cloud_of_databricks_host),
    ):
        found = find(value) if value else None
        if found is not None:
            if found.name != "AzureCloud":
                opts.settings["azure_cloud"] = found.name
            return


#: seconds between two looks at a cluster that is changing state (tests set it to 0)
WAIT_POLL_SECONDS = 10.0


def _wait_if_asked(ws, args) -> None:
    if not args.wait:
        return
    print(f"waiting until cluster {args.cluster_id} is RUNNING or TERMINATED", file=sys.stderr)
    try:
        ws.wait_until_editable(args.cluster_id, poll=WAIT_POLL_SECONDS)
    except TimeoutError as exc:
        raise PlanError(f"{exc}. Fix: run again once the cluster is RUNNING or TERMINATED.") from None


def _do_uninstall(args) -> int:
    from .installer import plan_uninstall

    ws = _workspace(args)
    _wait_if_asked(ws, args)
    plan = plan_uninstall(ws, args.cluster_id, args.restart)
    return _finish(plan, args, "uninstall", None)


def _finish(plan, args, verb: str, policy_hint: str | None) -> int:
    plan.describe(sys.stdout)
    if args.dry_run:
        print(f"dry run: nothing changed ({len(plan.steps)} step(s) would run)")
        return 0
    if plan.blocked:
        return _fail(plan.blocked)
    plan.execute()
    print(f"{verb}: done ({len(plan.steps)} step(s))" if plan.changes else f"{verb}: already done, nothing changed")
    if policy_hint and plan.changes:
        print(f"clusters managed as code: {policy_hint}")
    return 0


def _print_policy(opts) -> None:
    from . import plan as p

    print("# cluster policy definition (fixes the installation on every cluster that uses the policy)")
    print(json.dumps(p.policy_definition(opts), indent=2, sort_keys=True))
    print("# cluster JSON fields (clusters API, Terraform databricks_cluster, asset bundles)")
    print(json.dumps(p.cluster_fragment(opts), indent=2, sort_keys=True))
    print(
        f"# {opts.target.folder} holds the wheel and {INIT_SCRIPT_NAME} with these settings baked in; after "
        "changing a setting, run this command again with the same options"
    )
