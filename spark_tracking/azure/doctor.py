"""``spark-tracking doctor``: check the link step by step, each with pass/fail and a fix.

Steps: the configuration (secrets masked); whether this process's session is configured; the
AML link; a token for the ARM scope; the store answering; a probe run created, written and
deleted; artifact support; and, on a cluster (or with a Spark session given), that Spark workers
resolve the same configuration.

The store and the probe run go the way sessions go (``store.for_uri`` / ``store.for_link``): with
azureml-mlflow installed, through its ``azureml://`` store signed with spark_tracking's credential;
without it, as https with spark_tracking's request auth. A route that only sessions took would let
the doctor pass while every run fails (e.g. an azureml-mlflow that cannot be imported).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, NamedTuple

from . import AUTH_NAME, AzureLinkError

if TYPE_CHECKING:
    from .credentials import TokenProvider
    from .link import Source

#: Credential variables shown (masked) in the configuration step.
CREDENTIAL_ENV = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
)
_SECRET_ENV = {"AZURE_CLIENT_SECRET"}
#: Settings a Spark worker must resolve as the driver does.
WORKER_SETTINGS = (
    "disabled",
    "forwarding",
    "relay_max_frame_bytes",
    "buffer_max_points",
    "ship_interval",
    "task_flush_timeout",
)


class Step(NamedTuple):
    """One check's outcome: its status (PASS, FAIL, WARN or SKIP), what was found, and the fix."""

    name: str
    status: str  # PASS, FAIL, WARN, SKIP
    detail: str
    fix: str = ""

    def render(self) -> str:
        """The step as ``doctor`` prints it, the fix on its own line."""
        text = f"[{self.status}] {self.name}: {self.detail}"
        if self.fix:
            text += "\n       fix: " + self.fix.replace("\n", "\n            ")
        return text


class Doctor:
    """Runs the steps in order; a failed step skips the ones that need it."""

    def __init__(self, cfg, *, spark=None, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.spark = spark
        self.clock = clock
        self.steps: list[Step] = []
        self.tracking_uri: str | None = None
        self.auth: str | None = None  # MLFLOW_TRACKING_AUTH of the store's route (the https one)
        self.aml = False  # the store is AML's MLflow endpoint (either route)
        self.store_error: BaseException | None = None
        self.provider: TokenProvider | None = None
        self.found_source: Source | None = None

    @property
    def ok(self) -> bool:
        """True when no step failed."""
        return all(s.status != "FAIL" for s in self.steps)

    def run(self, emit: Callable[[str], None] = print) -> bool:
        """Run every step in order, passing each to ``emit`` as it ends; True when none failed."""
        for check in (
            self.configuration,
            self.current_session,
            self.source,
            self.fallback,
            self.token,
            self.link,
            self.store,
            self.probe_run,
            self.artifacts,
            self.workers,
        ):
            step = check()
            if step is not None:
                self.steps.append(step)
                emit(step.render())
        return self.ok

    def _failed(self, name: str) -> bool:
        return any(s.name == name and s.status in ("FAIL", "SKIP") for s in self.steps)

    # -- steps -------------------------------------------------------------------------------
    def configuration(self) -> Step:
        """The resolved settings and the credential variables set (secrets masked)."""
        env = [f"{k}={'***' if k in _SECRET_ENV else os.environ[k]}" for k in CREDENTIAL_ENV if os.environ.get(k)]
        detail = self.cfg.debug_string() + ("; credentials env: " + ", ".join(env) if env else "")
        return Step("configuration", "PASS", detail)

    def current_session(self) -> Step | None:
        """Whether this process's own session is configured (in a notebook, ``doctor(spark)`` checks
        the notebook's); a FAIL when a config file or the Databricks Runtime says it should be."""
        import mlflow  # loading MLflow's plugins configures a session whose startup hook did not run

        from ..status import session_status

        status = session_status(mlflow.get_tracking_uri())
        return Step("current session", status.level, status.detail, status.fix) if status.level else None

    def source(self) -> Step:
        """Where the tracking URI comes from: a chosen ``tracking_uri``, an AML workspace named by a
        setting, a config.json or the Databricks workspace's link, or the embedded store."""
        from .link import find_source
        from .store import for_uri, is_aml_tracking_uri

        self.found_source = None
        cfg = self.cfg
        try:
            if cfg.tracking_uri_chosen:
                chosen = for_uri(cfg.tracking_uri)
                self.tracking_uri, self.auth = chosen.uri, chosen.auth
                self.aml = is_aml_tracking_uri(chosen.uri)
                kind = "an AML store" if self.aml else "not an AML store"
                return Step(
                    "source",
                    "PASS",
                    f"tracking URI {chosen.uri} ({kind}; won as tracking_uri from {cfg.sources.get('tracking_uri')})",
                )
            self.found_source = find_source(cfg, use_profiles=True)
        except AzureLinkError as exc:
            return Step("source", "FAIL", str(exc))
        platform = (
            f", over the platform default {cfg.tracking_uri!r} ({cfg.sources['tracking_uri']})"
            if cfg.tracking_uri
            else ""
        )
        if self.found_source is None and cfg.tracking_uri:
            self.tracking_uri = cfg.tracking_uri
            return Step(
                "source",
                "WARN",
                f"runs go to Databricks-managed MLflow: {cfg.sources['tracking_uri']} "
                "and no Azure ML link is configured",
                "to log to AML: spark-tracking install --set aml_workspace_id=<ARM id> (or link the "
                "Databricks workspace to an AML workspace in the Azure portal)",
            )
        if self.found_source is None:
            self.tracking_uri = cfg.embedded_store_uri
            return Step(
                "source",
                "WARN",
                f"no AML workspace is named; using the embedded store {self.tracking_uri}",
                "to log to AML: 'spark-tracking link --workspace-id <ARM id>', or "
                "SPARK_TRACKING_AML_WORKSPACE_ID, or the workspace's config.json",
            )
        self.aml, self.auth = True, AUTH_NAME  # the route is chosen once the link is read (see ``link``)
        return Step("source", "PASS", f"AML workspace named by {self.found_source.description}{platform}")

    def fallback(self) -> Step | None:
        """A warning when an earlier session could not use the AML link and logged elsewhere."""
        from .session_link import read_fallback

        record = read_fallback(self.cfg)
        if record is None:
            return None
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("time", 0)))
        return Step(
            "fallback",
            "WARN",
            f"a session at {when} could not use the Azure ML link "
            f"({record.get('error')}) and logged to {record.get('store')} instead",
            f"fix the link (the steps below), then: spark-tracking move-runs --from {record.get('store')}",
        )

    def token(self) -> Step | None:
        """A token for the ARM scope from the configured credential (``azure_credential``)."""
        if not self.aml:
            return Step("token", "SKIP", "no AML workspace") if self._failed("source") else None
        from .credentials import describe_identity, provider_for_config

        try:
            self.provider = provider_for_config(self.cfg)
            token = self.provider.token()
        except AzureLinkError as exc:
            return Step("token", "FAIL", str(exc).split("\n")[0], "\n".join(str(exc).split("\n")[1:]))
        minutes = (self.provider.expires_on() - self.clock()) / 60
        return Step(
            "token",
            "PASS",
            f"token for {self.provider.scope} ({describe_identity(token)}; valid {minutes:.0f} more minutes)",
        )

    def link(self) -> Step | None:
        """The AML workspace read from ARM, and its tracking URI."""
        from .link import resolve
        from .store import for_link

        if self.found_source is None:
            return None
        if self._failed("token"):
            self.tracking_uri = None
            return Step("link", "SKIP", "needs a token")
        try:
            found = resolve(self.cfg, source=self.found_source, use_cache=False)
        except AzureLinkError as exc:
            self.tracking_uri = None
            message = str(exc)
            head, _, fix = message.partition(". ")
            return Step("link", "FAIL", head, fix)
        chosen = for_link(found)  # the store sessions use for this link
        self.tracking_uri, self.auth = chosen.uri, chosen.auth
        return Step(
            "link",
            "PASS",
            f"AML workspace {found.workspace_id} in {found.region or '?'} ({found.cloud}); "
            f"tracking URI {found.tracking_uri}",
        )

    def _client(self):
        from mlflow.tracking import MlflowClient

        assert self.tracking_uri is not None  # the steps that need a client skip without one
        if self.auth:
            from .mlflow_auth import add_linked_uri

            add_linked_uri(self.tracking_uri)  # the token goes to the linked AML host only
        return MlflowClient(self.tracking_uri)

    def _through_azureml(self) -> bool:
        """Whether sessions reach the store through azureml-mlflow's store."""
        from .store import AZUREML_PREFIX

        return (self.tracking_uri or "").startswith(AZUREML_PREFIX)

    def _route(self) -> str:
        """How sessions reach the store, for the store and probe-run steps."""
        if self._through_azureml():
            return " (through azureml-mlflow's azureml:// store, as sessions do)"
        if self.auth:
            return " (as https with spark_tracking's request auth, as sessions do)"
        return ""

    def store(self) -> Step:
        """The store answering a search for experiments, reached the way sessions reach it."""
        if self.tracking_uri is None or self._failed("token"):
            return Step("store", "SKIP", "needs a workspace and a token")
        if self.tracking_uri == self.cfg.embedded_store_uri:
            os.makedirs(self.cfg.home, exist_ok=True)  # as sessions do (MLflow 3.0 makes no folder for SQLite)
        with _AuthEnv(self.auth):
            try:
                self._client().search_experiments(max_results=1)
            except Exception as exc:  # noqa: BLE001 - reported with the fix
                self.store_error = exc
                return Step(
                    "store",
                    "FAIL",
                    f"{self.tracking_uri}{self._route()} did not answer: {_short(exc)}",
                    _store_fix(exc),
                )
        return Step("store", "PASS", f"{self.tracking_uri} answers{self._route()}")

    def probe_run(self) -> Step:
        """A run created, written and deleted in the experiment ``spark-tracking-doctor``, through
        the store sessions use (so AML's workarounds of that route apply to it)."""
        if self._failed("store"):
            return Step("probe run", "SKIP", "the store did not answer")
        with _AuthEnv(self.auth):
            client = self._client()
            try:
                experiment = client.get_experiment_by_name("spark-tracking-doctor")
                experiment_id = (
                    experiment.experiment_id
                    if experiment is not None
                    else client.create_experiment("spark-tracking-doctor")
                )
                run = client.create_run(experiment_id, run_name="doctor probe")
                client.log_metric(run.info.run_id, "probe", 1.0)
                client.delete_run(run.info.run_id)
            except Exception as exc:  # noqa: BLE001 - reported with the fix
                return Step(
                    "probe run", "FAIL", f"creating, writing or deleting a run failed: {_short(exc)}", _store_fix(exc)
                )
        return Step(
            "probe run",
            "PASS",
            f"created, wrote and deleted run {run.info.run_id} in experiment 'spark-tracking-doctor'",
        )

    def artifacts(self) -> Step | None:
        """Whether artifacts (and models) can be logged: azureml-mlflow installed, the MLflow version."""
        if not self.aml:
            return None
        from .._compat.mlflow import installed_version
        from .store import azureml_mlflow_installed

        models = (
            ""
            if installed_version() < (2, 17)
            else f"; log_model of MLflow {'.'.join(map(str, installed_version()))} needs the logged-models API, "
            "which Azure ML lacks (log models with MLflow < 2.17, or save_model + log_artifacts)"
        )
        if azureml_mlflow_installed():
            if isinstance(self.store_error, ImportError):
                return Step("artifacts", "SKIP", "azureml-mlflow cannot be imported (see the store step)")
            return Step(
                "artifacts",
                "PASS" if not models else "WARN",
                "azureml-mlflow is installed: sessions use its azureml:// store and artifacts go to the "
                f"workspace's storage{models}",
            )
        return Step(
            "artifacts",
            "WARN",
            "metrics, params and tags work; artifacts (log_artifact, log_row, "
            f"log_image, models) need azureml-mlflow{models}",
            "on a cluster: spark-tracking install --azureml-mlflow (not a cluster library: its mlflow-skinny pin "
            "replaces the runtime's mlflow); elsewhere: pip install 'spark-tracking[azureml]'",
        )

    def workers(self) -> Step | None:
        """Spark tasks resolving the settings that matter to them as the driver does."""
        spark = self.spark
        if spark is None:
            return None
        driver = {k: getattr(self.cfg, k) for k in WORKER_SETTINGS}
        try:
            seen = spark.sparkContext.parallelize(range(2), 2).map(lambda _: _worker_view()).collect()
        except Exception as exc:  # noqa: BLE001 - reported with the fix
            return Step("workers", "FAIL", f"a Spark job failed: {_short(exc)}", "check the cluster's Spark logs")
        differing = sorted({k for view in seen for k in WORKER_SETTINGS if view.get(k) != driver[k]})
        if differing:
            return Step(
                "workers",
                "FAIL",
                f"workers resolve {', '.join(differing)} differently from the driver: {seen[0]} vs {driver}",
                "set spark_tracking settings as cluster environment variables or in the config file "
                "written by the init script, not in one notebook's environment",
            )
        return Step("workers", "PASS", f"{len(seen)} Spark tasks resolve the same configuration")


def _worker_view() -> dict:
    from spark_tracking.config import Config

    cfg = Config.resolve()
    return {k: getattr(cfg, k) for k in WORKER_SETTINGS}


class _AuthEnv:
    """MLFLOW_TRACKING_AUTH for the checks, restored afterwards."""

    def __init__(self, auth: str | None):
        self.auth = auth

    def __enter__(self):
        self.before = os.environ.get("MLFLOW_TRACKING_AUTH")
        if self.auth:
            os.environ["MLFLOW_TRACKING_AUTH"] = self.auth
        return self

    def __exit__(self, *exc):
        if self.auth:
            if self.before is None:
                os.environ.pop("MLFLOW_TRACKING_AUTH", None)
            else:
                os.environ["MLFLOW_TRACKING_AUTH"] = self.before


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def _store_fix(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ImportError):  # the azureml-mlflow route: its package is there but does not import
        from .store import AZUREML_MLFLOW_BROKEN_FIX

        return AZUREML_MLFLOW_BROKEN_FIX[len("Fix: ") :]
    if "403" in text or "PERMISSION_DENIED" in text or "Forbidden" in text:
        return (
            "grant the identity the 'AzureML Data Scientist' role (or Contributor) on the AML workspace: "
            "it needs Microsoft.MachineLearningServices/workspaces/experiments/* and workspaces/jobs/* actions"
        )
    if "401" in text or "Unauthorized" in text:
        return "the token was refused: check AZURE_TENANT_ID is the workspace's tenant and azure_cloud its cloud"
    return "check the network path to the tracking URI (proxy, private endpoint, firewall)"


def doctor(spark=None, emit: Callable[[str], None] = print, **settings) -> bool:
    """Run every check and print one line per step; True when none failed. In a notebook pass
    the session (``doctor(spark)``) to also check that Spark workers see the same configuration.
    Keyword arguments are settings, as for ``configure()``."""
    from ..config import Config, ConfigError

    try:
        cfg = Config.resolve(settings)
    except ConfigError as exc:
        emit(Step("configuration", "FAIL", str(exc)).render())
        return False
    return Doctor(cfg, spark=spark).run(emit)
