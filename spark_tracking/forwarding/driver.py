"""Driver side: one relay and one sink per tracking store, started on first need.

Binding. When a run starts on the driver (MLflow calls our run-context provider), or
configure() runs while a SparkContext is up, the current thread's Spark local properties get
the relay address, the per-session secret and a binding ``<thread token>:<store index>``.
Spark hands local properties to every task of jobs this thread (or a thread it starts)
submits. When a task first reaches the relay, the relay maps it to the run at the top of that
driver thread's MLflow run stack — nested runs and runs in concurrent threads each get their
own points — and keeps that run for the task's lifetime.

No active run. Tasks of a bound thread that log while the thread has no active run (it ended)
get a run created for them — ``spark-tasks <app id>`` in the session's experiment — with one
warning naming it; tasks of a thread never bound log as plain MLflow would on the executor.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import sys
import threading

from .executor import ENV_SECRET, PROP_BINDING, PROP_RELAY, PROP_SECRET
from .relay import Relay
from .sink import Sink, Spool, Submission

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_forwarder: "Forwarder | None" = None


def _config():
    from ..config import Config
    from ..session import current_config

    return current_config() or Config.resolve()


def _spark_context():
    if "pyspark" not in sys.modules:
        return None
    from pyspark import SparkContext

    return SparkContext._active_spark_context


def _clean_metrics(rows) -> tuple[list, int]:
    """Points from the wire, checked again (a client may be buggy): (good, bad count)."""
    good, bad = [], 0
    if not isinstance(rows, list):
        return good, 1
    for row in rows:
        try:
            key, value, ts, step = row
            if (isinstance(key, str) and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and type(ts) is int and type(step) is int and key):
                good.append((key, float(value) if not isinstance(value, float) else value, ts, step))
                continue
        except (TypeError, ValueError):
            pass
        bad += 1
    return good, bad


def _clean_pairs(rows) -> tuple[list, int]:
    good, bad = [], 0
    for row in rows if isinstance(rows, list) else [None]:
        if isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row):
            good.append((row[0], row[1]))
        else:
            bad += 1
    return good, bad


_tokens = threading.local()


def _thread_token() -> str:
    """A binding token per driver thread, never reused (unlike thread idents)."""
    token = getattr(_tokens, "value", None)
    if token is None:
        token = _tokens.value = secrets.token_hex(8)
    return token


def _relay_secret(sc) -> tuple[str, bool]:
    """The session's relay secret, and whether executors have it in their environment
    (provided to driver and executors alike, e.g. from a secret scope)."""
    secret = os.environ.get(ENV_SECRET)
    if secret:
        return secret, True
    return secrets.token_hex(32), False


@contextlib.contextmanager
def _py4j_debug_off():
    loggers = [logging.getLogger(n) for n in ("py4j", "py4j.clientserver", "py4j.java_gateway")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.INFO))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class Forwarder:
    """The relay plus a sink per tracking URI, and the run resolution between them."""

    def __init__(self, cfg, sc, host: str | None = None, stage_tasks=None):
        self.cfg = cfg
        self.sc = sc
        self._stage_source = stage_tasks  # Spark Connect: no status tracker (connect.stage_tasks)
        self.owner = sc
        self.secret, self.secret_reaches_executors = _relay_secret(sc)
        if not self.secret_reaches_executors and sc is not None:  # (Spark Connect never sends it)
            logger.warning(
                "spark_tracking: the relay secret reaches tasks through Spark job properties, which "
                "Spark writes to its event logs. Give driver and executors SPARK_TRACKING_RELAY_SECRET "
                "from a secret scope (spark-tracking install does); on local Spark, export it before "
                "Spark starts (executors inherit the driver's environment).")
        self.sinks: list[tuple[str, Sink]] = []
        self._runs: dict[tuple, str] = {}
        self._orphan_runs: dict[str, str] = {}
        self._stage_tasks: dict[int, int | None] = {}
        self._stacks: dict[str, list] = {}
        host = host or cfg.relay_host or (sc.getConf().get("spark.driver.host") if sc is not None else None) or "127.0.0.1"
        self.relay = Relay(self.secret, self, host, cfg.relay_port, cfg.relay_max_connections,
                           cfg.relay_max_frame_bytes).start()
        logger.info("spark_tracking: relay listening on %s", self.relay.address)

    # -- binding -----------------------------------------------------------------------------

    def sink_index(self, uri: str) -> int:
        for i, (known, _) in enumerate(self.sinks):
            if known == uri:
                return i
        from mlflow.tracking import MlflowClient

        cfg = self.cfg
        spool = Spool(os.path.join(cfg.home, "spool"), cfg.spool_max_bytes)
        from ..azure.store import is_aml_tracking_uri

        per_key = 250 if is_aml_tracking_uri(uri) else None  # AML refuses more (mlflow#11462)
        sink = Sink(MlflowClient(uri), uri, spool, self.stage_tasks, batch_max_metrics=cfg.batch_max_metrics,
                    max_values_per_key=per_key, rate_limit=cfg.rate_limit, aggregate=cfg.aggregate)
        self.sinks.append((uri, sink))
        return len(self.sinks) - 1

    def bind_thread(self) -> str:
        """Register this thread's run stack; returns its binding ``<thread token>:<sink index>``."""
        import mlflow
        from mlflow.tracking import fluent

        index = self.sink_index(mlflow.get_tracking_uri())
        token = _thread_token()
        # the thread's own run-stack list (MLflow pushes and pops in place): resolving through it
        # is immune to Python reusing the ident of a thread that has ended
        self._stacks[token] = fluent._active_run_stack.get()
        return f"{token}:{index}"

    def bound_tokens(self) -> set:
        return set(self._stacks)

    def bind(self, sc) -> None:
        binding = self.bind_thread()
        sc.setLocalProperty(PROP_RELAY, self.relay.address)
        if not self.secret_reaches_executors:
            with _py4j_debug_off():  # py4j logs every command it sends at DEBUG, arguments included
                sc.setLocalProperty(PROP_SECRET, self.secret)
        sc.setLocalProperty(PROP_BINDING, binding)

    def stage_tasks(self, stage: int) -> int | None:
        if stage not in self._stage_tasks:
            info = None
            try:
                info = self.sc.statusTracker().getStageInfo(stage) if self.sc is not None else None
            except Exception:
                pass
            if self.sc is None and self._stage_source is not None:
                return self._stage_source(stage)  # Spark Connect: learnt from progress reports
            if info is None:
                return None  # not known (yet): ask again next time
            self._stage_tasks[stage] = info.numTasks
        return self._stage_tasks[stage]

    # -- relay handler -----------------------------------------------------------------------

    def _parse(self, binding: str) -> tuple[str, Sink]:
        token, _, index = binding.partition(":")
        return token, self.sinks[int(index)][1]

    def resolve(self, binding: str, worker: list) -> str:
        key = (binding, worker[0], worker[1], worker[2], worker[4])
        run = self._runs.get(key)
        if run is None:
            with _lock:
                run = self._runs.get(key) or self._active_run(binding)
                self._runs[key] = run
        return run

    def _active_run(self, binding: str) -> str:
        from mlflow.tracking import fluent

        token, sink = self._parse(binding)
        stack = self._stacks.get(token)
        if stack:
            return stack[-1].info.run_id
        run = self._orphan_runs.get(binding)
        if run is None:
            from .. import context

            ctx = context.detect()
            experiment_id = fluent._get_experiment_id()
            created = sink.client.create_run(experiment_id, run_name=f"spark-tasks {ctx.spark_app_id or ''}".strip(),
                                             tags=context.context_tags(ctx))
            run = self._orphan_runs[binding] = created.info.run_id
            logger.warning("spark_tracking: Spark tasks logged while their driver thread had no active "
                           "run; created run %s for their points. Wrap the Spark job in "
                           "`with mlflow.start_run():` to choose the run.", run)
        return run

    def points(self, binding: str, worker: list, message: dict):
        explicit = message.get("r")
        run = explicit if isinstance(explicit, str) and explicit else self.resolve(binding, worker)
        _, sink = self._parse(binding)
        metrics, bad_m = _clean_metrics(message.get("m", []))
        params, bad_p = _clean_pairs(message.get("p", []))
        tags, bad_t = _clean_pairs(message.get("t", []))
        artifacts, bad_a = _clean_pairs(message.get("a", []))
        if bad_m + bad_p + bad_t + bad_a:
            sink.dropped["malformed"] += bad_m + bad_p + bad_t + bad_a
            logger.warning("spark_tracking relay: dropped %d malformed entries from a task", bad_m + bad_p + bad_t + bad_a)
        return run, sink.submit(Submission("points", run, worker, metrics, params, tags, artifacts))

    def done(self, binding: str, worker: list):
        run = self.resolve(binding, worker)
        _, sink = self._parse(binding)
        return sink.submit(Submission("done", run, worker))

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self, timeout: float | None) -> bool:
        return all([sink.flush(timeout) for _, sink in self.sinks])

    def stats(self) -> dict:
        out: dict = {"relay": dict(self.relay.counters, address=self.relay.address)}
        totals: dict = {}
        for uri, sink in self.sinks:
            for key, value in sink.stats().items():
                if isinstance(value, dict):
                    bucket = totals.setdefault(key, {})
                    for k, v in value.items():
                        bucket[k] = bucket.get(k, 0) + v
                else:
                    totals[key] = totals.get(key, 0) + value
        for key in ("received", "sent", "retried", "spooled", "requests", "aggregated", "queued"):
            totals.setdefault(key, 0)
        totals.setdefault("dropped", {})
        out.update(totals)
        return out

    def stop(self, timeout: float = 30.0) -> None:
        for _, sink in self.sinks:
            sink.stop(timeout)
        self.relay.stop()


def bind_current_thread(sc=None) -> bool:
    """Bind Spark jobs submitted from this thread to this thread's active MLflow run.

    Called by MLflow at each run start (run-context provider) and by configure(); call it
    yourself if you started the run before creating the SparkSession. Honours
    ``SPARK_TRACKING_FORWARDING`` / ``spark.sparktracking.forwarding`` and ``..._DISABLED``.
    Returns True when bound.
    """
    if sc is None:
        from . import connect

        # a Spark Connect client has no SparkContext: it binds with job tags (this thread's
        # Connect session wins over a SparkContext the process may also have)
        if connect.session_of_this_thread() is not None or _spark_context() is None:
            return connect.bind_current_thread()
        sc = _spark_context()
    cfg = _config()
    if cfg.disabled or not cfg.forwarding:
        return False
    with _lock:
        use_forwarder(sc, lambda: Forwarder(cfg, sc)).bind(sc)
    return True


def use_forwarder(owner, make) -> Forwarder:
    """The forwarder of ``owner`` (a SparkContext, or a Spark Connect session); a new owner
    replaces the previous forwarder (made by ``make()``)."""
    global _forwarder
    with _lock:
        if _forwarder is None or _forwarder.owner is not owner:
            if _forwarder is not None:
                _forwarder.stop(5.0)
            _forwarder = make()
            _forwarder.owner = owner
        return _forwarder


def forwarder() -> Forwarder | None:
    return _forwarder


def flush(timeout: float | None = 30.0) -> bool:
    """Deliver everything the driver holds for the store; True when all of it arrived."""
    fw = _forwarder
    if fw is None:
        return True
    connect = sys.modules.get(f"{__package__}.connect")
    if connect is not None:  # Spark Connect without a reachable driver: tasks' drop files
        connect.collect_drops(fw, fw.cfg.task_drop_dir)
    return fw.flush(timeout)


def stats() -> dict:
    fw = _forwarder
    if fw is None:
        return {"relay": None, "received": 0, "sent": 0, "retried": 0, "spooled": 0, "requests": 0,
                "aggregated": 0, "queued": 0, "dropped": {}}
    return fw.stats()


def shutdown(timeout: float = 30.0) -> None:
    global _forwarder
    with _lock:
        fw, _forwarder = _forwarder, None
    if fw is not None:
        fw.stop(timeout)


@atexit.register
def _flush_at_exit() -> None:
    if _forwarder is not None:
        if not flush(30.0):
            logger.warning("spark_tracking: not everything reached the store before exit; "
                           "what is left is in the spool: run `spark-tracking replay`")
        shutdown(5.0)

