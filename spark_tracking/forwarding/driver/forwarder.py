"""Driver side: the Forwarder, one relay and one sink per tracking store, started on first need.

Binding. When a run starts on the driver (MLflow calls our run-context provider), or
configure() runs while a SparkContext is up, the current thread's Spark local properties get
the relay address, the per-session secret and a binding ``<thread token>.<count>:<store
index>``, new at each run start.
Spark hands local properties to every task of jobs this thread (or a thread it starts)
submits. When a task first reaches the relay, the relay maps it to the run at the top of that
driver thread's MLflow run stack — nested runs and runs in concurrent threads each get their
own points — and keeps that run for the task's lifetime. Points that reach the relay only
after the thread made a newer binding (spilled while the relay was unreachable, shipped after
the run ended and the next one started) go to the run their binding was made for
(``run_watch``).

No active run. Tasks of a bound thread that log while the thread has no active run (it ended)
get a run created for them — ``spark-tasks <app id>`` in the session's experiment — with one
warning naming it.

A task's end ("done") never resolves or creates a run: it closes the task's part of the runs
it logged to, and a task that logged only to explicit run ids creates no run.

Exit. At interpreter exit the driver gives the store ``current.EXIT_TIMEOUT`` seconds to take
what it holds; whatever it did not take — points the relay acknowledged included — is written to
the spool (``<home>/spool``) with one warning, for ``spark-tracking replay``. This process's one
forwarder (made on first need, flushed, counted, stopped) is kept by ``current``.

Memory. Per-task, per-stage, per-run and per-thread state is bounded (least recently used
entries are dropped past fixed sizes), so a long notebook session does not grow without end.

Threads never bound. Spark jobs submitted from driver threads nobody bound (hyperopt's
``SparkTrials`` dispatcher, ``concurrent.futures`` pools, joblib-spark, a notebook's background
thread) have none of the local properties. Their tasks find the session's relay in a file the
driver added to the session with ``SparkContext.addFile`` (``protocol.SESSION_FILE_PREFIX``)
and log to the session's active run: the run at the top of the stack of the thread that most
recently started a run and still has one active. That thread is the one a user reads as "the
run I am in" (the notebook cell's ``with mlflow.start_run():`` around ``fmin`` or the pool),
while the thread that submits the job is an implementation detail of the library. With no run
active anywhere, they get the ``spark-tasks`` run above with its warning; never the executor's
local store.

Runs, reads and artifacts a task asks for (``protocol.RUN_OPS``) are answered by
``forwarding.run_ops`` with this store's client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time

from ..._compat import mlflow as mlflow_compat
from ..protocol import (
    DONE_ERROR,
    ENV_SECRET,
    PROP_BINDING,
    PROP_MAX_FRAME,
    PROP_RELAY,
    PROP_SECRET,
    PROP_SYSTEM_METRICS,
    SESSION_BINDING,
    SESSION_FILE_PREFIX,
    error_line,
    thread_token,
)
from ..records import Worker
from . import drops, observers
from .bounded import BoundedDict
from .decode import clean_metrics, clean_pairs
from .relay import Relay, task_key
from .run_ops import RunOps
from .run_watch import RunWatch
from .sink import Sink, Spool, Submission
from .stages import SparkStages
from .system_metrics import sampling_interval
from .tally import SESSION_COUNTERS, run_stats

logger = logging.getLogger(__name__)

_MAX_TASKS = 65_536  # tasks whose run binding and logged-to runs are remembered
_MAX_THREADS = 4096  # driver threads whose run stacks are remembered

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

    def __init__(self, cfg, sc, host: str | None = None, stages=None):
        self.cfg = cfg
        self._lock = threading.RLock()
        self.sc = sc
        self.owner = sc
        self.secret, self.secret_reaches_executors = _relay_secret(sc)
        if not self.secret_reaches_executors and sc is not None:  # (Spark Connect never sends it)
            logger.warning(
                "spark_tracking: the relay secret reaches tasks through Spark job properties, which "
                "Spark writes to its event logs. Give driver and executors SPARK_TRACKING_RELAY_SECRET "
                "from a secret scope (spark-tracking install does); on local Spark, export it before "
                "Spark starts (executors inherit the driver's environment)."
            )
        self.sinks: list[tuple[str, Sink]] = []
        self._runs: BoundedDict = BoundedDict(_MAX_TASKS)  # task -> the run its fluent calls log to
        self._logged_to: BoundedDict = BoundedDict(_MAX_TASKS)  # task -> runs it logged to, until done
        self._orphan_runs: BoundedDict = BoundedDict(_MAX_THREADS)  # binding -> run made for it
        self._stacks: BoundedDict = BoundedDict(_MAX_THREADS)  # thread token -> its MLflow run stack
        self.stages = stages or SparkStages(sc)  # Spark Connect: connect.ConnectStages
        self._recent: BoundedDict = BoundedDict(_MAX_THREADS)  # thread token -> binding, least recently bound first
        self._binds = 0  # bindings made so far (each run start of a thread makes one)
        self.run_watch = RunWatch()  # binding -> the run it was made for
        host = (
            host or cfg.relay_host or (sc.getConf().get("spark.driver.host") if sc is not None else None) or "127.0.0.1"
        )
        self.relay = Relay(
            self.secret, self, host, cfg.relay_port, cfg.relay_max_connections, cfg.relay_max_frame_bytes
        )
        # "done" with the task's error, when its function raised (protocol.DONE_ERROR)
        self.relay.register(
            "done", lambda binding, worker, message: ({}, self.done(binding, worker, message.get(DONE_ERROR)))
        )
        self.relay.start()
        logger.info("spark_tracking: relay listening on %s", self.relay.address)
        self._created: BoundedDict = BoundedDict(_MAX_TASKS)  # run a task created -> that task
        self.run_ops = RunOps(
            self.resolve,
            lambda binding: self._parse(binding)[1].client,
            lambda binding, worker, run: self._created.__setitem__(run, task_key(binding, worker)),
        )
        self._publish_session_binding(sc)

    def _publish_session_binding(self, sc) -> None:
        """The relay for tasks of jobs from threads never bound (see the module docstring)."""
        if sc is None:
            return
        content = {"relay": self.relay.address}
        if not self.secret_reaches_executors:  # as with the job property, and its warning above
            content["secret"] = self.secret
        folder = tempfile.mkdtemp(prefix="spark-tracking-")
        path = os.path.join(folder, f"{SESSION_FILE_PREFIX}{time.time_ns():020d}.json")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            json.dump(content, fh)
        try:
            sc.addFile(path)
        except Exception:
            logger.warning(
                "spark_tracking: tasks of Spark jobs from threads that never started a run will not find the driver",
                exc_info=True,
            )

    # -- binding -----------------------------------------------------------------------------

    def sink_index(self, uri: str) -> int:
        """The index of the sink for tracking URI ``uri``, made on first use from the settings
        ``batch_max_metrics``, ``rate_limit``, ``aggregate`` and ``spool_max_bytes`` (spool in
        ``<home>/spool``) and the store's limits (``max_values_per_key``, ``max_params_per_run``)."""
        for i, (known, _) in enumerate(self.sinks):
            if known == uri:
                return i
        from mlflow.tracking import MlflowClient

        cfg = self.cfg
        spool = Spool(os.path.join(cfg.home, "spool"), cfg.spool_max_bytes)
        from ...azure.store import limits_for

        limits = limits_for(uri)
        sink = Sink(
            MlflowClient(uri),
            uri,
            spool,
            self.stages.tasks,
            batch_max_metrics=cfg.batch_max_metrics,
            max_values_per_key=limits.max_values_per_key,
            max_params_per_run=limits.max_params_per_run,
            rate_limit=cfg.rate_limit,
            aggregate=cfg.aggregate,
            stages_finished=self.stages.finished,
        )
        self.sinks.append((uri, sink))
        return len(self.sinks) - 1

    def bind_thread(self) -> str:
        """Register this thread's run stack; returns its binding ``<thread token>.<bind
        count>:<sink index>``. The count tells the jobs of one run start from those of the next:
        points that reach the driver late (spilled while the relay was unreachable, shipped
        after the thread started another run) go to the run this binding was made for."""
        import mlflow

        index = self.sink_index(mlflow.get_tracking_uri())
        token = _thread_token()
        # the thread's own run-stack list (MLflow pushes and pops in place): resolving through it
        # is immune to Python reusing the ident of a thread that has ended
        stack = self._stacks[token] = mlflow_compat.active_run_stack()
        with self._lock:
            self._binds += 1
            binding = f"{token}.{self._binds}:{index}"
        self.run_watch.watch(token, binding, stack)
        self._recent.pop(token, None)
        self._recent[token] = binding
        return binding

    def bound_tokens(self) -> set:
        """The tokens of the driver threads bound so far."""
        return set(self._stacks)

    def bind(self, sc) -> None:
        """Bind Spark jobs this thread submits on ``sc`` to its run: sets the relay address, the
        binding (and the secret when executors do not have it) as Spark local properties."""
        binding = self.bind_thread()
        sc.setLocalProperty(PROP_RELAY, self.relay.address)
        sc.setLocalProperty(PROP_MAX_FRAME, str(self.cfg.relay_max_frame_bytes))
        interval = sampling_interval(self.cfg)  # workers' system metrics: on for this run or not
        sc.setLocalProperty(PROP_SYSTEM_METRICS, None if interval is None else repr(interval))
        if not self.secret_reaches_executors:
            with _py4j_debug_off():  # py4j logs every command it sends at DEBUG, arguments included
                sc.setLocalProperty(PROP_SECRET, self.secret)
        sc.setLocalProperty(PROP_BINDING, binding)

    # -- relay handler -----------------------------------------------------------------------

    def _session_binding(self) -> str:
        """The binding of the thread that most recently started a run and still has one."""
        recent = list(self._recent.items())
        for token, binding in reversed(recent):
            if self._stacks.get(token):
                return binding
        if not recent:
            raise ValueError("no driver thread of this session is bound yet")
        return recent[-1][1]

    def _parse(self, binding: str) -> tuple[str, Sink]:
        """(thread token, sink) of a binding; SESSION_BINDING is the most recent thread's."""
        if binding == SESSION_BINDING:
            binding = self._session_binding()
        return thread_token(binding), self.sinks[int(binding.partition(":")[2])][1]

    def resolve(self, binding: str, worker: Worker) -> str:
        """The run a task's points go to: the run active in its driver thread when it first asked
        (a run created for it when that thread has none), the same for the rest of the attempt."""
        key = task_key(binding, worker)
        run = self._runs.get(key)
        if run is None:
            with self._lock:
                run = self._runs.get(key) or self._active_run(binding)
                self._runs[key] = run
        return run

    def _active_run(self, binding: str) -> str:
        token, sink = self._parse(binding)
        if self.run_watch.superseded(token, binding):  # late points: the thread started another run since
            made_for = self.run_watch.run_of(binding)
            if made_for is not None:
                return made_for
        stack = self._stacks.get(token)
        if stack:
            return stack[-1].info.run_id
        run = self._orphan_runs.get(binding)
        if run is None:
            from ... import context

            ctx = context.detect()
            experiment_id = mlflow_compat.default_experiment_id()
            created = sink.client.create_run(
                experiment_id, run_name=f"spark-tasks {ctx.spark_app_id or ''}".strip(), tags=context.context_tags(ctx)
            )
            run = self._orphan_runs[binding] = created.info.run_id
            logger.warning(
                "spark_tracking: Spark tasks logged while their driver thread had no active "
                "run; created run %s for their points. Wrap the Spark job in "
                "`with mlflow.start_run():` to choose the run.",
                run,
            )
        return run

    def points(self, binding: str, worker: Worker, message: dict):
        """Take a task's points to the sink; returns the run id and the sink's future (malformed
        entries are dropped, counted and warned about)."""
        explicit = message.get("r")
        run = explicit if isinstance(explicit, str) and explicit else self.resolve(binding, worker)
        _, sink = self._parse(binding)
        beyond: list = []
        metrics, bad_m = clean_metrics(message.get("m", []), beyond)
        params, bad_p = clean_pairs(message.get("p", []))
        tags, bad_t = clean_pairs(message.get("t", []))
        artifacts, bad_a = clean_pairs(message.get("a", []))
        if bad_m + bad_p + bad_t + bad_a:
            sink.tally.drop("malformed", bad_m + bad_p + bad_t + bad_a, run)
            logger.warning(
                "spark_tracking relay: dropped %d malformed entries from a task", bad_m + bad_p + bad_t + bad_a
            )
        if beyond:
            sink.tally.drop("out_of_range", len(beyond), run)
            key, _, ts, step = beyond[0]
            logger.warning(
                "spark_tracking relay: dropped %d point(s) of run %s whose step or timestamp MLflow cannot "
                "store (a signed 64-bit integer: -2**63 to 2**63-1), e.g. %r at step %d, timestamp %d "
                "(counted in stats()['dropped']['out_of_range']). Log steps and millisecond timestamps.",
                len(beyond),
                run,
                key,
                step,
                ts,
            )
        task = task_key(binding, worker)
        with self._lock:
            self._logged_to.setdefault(task, set()).add(run)
            created_by = self._created.get(run) if run in self._created else None
        sub = Submission("points", run, worker, metrics, params, tags, artifacts)
        sub.solo = created_by == task  # a run this task created (a child run per model): the user's keys
        return run, sink.submit(sub)

    def done(self, binding: str, worker: Worker, error=None):
        """A task ended: close its part of every run it logged to (never resolves a run).
        ``error``: the line of the error its function raised (the task says so in its "done"):
        the observers (the live view) hear of the failed attempt, for each run it logged to, or
        with no run (None) when it logged nothing; Spark may retry it or not."""
        with self._lock:
            runs = self._logged_to.pop(task_key(binding, worker), None) or ()
        _, sink = self._parse(binding)
        settled = None
        for run in sorted(runs):
            settled = sink.submit(Submission("done", run, worker))
        error = error_line(error)
        if error:
            logger.info(
                "spark_tracking relay: task %s of stage %s (attempt %s) failed: %s",
                worker.partition,
                worker.stage,
                worker.attempt,
                error,
            )
            for run in sorted(runs) or [None]:
                observers.notify(observers.TaskFailed(run, worker, error))
        return settled  # the sink settles submissions in order: the last one covers the others

    def run_op(self, op: str, binding: str, worker: Worker, message: dict) -> dict:
        """Serve a run operation a task asks for (see ``run_ops``)."""
        return self.run_ops.handle(op, binding, worker, message)

    # -- lifecycle ---------------------------------------------------------------------------

    def collect_drops(self) -> int:
        """Move the drop files tasks of this forwarder's threads left into their runs (at
        ``flush()`` and shutdown); the number of files moved."""
        return drops.collect(self, self.cfg.task_drop_dir)

    def flush(self, timeout: float | None) -> bool:
        """Deliver what every sink holds; True when all of it reached the stores."""
        return all([sink.flush(timeout) for _, sink in self.sinks])  # noqa: C419 - every sink, no short cut

    def stats(self, run_id: str | None = None) -> dict:
        """The relay's counters and the sinks' counters, summed over stores; with ``run_id``,
        that run's counters only (``tally.RUN_KEYS`` and ``dropped``)."""
        if run_id is not None:
            return run_stats(run_id, [sink.tally.run(run_id) for _, sink in self.sinks])
        out: dict = {"relay": dict(self.relay.counters, address=self.relay.address)}
        totals: dict = {}
        for _, sink in self.sinks:
            for key, value in sink.stats().items():
                if isinstance(value, dict):
                    bucket = totals.setdefault(key, {})
                    for k, v in value.items():
                        bucket[k] = bucket.get(k, 0) + v
                else:
                    totals[key] = totals.get(key, 0) + value
        for key in SESSION_COUNTERS:
            totals.setdefault(key, 0)
        totals.setdefault("dropped", {})
        out.update(totals)
        return out

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop taking points, deliver what is held within ``timeout``, spool the rest.
        True when everything reached the store."""
        self.relay.stop()
        self.run_ops.close()
        self.run_watch.stop()
        return all([sink.stop(timeout) for _, sink in self.sinks])  # noqa: C419 - every sink, no short cut
