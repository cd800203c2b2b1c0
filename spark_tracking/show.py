"""``spark-tracking show RUN_ID`` and ``spark-tracking ui``: look at results from a terminal.

``show`` prints a run's metrics with the columns AML studio offers (last, min, max, count),
one row for the aggregate and one per worker (a series forwarded from several Spark tasks is
stored per worker plus their mean, see :mod:`spark_tracking.layout`; ``show`` groups them under
the metric's key). Workers' system metrics (``system/<name>/worker_<w>``) get a table of their
own, one row per worker (CPU, memory, GPU), naming the busiest CPU, the most memory and the
least-used GPU. Then params, tags (system tags ``mlflow.*``,
``spark_tracking.*`` and ``aml.*`` only with ``--all-tags``), texts, tables and images logged
with the AML vocabulary (``spark_tracking.Run``). ``--plot out.png`` draws one panel per
metric: each worker thin, the mean thick; ``--compare RUN_ID...`` overlays other runs (one
colour per run) and adds a table of their last values.

``ui`` runs ``mlflow server`` on the store, bound to 127.0.0.1 unless told otherwise, prints
its URL and stops it on Ctrl-C / SIGTERM.

Store: ``--tracking-uri`` (show) / ``--store`` (ui) > the configured tracking URI
(``SPARK_TRACKING_TRACKING_URI``, Spark conf, config file; see ``spark-tracking settings``)
> the embedded store.

Data loading (``load_run``, through :class:`~spark_tracking.store.RunReader`, in
:mod:`spark_tracking.show_data`) is the only part that talks to the store; the table text
(``format_report`` / ``format_comparison``, :mod:`spark_tracking.show_text`) and the figure
(``plot_runs``, :mod:`spark_tracking.show_plot`) are built from plain data. This module holds
the two commands and re-exports those names, so ``spark_tracking.show.<name>`` keeps working.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request

from .show_data import RunData, load_run
from .show_plot import PANEL_SIZE, PLOT_COLUMNS, PLOT_DPI, plot_runs
from .show_text import (
    SeriesSummary,
    format_comparison,
    format_metrics,
    format_report,
    format_system_metrics,
    metric_rows,
    summarize,
    system_rows,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PANEL_SIZE",
    "PLOT_COLUMNS",
    "PLOT_DPI",
    "RunData",
    "SeriesSummary",
    "UiServer",
    "format_comparison",
    "format_metrics",
    "format_report",
    "format_system_metrics",
    "load_run",
    "metric_rows",
    "plot_runs",
    "register",
    "summarize",
    "system_rows",
    "ui_store",
]


def _config():
    """This process's configuration (configure() ran) or the resolved one."""
    from .session import active_config

    return active_config()


def _resolved_uri(explicit: str | None) -> str:
    if explicit:
        return explicit
    from .session import configure, current_tracking_uri

    if current_tracking_uri() is None:
        configure()
    return current_tracking_uri() or _config().effective_tracking_uri


def _show(args) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from .config import ConfigError

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tables are read as artifacts
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        print(f"error: --plot {args.plot!r}: the output file must end in .png", file=sys.stderr)
        return 2
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        print(
            f"error: --plot {args.plot!r}: folder {os.path.dirname(os.path.abspath(args.plot))!r} does not exist",
            file=sys.stderr,
        )
        return 2
    try:
        uri = _resolved_uri(args.tracking_uri)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = MlflowClient(uri)
    runs = []
    for run_id in [args.run_id, *args.compare]:
        try:
            runs.append(load_run(client, run_id))
        except MlflowException as exc:
            print(
                f"error: run {run_id!r} not found in {uri}: {exc.message}. "
                "List runs with mlflow.search_runs() or open `spark-tracking ui`.",
                file=sys.stderr,
            )
            return 1
    print("\n\n".join(format_report(d, all_tags=args.all_tags).rstrip("\n") for d in runs))
    if len(runs) > 1:
        print()
        print(format_comparison(runs), end="")
    if args.plot is not None:
        try:
            fig = plot_runs(runs, args.plot)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"\nplot: {args.plot} ({len(fig.axes)} panels)")
    return 0


class UiServer:
    """``mlflow server`` on a store, in its own process group; ``stop()`` ends the group."""

    def __init__(
        self, store_uri: str, host: str = "127.0.0.1", port: int = 5000, artifact_root: str | None = None, log=None
    ):
        self.store_uri, self.host, self.port, self.artifact_root = store_uri, host, port, artifact_root
        self.log = log  # where the server's output goes (a file object); None: inherited
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Where the server answers: ``http://<host>:<port>``."""
        return f"http://{self.host if ':' not in self.host else '[' + self.host + ']'}:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> UiServer:
        """Start the server and wait until /health answers (raises with the reason if not)."""
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.store_uri,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.artifact_root:
            cmd += ["--default-artifact-root", self.artifact_root]
        env = dict(os.environ)
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no background job runners
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT if self.log is not None else None,
        )
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        health = f"http://127.0.0.1:{self.port}/health" if self.host in ("0.0.0.0", "::") else self.url + "/health"
        proc = self._started()
        waiter = threading.Event()
        deadline = timeout / 0.2
        for _ in range(int(deadline)):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode} before answering "
                    f"{health} (is port {self.port} in use? try --port)"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                waiter.wait(0.2)  # readiness poll of the server process we started
        raise RuntimeError(f"mlflow server did not answer {health} within {timeout:.0f}s")

    def _started(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError("the MLflow UI server was not started; call start() first")
        return self.proc

    def wait(self) -> int:
        """Wait for the server to exit; its exit code."""
        return self._started().wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()


_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file")


def ui_store(explicit: str | None = None) -> tuple[str, str | None]:
    """(store URI, artifact root) the UI serves: ``--store`` > the configured tracking URI
    when it is a database or file store > the embedded store. A remote configured store
    (http, azureml, databricks) is refused: it has its own UI."""
    if explicit:
        return explicit, None
    cfg = _config()
    uri = cfg.effective_tracking_uri
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if "://" in uri else "file"
    if uri == cfg.embedded_store_uri:
        return uri, cfg.embedded_artifact_root
    if scheme in _DB_SCHEMES:
        return uri, None
    raise ValueError(
        f"the configured tracking URI {uri!r} ({cfg.sources.get('tracking_uri', 'default')}) is a remote "
        "store with its own UI (run.get_portal_url() gives the address); pass --store URI to serve "
        "a local store"
    )


def _ui(args) -> int:
    from .config import ConfigError

    try:
        store, artifacts = ui_store(args.store)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "spark_tracking: the MLflow UI on %s has no authentication; anyone who can reach "
            "this host can read and change the store",
            args.host,
        )
    # the server logs to stderr: stdout carries only the URL line
    server = UiServer(store, args.host, args.port, artifacts, log=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.start()
        print(f"MLflow UI: {server.url}  (store {store}; Ctrl-C stops it)", flush=True)
        return 0 if server.wait() in (0, -signal.SIGTERM) else 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def register(subparsers) -> None:
    """Add ``show`` and ``ui`` to the ``spark-tracking`` command."""
    show = subparsers.add_parser(
        "show",
        help="a run's metrics (last/min/max/count per worker and aggregate), params, tags",
        description="Print a run's metrics (per worker and their mean), params, tags, texts, tables "
        "and images; --plot draws the curves, --compare overlays other runs.",
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--compare", nargs="+", default=[], metavar="RUN_ID", help="runs to overlay")
    show.add_argument("--plot", metavar="OUT.png", help="write the curves to this PNG file")
    show.add_argument("--tracking-uri", help="the store (default: the configured one)")
    show.add_argument("--all-tags", action="store_true", help="include system tags (mlflow.*, ...)")
    show.set_defaults(func=_show)
    ui = subparsers.add_parser(
        "ui",
        help="serve the MLflow UI on the local store (127.0.0.1)",
        description="Run the MLflow UI on the embedded (or configured local) store; prints its URL.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--store", help="store URI to serve (default: the configured local store)")
    ui.set_defaults(func=_ui)
