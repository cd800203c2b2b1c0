"""Install and uninstall as plans: read the workspace (GET requests only), work out every step,
then either describe the steps (``--dry-run``) or carry them out. Re-running on an installed
cluster finds nothing to do and changes nothing.
"""

from __future__ import annotations

import functools
import secrets as secrets_module
from dataclasses import dataclass, field
from typing import Callable, TextIO

from . import plan as p
from .workspace import EDITABLE_STATES, TRANSITIONAL_STATES, Workspace

#: States in which Databricks applies a spec change by restarting the cluster.
_LIVE_STATES = ("RUNNING", "PENDING", "RESIZING", "RESTARTING")


@dataclass
class Step:
    """One change to make. ``text`` describes it without any secret value."""

    kind: str  # folder | upload | scope | secret | cluster | start | restart
    text: str
    run: Callable[[], None]


@dataclass
class Plan:
    """Everything install or uninstall will do to one cluster and its files."""

    cluster_id: str
    header: str
    steps: list[Step] = field(default_factory=list)
    diff: str = ""
    notes: list[str] = field(default_factory=list)
    blocked: str | None = None  # why the plan cannot run as asked (with the fix)

    @property
    def changes(self) -> bool:
        """True when the plan has steps (something to change)."""
        return bool(self.steps)

    def describe(self, out: TextIO) -> None:
        """Print the plan to ``out``: each step, the cluster spec diff and notes (no secret values)."""
        print(self.header, file=out)
        for step in self.steps:
            print(f"  {step.kind:<8} {step.text}", file=out)
        if self.diff:
            print("cluster spec change:", file=out)
            out.write(self.diff if self.diff.endswith("\n") else self.diff + "\n")
        if not self.steps:
            print("  nothing to change", file=out)
        for note in self.notes:
            print(f"note: {note}", file=out)

    def execute(self) -> None:
        """Run the steps in order; :class:`PlanError` when the plan is blocked."""
        if self.blocked:
            raise p.PlanError(self.blocked)
        for step in self.steps:
            step.run()


def _size(data: bytes) -> str:
    return f"{len(data) / 1024:.1f} KiB"


def _cluster_steps(
    ws: Workspace, plan: Plan, state: str, before: dict, after: dict, restart: bool, files_changed: bool, verb: str
) -> None:
    mask = p.changed_fields(before, after)
    live = state in _LIVE_STATES
    if state in TRANSITIONAL_STATES and (mask or (files_changed and restart)):
        plan.blocked = (
            f"cluster {plan.cluster_id} is {state}: Databricks accepts a spec change or restart only "
            f"when a cluster is {' or '.join(EDITABLE_STATES)} (INVALID_STATE otherwise). Fix: run "
            f"{verb} again with --wait, which waits until it is, or once it is."
        )
        plan.notes.append(plan.blocked)
    if mask:
        plan.diff = p.render_diff(before, after, f"cluster {plan.cluster_id}")
        plan.steps.append(
            Step("cluster", f"update {', '.join(mask)}", lambda: ws.update_cluster(plan.cluster_id, after, mask))
        )
        if live and not restart and not plan.blocked:
            plan.blocked = (
                f"cluster {plan.cluster_id} is {state}: Databricks restarts a running cluster to "
                f"apply a new spec, which interrupts its notebooks and jobs. Fix: run {verb} "
                "again with --restart to accept that, or terminate the cluster first."
            )
            plan.notes.append(plan.blocked)
        elif live:
            plan.notes.append("Databricks restarts the running cluster to apply the change")
        elif restart:
            plan.steps.append(
                Step("start", f"start cluster {plan.cluster_id}", lambda: ws.start_cluster(plan.cluster_id))
            )
        else:
            plan.notes.append(f"the change takes effect when cluster {plan.cluster_id} next starts")
    elif files_changed:
        if restart and live:
            plan.steps.append(
                Step(
                    "restart",
                    f"restart cluster {plan.cluster_id} to load the new files",
                    lambda: ws.restart_cluster(plan.cluster_id),
                )
            )
        elif restart:
            plan.steps.append(
                Step("start", f"start cluster {plan.cluster_id}", lambda: ws.start_cluster(plan.cluster_id))
            )
        elif live:
            plan.notes.append(f"the new files load when cluster {plan.cluster_id} restarts (--restart)")


def _file_steps(
    ws: Workspace,
    plan: Plan,
    target: p.Target,
    files: dict[str, bytes],
    env: dict[str, str],
    progress: Callable[[str], Callable[[int, int], None]] | None,
) -> bool:
    """Steps that bring the target folder's files up to date; True when any file changes. The
    init script is uploaded with ``env``'s non-secret settings baked in: standard access mode on
    DBR 19+ gives init scripts only the DB_* variables (cluster variables that do reach it win)."""
    if p.INIT_SCRIPT_NAME in files:
        files = dict(files, **{p.INIT_SCRIPT_NAME: p.bake_init_script(files[p.INIT_SCRIPT_NAME], env)})
    if not ws.folder_exists(target):
        plan.steps.append(Step("folder", f"create {target.folder}", lambda: ws.create_folder(target)))
        remote = dict.fromkeys(files)
    else:
        remote = {n: ws.read_file(target, n) for n in files}
    files_changed = False
    for file_name, data in files.items():
        if remote[file_name] == data:
            plan.notes.append(f"{target.api_path(file_name)} is up to date")
            continue
        files_changed = True
        plan.steps.append(
            Step(
                "upload",
                f"{target.api_path(file_name)} ({_size(data)})",
                functools.partial(ws.write_file, target, file_name, data, progress(file_name) if progress else None),
            )
        )
    return files_changed


def _secret_steps(ws: Workspace, plan: Plan, scope: str, secrets: dict[str, str] | None, replace_secrets: bool) -> None:
    """Steps that put the service principal and the relay secret in ``scope``, decided from the
    scope's list of keys only. A secret's value cannot be read back (the REST ``secrets/get`` is
    for DBUtils: BAD_REQUEST outside a notebook, databricks-sdk ``SecretsAPI.get_secret``), so
    stored values are never compared: keys that exist are kept, unless ``replace_secrets``."""
    scope_exists = ws.scope_exists(scope)
    keys = ws.secret_keys(scope) if scope_exists else set()
    if not scope_exists:
        plan.steps.append(Step("scope", f"create secret scope {scope}", lambda: ws.create_scope(scope)))
    if secrets:
        wanted = [p.SECRET_KEYS[env_name] for env_name in secrets]
        missing = [key for key in wanted if key not in keys]
        if missing or replace_secrets:
            # all three together when any is missing: the scope never mixes two service principals
            for env_name, value in secrets.items():
                key = p.SECRET_KEYS[env_name]
                plan.steps.append(
                    Step(
                        "secret",
                        f"{scope}/{key} (for {env_name}; value not shown)",
                        functools.partial(ws.put_secret, scope, key, value),
                    )
                )
        else:
            plan.notes.append(
                f"secret scope {scope} already holds {', '.join(wanted)}: kept as they are. Databricks lets "
                "only notebooks read a secret's value, so install cannot compare them with the service "
                "principal given now; to store it (a new service principal, a rotated secret) run again "
                "with --replace-secrets"
            )
    if p.RELAY_SECRET_KEY not in keys:
        # made once and kept: a running cluster holds the value it started with
        plan.steps.append(
            Step(
                "secret",
                f"{scope}/{p.RELAY_SECRET_KEY} (random, for {p.RELAY_SECRET_ENV}; value not shown)",
                lambda: ws.put_secret(scope, p.RELAY_SECRET_KEY, secrets_module.token_hex(32)),
            )
        )
    user = ws.current_user()
    plan.notes.append(
        f"the cluster's {{{{secrets/{scope}/...}}}} references are resolved when it starts, with the permissions of "
        f"its owner or last editor ({'after this install: ' + user if user else 'whoever runs install'}), who "
        f"needs READ on secret scope {scope}; every user of the cluster can read the resolved values from code"
    )


def plan_install(
    ws: Workspace,
    cluster_id: str,
    opts: p.InstallOptions,
    files: dict[str, bytes],
    secrets: dict[str, str] | None = None,
    restart: bool = False,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
    replace_secrets: bool = False,
) -> Plan:
    """Read the cluster, the target folder and the secret scope's keys; return the steps of install.

    ``files``: name -> bytes to upload into the target folder (the wheel, the init script).
    ``secrets``: env var name (``AZURE_TENANT_ID``...) -> value, stored in ``opts.secret_scope``
    when a key is missing there, or always with ``replace_secrets``.
    ``progress(name)`` returns the callback that reports an upload's bytes sent.
    """
    name, state, spec = ws.cluster(cluster_id)
    plan = Plan(cluster_id, f'cluster {cluster_id} "{name}" ({state}) on {ws.host}')
    after = p.apply_install(spec, opts)
    files_changed = _file_steps(ws, plan, opts.target, files, after.get("spark_env_vars", {}), progress)
    _secret_steps(ws, plan, opts.secret_scope, secrets, replace_secrets)
    _cluster_steps(ws, plan, state, p.managed(spec), after, restart, files_changed, "install")
    return plan


def plan_publish(
    ws: Workspace,
    opts: p.InstallOptions,
    files: dict[str, bytes],
    secrets: dict[str, str] | None = None,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
    replace_secrets: bool = False,
) -> Plan:
    """The steps of ``install --print-policy``: the files and secrets a cluster policy (or a
    cluster defined as code) refers to, with the init script baked from the policy's own values.
    For job clusters, which the Clusters API does not let install edit, and clusters whose
    policy fixes ``init_scripts`` and ``spark_env_vars`` (docs/platform.md). No cluster is touched."""
    plan = Plan("", f"files and secrets for clusters managed as code, in {opts.target.folder} on {ws.host}")
    env = p.cluster_fragment(opts).get("spark_env_vars", {})
    _file_steps(ws, plan, opts.target, files, env, progress)
    _secret_steps(ws, plan, opts.secret_scope, secrets, replace_secrets)
    return plan


def plan_uninstall(ws: Workspace, cluster_id: str, restart: bool = False) -> Plan:
    """The steps that take spark_tracking off a cluster's spec (files and secrets are kept:
    other clusters may use them)."""
    name, state, spec = ws.cluster(cluster_id)
    plan = Plan(cluster_id, f'cluster {cluster_id} "{name}" ({state}) on {ws.host}')
    _cluster_steps(ws, plan, state, p.managed(spec), p.apply_uninstall(spec), restart, False, "uninstall")
    return plan
