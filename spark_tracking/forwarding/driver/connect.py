"""Forwarding on Spark Connect (Databricks standard access mode, serverless, Spark 4 clients).

A Spark Connect client has no SparkContext, so it cannot set Spark local properties for the
tasks of its jobs. It can tag its operations: ``spark.addTag(tag)`` holds per client thread,
every operation the thread submits carries its tags, and the server runs the operation as
Spark jobs whose tasks find them in the local property ``spark.job.tags`` (wrapped as
``SparkConnect_SessionTag_User_<user>_Session_<session id>_Tag_<tag>``; checked on pyspark
4.0 and 4.3).

Client side (``bind_current_thread``, called by ``binder.bind_current_thread`` when there is
no SparkContext): the same relay and sink as on a classic cluster, and one tag per thread
that carries the binding — relay address, the thread's binding token, the relay's frame
limit — encoded as ``spark_tracking_v1_<base64url JSON>`` (tags may not hold commas).
**Never the relay secret**: tags reach Spark's event logs. Tasks take the secret from their
environment (``SPARK_TRACKING_RELAY_SECRET``, a cluster environment variable that
``spark-tracking install`` sets from a secret scope). A Connect server this process launched
(``SparkSession.builder.remote("local[2]")``, ``pyspark --remote local``) inherited this
process's environment, with the secret the startup hook put there for that case
(``protocol.ENV_LOCAL_SECRET``): once the server is seen to hold it, it is the relay's secret,
with nothing to configure. The number of tasks of each stage, which
the driver needs to emit the mean across workers as soon as a step is complete, comes from
the session's progress reports (``spark.registerProgressHandler``).

Jobs of threads that carry no tag (a ``concurrent.futures`` pool's, joblib's, hyperopt's
dispatcher, inside the notebook's run) find the session's binding in the session conf
``protocol.SESSION_TAG_CONF``, which Spark hands to the tasks of every SQL execution as a local
property; it names the session's active run (``protocol.SESSION_BINDING``), as the session
file does on a classic cluster.

Task side: ``forwarding.task.connect`` reads the binding from the tag, else from the session conf.

Where forwarding cannot work — no relay secret in this process's environment (serverless
compute has no cluster environment variables), Databricks serverless, or a Connect server on
another machine (Databricks Connect from a laptop) whose executors cannot reach this process
— the client logs one warning naming the limit and tags jobs with a *drop* binding instead:
tasks write what they log as files into ``task_drop_dir`` (a folder both sides can read, such
as a Unity Catalog volume), and the client moves those files into the run at
``spark_tracking.flush()`` and at exit, per worker and with the mean, as the relay would.
Without ``task_drop_dir`` tasks count their points as dropped and log why; nothing goes to an
executor-local MLflow store. Settings: ``relay_host`` (an address executors can reach: trusted
as reachable), ``task_drop_dir``.
"""

from __future__ import annotations

import logging
import os
import threading

from .. import protocol
from ..protocol import ENV_SECRET
from . import current
from .forwarder import Forwarder

logger = logging.getLogger(__name__)


# -- client side -----------------------------------------------------------------------------

_bound = threading.local()  # the tag this thread added, to replace it at the next run
_warned_limits: set = set()


def _is_local_host(host: str | None) -> bool:
    """Whether the Connect server runs on this machine: an address we can bind is ours."""
    import socket

    if not host:
        return False
    if host in ("localhost", "127.0.0.1", "::1"):
        return True
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr[0], 0))
            return True
        except OSError:
            continue
    return False


def forwarding_limit(cfg, server_host: str | None) -> str | None:
    """Why executors of this Connect session cannot reach a relay here; None when they can.

    Serverless is recognised by ``DATABRICKS_RUNTIME_VERSION`` starting with ``client.`` (the
    serverless environment versions; likely, not checked on the platform)."""
    runtime = os.environ.get("DATABRICKS_RUNTIME_VERSION", "")
    if runtime.startswith("client."):
        return (
            "Databricks serverless compute runs Spark tasks where they cannot reach this "
            "notebook's process, and has no init scripts or cluster environment variables"
        )
    if not os.environ.get(ENV_SECRET):
        return (
            f"{ENV_SECRET} is not in this process's environment, so tasks could not "
            "authenticate to a relay here (on Spark Connect the secret never travels with "
            "jobs; `spark-tracking install` sets it as a cluster environment variable; a "
            'server this process starts with remote("local") shares it when the startup '
            "hook is on: spark-tracking hook enable)"
        )
    if not cfg.relay_host and not _is_local_host(server_host):
        return (
            f"the Spark Connect server {server_host!r} runs on another machine, whose "
            "executors cannot reach this process (set relay_host to an address of this "
            "machine they can reach, if there is one)"
        )
    return None


def _share_secret_with_launched_server() -> None:
    """A Connect server this process launched holds ``ENV_LOCAL_SECRET`` as we do (it inherited
    our environment): that is the relay's secret (``ENV_SECRET``, which the relay reads), and
    its tasks find it in their environment."""
    local = os.environ.get(protocol.ENV_LOCAL_SECRET)
    if os.environ.get(ENV_SECRET) or not local:
        return
    from ..._compat import pyspark as compat

    if compat.launched_server_env(protocol.ENV_LOCAL_SECRET) == local:
        os.environ[ENV_SECRET] = local


def _relay_host(cfg, session, limited: bool) -> str:
    if cfg.relay_host:
        return cfg.relay_host
    if limited:
        return "127.0.0.1"  # the relay only serves drop files moved in by this process
    try:
        host = session.conf.get("spark.driver.host", None)
    except Exception:  # noqa: BLE001 - a server that refuses the read: fall back to loopback
        host = None
    return host if host and _is_local_host(host) else "127.0.0.1"


class ConnectStages:
    """What the session's progress reports say about stages (``spark.registerProgressHandler``,
    Spark 4): how many tasks one has, which are done — the interface of ``stages.SparkStages``,
    which a Connect client cannot have (no status tracker). The driver emits a step's mean once
    every task of the stage logged it, and closes a stage's means when it is done."""

    def __init__(self):
        from .bounded import BoundedDict

        self._tasks = BoundedDict(4096)
        self._done: set = set()

    def __call__(self, stages, inflight_tasks, operation_id, done):
        """The progress handler: record each stage's task count and whether it is done."""
        for stage in stages or ():
            if stage.num_tasks:
                self._tasks[stage.stage_id] = stage.num_tasks
            if stage.done:
                self._done.add(stage.stage_id)

    def tasks(self, stage: int) -> int | None:
        """A stage's number of tasks, None until a progress report named it."""
        return self._tasks.get(stage)

    def finished(self, stages: set) -> set:
        """Those of ``stages`` a progress report said are done."""
        ended = set(stages) & self._done
        self._done -= ended
        return ended

    @classmethod
    def watch(cls, session) -> ConnectStages:
        """Stages of ``session``, fed by its progress reports from now on."""
        stages = cls()
        try:
            session.registerProgressHandler(stages)
        except Exception:
            logger.debug("spark_tracking: no progress reports on this Spark Connect client", exc_info=True)
        return stages


def session_of_this_thread():
    """This thread's active Spark Connect session, or None (never imports the Connect client)."""
    from ..._compat import pyspark as compat

    return compat.connect_session(this_thread_only=True)


def bind_current_thread() -> bool:
    """Bind the operations this thread submits through its Spark Connect session to this
    thread's active MLflow run (see the module docstring). False without a Connect session.

    Honours ``forwarding``, ``disabled``, ``relay_host``, ``task_drop_dir`` and
    ``SPARK_TRACKING_RELAY_SECRET``."""
    from ..._compat import pyspark as compat

    session = compat.connect_session()
    if session is None:
        return False
    cfg = current.config()
    if cfg.disabled or not cfg.forwarding:
        return False
    _share_secret_with_launched_server()
    limit = forwarding_limit(cfg, compat.connect_server_host(session))
    fw = current.use_forwarder(
        session,
        lambda: Forwarder(
            cfg,
            None,
            host=_relay_host(cfg, session, limit is not None),
            stages=ConnectStages.watch(session),
        ),
    )
    binding = fw.bind_thread()
    if limit is None:
        payload = {"r": fw.relay.address, "b": binding, "f": cfg.relay_max_frame_bytes}
    else:
        payload = {"b": binding, "d": cfg.task_drop_dir or ""}
        _warn_limit(limit, cfg.task_drop_dir)
    tag = protocol.encode_tag(payload)
    previous = getattr(_bound, "tag", None)
    if previous is not None and previous != tag:
        session.removeTag(previous)
    session.addTag(tag)
    _bound.tag = tag
    # jobs of threads that carry no tag (a thread pool's, inside this run) log to the session's
    # active run, as the session file does on a classic cluster; drop files stay this thread's
    session_payload = dict(payload, b=protocol.SESSION_BINDING) if limit is None else payload
    try:
        session.conf.set(protocol.SESSION_TAG_CONF, protocol.encode_tag(session_payload))
    except Exception:  # a session that refuses the conf still forwards its tagged jobs
        logger.warning("spark_tracking: jobs of threads that started no run will not forward", exc_info=True)
    return True


def _warn_limit(limit: str, drop_dir: str | None) -> None:
    if limit in _warned_limits:
        return
    _warned_limits.add(limit)
    if drop_dir:
        where = (
            f"tasks write what they log to {drop_dir} and it reaches the run at "
            "spark_tracking.flush() or when this process exits, not live"
        )
    else:
        where = (
            "what tasks log is dropped (each worker logs how many points); set "
            "SPARK_TRACKING_TASK_DROP_DIR to a folder both this process and the tasks can write "
            "(a Unity Catalog volume, /Volumes/<catalog>/<schema>/<volume>/spark_tracking) "
            "to collect it"
        )
    logger.warning(
        "spark_tracking: forwarding from Spark tasks is not available on this Spark Connect session: %s. %s.",
        limit,
        where[0].upper() + where[1:],
    )
