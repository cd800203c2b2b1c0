"""System metrics of the processes that run Spark tasks and training ranks, into the driver's run.

On when the driver says so for the job (``protocol.PROP_SYSTEM_METRICS``, the sampling
interval; see ``forwarding.driver.system_metrics``); off, nothing here runs: no thread, no
sample, no import of psutil or MLflow.

**What a worker is.** A worker is the process that runs a task's Python code — the Python
worker running partition ``p``, or a process the task started with its own ``RANK`` (a
TorchDistributor/torchrun rank) — together with the processes it starts that do not sample
themselves. Its series carry the task's worker id (``layout.worker_id``: the rank, else the
partition), like the metrics the task logs: ``system/cpu_utilization_percentage/worker_3``
sits beside ``loss/worker_3``. Every process is counted by exactly one sampler, so the workers
of one node add up to at most what the node uses: several tasks on one executor are separate
Python workers, each its own series; a rank that samples itself is left out of the series of
the task that started it (ranks register in a private folder, :class:`Registry`). The
executor's JVM (Spark's own work: shuffle, caching) is not a worker: Databricks' cluster
metrics show it, and MLflow's own system metrics show the driver's machine as plain
``system/<name>``.

**Names** are MLflow's, measured over the worker's processes:

- ``cpu_utilization_percentage``: the CPU time they used over the interval, as a share of the
  node's whole CPU capacity (100 = every core of the node busy; MLflow's node-wide number on the
  same scale);
- ``system_memory_usage_megabytes``: their resident memory (RSS, 10^6 bytes as MLflow), and
  ``system_memory_usage_percentage``: the same as a share of the node's memory;
- ``gpu_<i>_utilization_percentage``, ``gpu_<i>_memory_usage_megabytes``,
  ``gpu_<i>_memory_usage_percentage`` (and power where MLflow samples it): MLflow's
  ``GPUMonitor`` (pynvml) over the GPUs Spark assigned to the task (``TaskContext.resources()``),
  else those in ``CUDA_VISIBLE_DEVICES`` (TorchDistributor sets it per task), else every GPU
  of the node; ``<i>`` is the GPU's index on the node.

MLflow's CPU, memory, disk and network monitors measure the whole machine, which several
workers of one node would each report (counted twice): the per-process numbers above are read
with psutil instead, and disk and network (node-wide only) are not sampled per worker.

**Cost and guarantees.** One sampler per process (a named daemon thread,
``spark-tracking-system-metrics``), started at the first task that asks for it and reused by
the next tasks of a reused Python worker; it never blocks a task (a sample is taken under a
lock the task's end also takes: the end waits at most for one sample in flight, a few
milliseconds). Each sample appends its
points to the shipper's queue, the path of every forwarded point (bounded in memory, spilled,
acknowledged by the driver). A task's sampling stops at its end, before its points are handed
to the driver, so nothing is sent for a task after it ended; a rank samples until its process
exits. Step: the Unix time in seconds, so one step is one moment on every worker.
Without psutil nothing is sampled (one warning); without pynvml or a GPU, no GPU series.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping

from ... import layout
from .. import protocol
from .frames import new_point

logger = logging.getLogger(__name__)

THREAD_NAME = "spark-tracking-system-metrics"
_GPU_PREFIX = "gpu_"


def interval_from(raw: str | None) -> float | None:
    """The sampling interval a job property or exported variable names; None when off."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


class Registry:
    """Processes that sample themselves (ranks a task started): a file ``<pid>`` holding the
    process's start time, in a folder private to the user. The sampler of the task that
    started them leaves them (and what they start) out of its series."""

    def __init__(self, folder: str | None = None):
        import tempfile  # not at import: the executor module loads this one in every Python worker

        self.folder = folder or os.path.join(tempfile.gettempdir(), f"spark_tracking_sysmetrics-{os.getuid()}")

    def register(self, pid: int, started: float) -> None:
        """Mark process ``pid`` (started at ``started``, epoch seconds) as sampling itself."""
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        path = os.path.join(self.folder, str(pid))
        with open(path, "w", encoding="ascii") as fh:
            fh.write(repr(started))
        atexit.register(self.unregister, pid)

    def unregister(self, pid: int) -> None:
        """Forget process ``pid`` (at its exit)."""
        try:
            os.unlink(os.path.join(self.folder, str(pid)))
        except OSError:  # gone already
            return

    def samples_itself(self, pid: int, started: float) -> bool:
        """Whether process ``pid`` started at ``started`` registered (a reused pid did not)."""
        try:
            with open(os.path.join(self.folder, str(pid)), encoding="ascii") as fh:
                return abs(float(fh.read()) - started) < 0.01
        except (OSError, ValueError):
            return False


class ProcessTree:
    """CPU and resident memory of a process and of the processes it started, except those that
    sample themselves (``registry``), with psutil. ``clock``: wall seconds (injected in tests)."""

    def __init__(self, psutil, pid: int | None = None, registry: Registry | None = None, clock=time.time):
        self.psutil = psutil
        self.root = psutil.Process(pid or os.getpid())
        self.registry = registry or Registry()
        self.clock = clock
        self.cpus = psutil.cpu_count() or 1
        self.memory_total = psutil.virtual_memory().total
        self._cpu: dict[tuple, float] = {}  # (pid, start time) -> CPU seconds at the last sample
        self._at = clock()

    def processes(self) -> list:
        """The processes this worker's numbers cover: the root and its descendants, without the
        subtrees of descendants that sample themselves."""
        error = self.psutil.Error
        try:
            children = self.root.children(recursive=True)
        except error:
            children = []
        left_out: set[int] = set()
        for child in children:
            if child.pid in left_out:
                continue
            try:
                if self.registry.samples_itself(child.pid, child.create_time()):
                    left_out.add(child.pid)
                    left_out.update(c.pid for c in child.children(recursive=True))
            except error:
                left_out.add(child.pid)
        return [self.root, *(c for c in children if c.pid not in left_out)]

    def reset(self) -> None:
        """Start a new interval now (a task starts: its first sample covers only the task)."""
        self._cpu = {key: cpu for key, cpu, _ in self._read(self.processes())}
        self._at = self.clock()

    def _read(self, processes) -> list[tuple]:
        out = []
        for p in processes:
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    out.append(((p.pid, p.create_time()), times.user + times.system, p.memory_info().rss))
            except self.psutil.Error:  # ended meanwhile
                continue
        return out

    def sample(self) -> dict[str, float]:
        """The worker's numbers since the last sample (or :meth:`reset`)."""
        started = self._at
        readings = self._read(self.processes())
        now = self.clock()
        used = 0.0
        rss = 0
        previous = self._cpu
        for key, cpu, resident in readings:
            before = previous.get(key)
            # a process new since the last sample: all its CPU time is in this interval
            used += cpu - before if before is not None else (cpu if key[1] >= started else 0.0)
            rss += resident
        self._cpu = {key: cpu for key, cpu, _ in readings}
        self._at = now
        elapsed = max(now - started, 1e-6)
        return {
            "cpu_utilization_percentage": round(min(100.0, max(0.0, used / (elapsed * self.cpus) * 100)), 2),
            "system_memory_usage_megabytes": round(rss / 1e6, 1),
            "system_memory_usage_percentage": round(rss / self.memory_total * 100, 2),
        }


class Gpus:
    """MLflow's ``GPUMonitor`` (pynvml) over the GPUs of a worker, named by their node index.
    Raises when there is no pynvml or no GPU (MLflow's monitor does)."""

    def __init__(self, indices: list[int] | None):
        # mlflow.system_metrics.metrics.gpu_monitor.GPUMonitor: num_gpus, gpu_handles,
        # collect_metrics, aggregate_metrics, clear_metrics, keys gpu_<n>_... by position in
        # gpu_handles (checked on MLflow 2.9.2 and 3.17.2)
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

        self.monitor = GPUMonitor()
        count = self.monitor.num_gpus
        self.indices = [i for i in indices if 0 <= i < count] if indices is not None else list(range(count))
        self.monitor.gpu_handles = [self.monitor.gpu_handles[i] for i in self.indices]
        self._failed = False

    def sample(self) -> dict[str, float]:
        """The GPUs' numbers (MLflow's names, node indices); {} when NVML fails this time."""
        monitor = self.monitor
        try:
            monitor.collect_metrics()
            values = monitor.aggregate_metrics()
        except Exception as exc:  # noqa: BLE001 - MLflow 2.9 lets NVMLError through; next sample retries
            if not self._failed:
                logger.warning("spark_tracking: GPU metrics of this worker unavailable (%s)", exc)
                self._failed = True
            return {}
        finally:
            monitor.clear_metrics()
        out = {}
        for name, value in values.items():
            position, _, rest = name[len(_GPU_PREFIX) :].partition("_")
            if name.startswith(_GPU_PREFIX) and position.isdigit() and int(position) < len(self.indices):
                name = f"{_GPU_PREFIX}{self.indices[int(position)]}_{rest}"
            out[name] = float(value)
        return out


def gpu_indices(task_context=None, environ: Mapping[str, str] | None = None) -> list[int] | None:
    """The node indices of the worker's GPUs: the task's Spark resources ("gpu"), else
    ``CUDA_VISIBLE_DEVICES`` when it lists indices; None: every GPU of the node."""
    environ = os.environ if environ is None else environ
    addresses: list = []
    if task_context is not None:
        try:
            gpu = task_context.resources().get("gpu")
            addresses = list(gpu.addresses) if gpu is not None else []
        except Exception:  # noqa: BLE001 - no resources on this PySpark/task: the environment says
            addresses = []
    if not addresses:
        visible = environ.get("CUDA_VISIBLE_DEVICES", "")
        addresses = [a.strip() for a in visible.split(",") if a.strip()]
    if addresses and all(a.isdigit() for a in addresses):
        return [int(a) for a in addresses]
    return None  # none assigned, or UUIDs: all of them


def _default_sources(gpus: list[int] | None) -> list:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        logger.warning("spark_tracking: system metrics of Spark workers need psutil (pip install psutil); none sampled")
        return []
    sources: list = [ProcessTree(psutil)]
    if "pynvml" in sys.modules or _importable("pynvml"):
        try:
            sources.append(Gpus(gpus))
        except Exception as exc:  # noqa: BLE001 - no GPU, NVML missing: no GPU series (MLflow logs the same)
            logger.info("spark_tracking: no GPU metrics for this worker (%s)", exc)
    return sources


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Sampler:
    """One per process: a daemon thread that samples every ``interval`` seconds while a task
    (or a rank) of a run with system metrics on is attached, and appends the points to
    ``emit`` (the shipper's queue). ``make_sources(gpus)`` gives the samplers (each with
    ``sample() -> {name: value}``; :class:`ProcessTree` has ``reset()``); ``clock``: wall
    seconds."""

    def __init__(self, make_sources: Callable[[list[int] | None], list] = _default_sources, clock=time.time):
        self.make_sources = make_sources
        self.clock = clock
        self.interval = 10.0
        self.sources: list | None = None  # made once per process, at the first attach
        self.target = None  # the Binding the samples go to, None between tasks
        self.emit: Callable[[list], None] | None = None
        self.context = None  # the task context attached (None for a rank)
        self.samples = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._gpus: list[int] | None = None
        self._fresh = False  # attached since the last prepare()
        self.error: str | None = None  # the last failure of the thread (seen in tests)

    def attach(self, binding, emit: Callable[[list], None], interval: float, gpus=None, context=None) -> None:
        """Sample for ``binding`` from now on (a task started); starts the thread once. Costs
        the task microseconds: the thread makes the sources (psutil, MLflow's GPU monitor) and
        starts the interval."""
        with self._lock:
            if self._stopping:
                return
            self.target, self.emit, self.interval, self.context = binding, emit, interval, context
            self._gpus, self._fresh = gpus, True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
        self._wake.set()

    def prepare(self) -> None:
        """Make the sources (once per process) and start a new interval in each (a task starts:
        its first sample covers only the task). In the sampler's thread, outside the lock."""
        sources = self.sources
        if sources is None:
            sources = self.sources = self.make_sources(self._gpus)  # raises: tried again next interval
        self._fresh = False
        for source in sources:
            reset = getattr(source, "reset", None)
            if reset is not None:
                reset()

    def detach(self) -> None:
        """Stop sampling for the attached task (it ended); returns once no sample is in flight."""
        with self._lock:
            self.target = self.emit = self.context = None

    def stop(self) -> None:
        """The process ends: no sample after this returns."""
        with self._lock:
            self._stopping = True
            self.target = self.emit = self.context = None
        self._wake.set()

    def sample_once(self) -> int:
        """Take one sample for the attached binding; the number of points appended."""
        with self._lock:
            b, emit = self.target, self.emit
            if b is None or emit is None or not self.sources:
                return 0
            values: dict[str, float] = {}
            for source in self.sources:
                try:
                    values.update(source.sample())
                except Exception:
                    logger.debug("spark_tracking: a system-metrics source failed", exc_info=True)
            now = self.clock()
            ts, step = int(now * 1000), int(now)
            rows = [
                new_point((b, layout.SYSTEM_PREFIX + name, float(value), ts, step))
                for name, value in values.items()
                if isinstance(value, (int, float)) and math.isfinite(value)
            ]
            if rows:
                emit(rows)
                self.samples += 1
            return len(rows)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval if self.target is not None else None)
            self._wake.clear()
            if self._stopping:
                return
            try:
                if self._fresh:
                    self.prepare()
                else:
                    self.sample_once()
            except Exception as exc:  # never die: the next interval samples again
                self.error = repr(exc)
                logger.warning("spark_tracking: system metrics sample failed", exc_info=True)

    def after_fork_in_child(self) -> None:
        """A forked child has no thread and samples nothing until a task of its own attaches."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self.target = self.emit = self.context = None
        self.sources = None


sampler = Sampler()
os.register_at_fork(after_in_child=sampler.after_fork_in_child)
_exit_hooked = False


def _emit_to(shipper) -> Callable[[list], None]:
    queue = shipper.queue
    return queue.extend


def _stop_at_exit() -> None:
    global _exit_hooked
    if not _exit_hooked:  # registered after the shipper's exit flush: runs before it (LIFO)
        _exit_hooked = True
        atexit.register(sampler.stop)


def task_started(task_context, shipper) -> None:
    """A task starts: sample for its binding when its job has system metrics on. Never raises."""
    try:
        interval = interval_from(task_context.getLocalProperty(protocol.PROP_SYSTEM_METRICS))
        if interval is None:
            if sampler.target is not None:
                sampler.detach()
            return
        if sampler.context is task_context:  # a second start hook of the same task (barrier)
            return
        from .binding import from_task_context

        b = from_task_context(task_context)
        if b is None:
            return
        shipper.configure(b.relay, b.secret, b.settings)
        sampler.attach(b, _emit_to(shipper), interval, gpu_indices(task_context), task_context)
    except Exception:
        logger.debug("spark_tracking: system metrics not started for this task", exc_info=True)


def task_ended() -> None:
    """A task ends: its sampling stops before its points are handed to the driver."""
    if sampler.target is not None:
        sampler.detach()


def process_bound(b, shipper, environ: Mapping[str, str] | None = None) -> None:
    """A process a task started (a rank) is bound through its environment: it samples itself
    for its life when the task's job had system metrics on, and leaves the task's series."""
    environ = os.environ if environ is None else environ
    try:
        interval = interval_from(environ.get(protocol.ENV_SYSTEM_METRICS))
        if interval is None or sampler.target is not None:
            return
        Registry().register(os.getpid(), _start_time())
        _stop_at_exit()
        sampler.attach(b, _emit_to(shipper), interval, gpu_indices(None, environ))
    except Exception:
        logger.debug("spark_tracking: system metrics not started for this process", exc_info=True)


def _start_time() -> float:
    import psutil

    return psutil.Process().create_time()
