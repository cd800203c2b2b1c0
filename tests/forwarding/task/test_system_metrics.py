"""System metrics of the processes that run Spark tasks: what a sample measures (psutil, the
process tree without ranks that sample themselves, MLflow's GPU monitor over a fake NVML), the
sampler's life (attach, detach, stop, nothing after a task's end), and on local-cluster: a
CPU-bound task and a sleeping one told apart, a task's allocation in its memory series, and
nothing sampled when the switch is off."""

import os
import statistics
import subprocess
import sys
import textwrap
import time
import types

import mlflow
import psutil
import pytest
from conftest import history
from driver_program import run_on_cluster, spark_session

from spark_tracking.forwarding import protocol
from spark_tracking.forwarding.task import system_metrics
from spark_tracking.forwarding.task.binding import Binding
from spark_tracking.forwarding.task.system_metrics import Gpus, ProcessTree, Registry, Sampler

# -- the sampler ------------------------------------------------------------------------------


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class Source:
    def __init__(self, values):
        self.values, self.resets = values, 0

    def reset(self):
        self.resets += 1

    def sample(self):
        return dict(self.values)


def _binding(partition=3):
    return Binding("127.0.0.1:1", "s", "t:0", [1, partition, 0, 9, None, 0], True)


def test_a_sample_goes_to_the_attached_task_with_mlflows_names_and_nothing_once_it_ended():
    clock = Clock()
    source = Source({"cpu_utilization_percentage": 12.5, "gpu_0_utilization_percentage": 80})
    sampler = Sampler(lambda gpus: [source], clock=clock)
    queue = []
    assert sampler.sample_once() == 0  # nothing attached: nothing sampled
    b = _binding()
    sampler._thread = types.SimpleNamespace(is_alive=lambda: True)  # drive it by hand, no thread
    sampler.attach(b, queue.extend, 0.5)
    sampler.prepare()
    assert source.resets == 1  # the task's first sample covers only the task
    clock.now += 0.5
    assert sampler.sample_once() == 2
    ts = int(clock.now * 1000)
    assert sorted(queue, key=lambda r: r[1]) == [
        (b, "system/cpu_utilization_percentage", 12.5, ts, int(clock.now)),
        (b, "system/gpu_0_utilization_percentage", 80.0, ts, int(clock.now)),
    ]
    sampler.detach()  # the task ended
    assert sampler.sample_once() == 0
    assert len(queue) == 2
    sampler.attach(b, queue.extend, 0.5)
    sampler.stop()  # the process ends
    assert sampler.sample_once() == 0
    sampler.attach(b, queue.extend, 0.5)
    assert sampler.target is None


def test_a_failing_source_never_stops_the_others_and_non_numbers_are_left_out():
    class Broken:
        def sample(self):
            raise OSError("gone")

    sampler = Sampler(lambda gpus: [Broken(), Source({"a": 1.0, "nan": float("nan")})], clock=Clock())
    sampler._thread = types.SimpleNamespace(is_alive=lambda: True)
    queue = []
    sampler.attach(_binding(), queue.extend, 1.0)
    sampler.prepare()
    assert sampler.sample_once() == 1
    assert [r[1] for r in queue] == ["system/a"]


def test_the_sampler_thread_samples_every_interval_and_stops():
    sampler = Sampler(lambda gpus: [Source({"x": 1.0})])
    queue = []
    sampler.attach(_binding(), queue.extend, 0.01)
    deadline = time.monotonic() + 30
    while len(queue) < 3 and time.monotonic() < deadline:
        sampler._thread.join(0.01)  # bounded wait on the thread's own work
    assert len(queue) >= 3
    assert sampler._thread.name == "spark-tracking-system-metrics" and sampler._thread.daemon
    sampler.stop()
    sampler._thread.join(10)
    assert not sampler._thread.is_alive()


# -- what a sample measures -------------------------------------------------------------------


def test_cpu_is_the_processes_share_of_the_node_and_memory_their_resident_set():
    clock = Clock()
    tree = ProcessTree(psutil, clock=clock, registry=Registry(folder="/nonexistent"))
    tree.reset()
    start = time.process_time()
    while time.process_time() - start < 0.3:  # 0.3 s of this process's CPU
        pass
    burnt = time.process_time() - start
    clock.now += 2.0
    rss_before = psutil.Process().memory_info().rss
    values = tree.sample()
    cpus = psutil.cpu_count()
    assert burnt / (2.0 * cpus) * 100 - 0.5 <= values["cpu_utilization_percentage"] <= 100
    tree_rss = sum(p.memory_info().rss for p in tree.processes())  # this process and what it started (Spark's JVM)
    assert values["system_memory_usage_megabytes"] >= rss_before / 1e6 - 1  # rounded to 0.1 MB
    assert abs(values["system_memory_usage_megabytes"] - tree_rss / 1e6) < 50
    block = b"\x01" * (200 * 10**6)  # written, so resident
    clock.now += 2.0
    grown = tree.sample()
    assert grown["system_memory_usage_megabytes"] - values["system_memory_usage_megabytes"] > 190
    total = psutil.virtual_memory().total
    assert grown["system_memory_usage_percentage"] == pytest.approx(
        grown["system_memory_usage_megabytes"] * 1e6 / total * 100, abs=0.05
    )
    del block


def test_a_started_process_counts_with_its_parent_unless_it_samples_itself(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        registry = Registry(folder=str(tmp_path / "registry"))
        tree = ProcessTree(psutil, registry=registry)
        assert child.pid in {p.pid for p in tree.processes()}
        registry.register(child.pid, psutil.Process(child.pid).create_time() + 5)  # a reused pid: not this one
        assert child.pid in {p.pid for p in tree.processes()}
        registry.register(child.pid, psutil.Process(child.pid).create_time())
        assert child.pid not in {p.pid for p in tree.processes()}
        assert os.stat(registry.folder).st_mode & 0o777 == 0o700
    finally:
        child.communicate(b"")


class FakeNVML(types.ModuleType):
    """pynvml as MLflow's GPUMonitor calls it: two GPUs with fixed readings."""

    class NVMLError(Exception):
        pass

    def __init__(self, fail_init=False):
        super().__init__("pynvml")
        self.fail_init = fail_init

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(used=(h + 1) * 1e9, total=16e9)

    def nvmlDeviceGetUtilizationRates(self, h):
        return types.SimpleNamespace(gpu=[35, 90][h], memory=0)

    def nvmlDeviceGetPowerUsage(self, h):
        return 100_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 400_000


@pytest.fixture
def nvml(monkeypatch):
    from mlflow.system_metrics.metrics import gpu_monitor

    def install(**kw):
        fake = FakeNVML(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        monkeypatch.setattr(gpu_monitor, "pynvml", fake, raising=False)
        return fake

    return install


def test_gpus_are_mlflows_monitor_over_the_workers_gpus_named_by_their_node_index(nvml):
    nvml()
    second = Gpus([1]).sample()  # Spark gave this task GPU 1 only
    assert second["gpu_1_utilization_percentage"] == 90.0
    assert second["gpu_1_memory_usage_megabytes"] == 2000.0
    assert not any(k.startswith("gpu_0_") for k in second)
    both = Gpus(None).sample()
    assert both["gpu_0_utilization_percentage"] == 35.0 and both["gpu_1_utilization_percentage"] == 90.0


def test_without_nvml_or_without_psutil_the_rest_is_sampled_and_nothing_fails(nvml, monkeypatch, caplog):
    nvml(fail_init=True)
    sources = system_metrics._default_sources(None)
    assert [type(s) for s in sources] == [ProcessTree]
    nvml()
    assert [type(s) for s in system_metrics._default_sources([0])] == [ProcessTree, Gpus]
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    assert system_metrics._default_sources(None) == []
    assert "need psutil (pip install psutil); none sampled" in caplog.text


def test_a_workers_gpus_are_its_spark_resources_else_cuda_visible_devices():
    class Ctx:
        def resources(self):
            return {"gpu": types.SimpleNamespace(addresses=["2", "3"])}

    assert system_metrics.gpu_indices(Ctx(), {"CUDA_VISIBLE_DEVICES": "0"}) == [2, 3]
    assert system_metrics.gpu_indices(None, {"CUDA_VISIBLE_DEVICES": "1,0"}) == [1, 0]
    assert system_metrics.gpu_indices(None, {"CUDA_VISIBLE_DEVICES": "GPU-5f1c"}) is None  # UUIDs: all
    assert system_metrics.gpu_indices(None, {}) is None


def test_a_started_process_samples_itself_only_when_the_task_exported_the_switch(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        system_metrics, "sampler", types.SimpleNamespace(target=None, attach=lambda *a: calls.append(a))
    )
    monkeypatch.setattr(system_metrics, "Registry", lambda: Registry(folder=str(tmp_path / "r")))
    monkeypatch.setattr(system_metrics, "_stop_at_exit", lambda: None)
    shipper = types.SimpleNamespace(queue=[])
    b = _binding()
    system_metrics.process_bound(b, shipper, environ={})
    assert calls == []
    system_metrics.process_bound(b, shipper, environ={protocol.ENV_SYSTEM_METRICS: "0.5", "CUDA_VISIBLE_DEVICES": "1"})
    assert [(c[0], c[2], c[3]) for c in calls] == [(b, 0.5, [1])]
    assert os.listdir(tmp_path / "r") == [str(os.getpid())]  # left out of its task's series


# -- on local-cluster ---------------------------------------------------------------------------

PROGRAM = spark_session("local-cluster[2,1,1024]") + textwrap.dedent("""
    import threading, time
    import mlflow
    from pyspark import TaskContext

    def work(rows):
        from spark_tracking.forwarding.task import system_metrics
        p = TaskContext.get().partitionId()
        held = None
        end = time.monotonic() + 3.0
        if p == 0:
            while time.monotonic() < end:  # burns CPU
                pass
        else:
            held = b"\\x01" * (300 * 10**6)  # 300 MB, written: resident (seconds on a busy machine)
            time.sleep(3.0)  # sleeps, holding it
        del held
        names = [t.name for t in threading.enumerate()]
        yield (p, "spark-tracking-system-metrics" in names, system_metrics.sampler.sources is not None)

    def job():
        return sorted(spark.sparkContext.parallelize(range(2), 2).mapPartitions(work).collect())

    with mlflow.start_run() as off:
        print("off", job())
    mlflow.enable_system_metrics_logging()
    mlflow.set_system_metrics_sampling_interval(0.25)
    with mlflow.start_run() as on:
        print("on", job())
    import spark_tracking
    spark_tracking.flush()
    print(off.info.run_id, on.info.run_id)
""")


def test_each_worker_s_cpu_and_memory_series_show_what_its_process_used_and_off_samples_nothing(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    lines = run_on_cluster(PROGRAM, store, tmp_path)
    off_run, on_run = lines[-1].split()
    # off: the tasks' workers started no sampler and never touched psutil
    assert lines[-3] == "off [(0, False, False), (1, False, False)]"
    assert lines[-2] == "on [(0, True, True), (1, True, True)]"
    client = mlflow.MlflowClient(store)
    assert not [k for k in client.get_run(off_run).data.metrics if k.startswith("system/")]
    keys = set(client.get_run(on_run).data.metrics)
    for w in (0, 1):
        assert {
            f"system/cpu_utilization_percentage/worker_{w}",
            f"system/system_memory_usage_megabytes/worker_{w}",
        } <= keys

    def series(name, w):
        return [value for _, value in history(client, on_run, f"system/{name}", worker=w, flush=False)]

    cores = psutil.cpu_count() / 100  # percent of the node -> cores
    burner, sleeper = series("cpu_utilization_percentage", 0), series("cpu_utilization_percentage", 1)
    assert len(burner) >= 3 and len(sleeper) >= 3, (burner, sleeper)
    assert statistics.median(burner) * cores >= 0.1, burner  # busy: a good part of a core
    assert statistics.median(sleeper) * cores <= 0.05, sleeper  # asleep
    memory_0, memory_1 = series("system_memory_usage_megabytes", 0), series("system_memory_usage_megabytes", 1)
    assert max(memory_1) - max(memory_0) >= 250, (memory_0, memory_1)
