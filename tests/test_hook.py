"""The startup hook in real subprocesses of this environment."""

import os
import subprocess
import sys

import pytest
from fakes.python_env import BareEnvironment

from spark_tracking import hook

PRINT_URI = "import os; print(os.environ.get('MLFLOW_TRACKING_URI'))"


@pytest.fixture
def hook_enabled():
    path, _ = hook.enable()
    yield path
    hook.disable()


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_a_fresh_python_is_auto_configured(hook_enabled):
    out = _python(PRINT_URI + "; import mlflow; print(mlflow.get_tracking_uri())")
    expected = "sqlite:///" + os.path.expanduser("~/.spark_tracking/mlflow.db")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, expected]


def test_without_the_hook_nothing_happens():
    hook.disable()
    assert _python(PRINT_URI).stdout.strip() == "None"


def test_disabled_turns_the_hook_off(hook_enabled):
    assert _python(PRINT_URI, SPARK_TRACKING_DISABLED="1").stdout.strip() == "None"


def test_a_broken_config_does_not_break_the_process(hook_enabled, tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    out = _python("print('still alive')", SPARK_TRACKING_CONFIG_FILE=str(bad))
    assert (out.returncode, out.stdout.strip()) == (0, "still alive")
    out = _python(PRINT_URI, SPARK_TRACKING_CONFIG_FILE=str(bad))
    assert out.stdout.strip() == "None"


def test_enable_disable_are_idempotent_from_the_command_line():
    cli = [sys.executable, "-m", "spark_tracking.cli", "hook"]
    try:
        first = subprocess.run(cli + ["enable"], capture_output=True, text=True, check=True).stdout
        second = subprocess.run(cli + ["enable"], capture_output=True, text=True, check=True).stdout
        assert first == f"hook enabled: {hook.pth_path()}\n"
        assert second == f"hook enabled: {hook.pth_path()} (no change)\n"
        assert open(hook.pth_path()).read() == hook.PTH_LINE
    finally:
        subprocess.run(cli + ["disable"], check=True, capture_output=True)
    assert not os.path.exists(hook.pth_path())
    again = subprocess.run(cli + ["disable"], capture_output=True, text=True, check=True).stdout
    assert again == f"hook disabled: {hook.pth_path()} (no change)\n"


def test_the_hook_imports_nothing_heavy(hook_enabled):
    heavy = ("mlflow", "pyspark", "azure.identity", "requests", "databricks.sdk", "spark_tracking.azure.resources")
    out = _python(f"import sys; print([m for m in {heavy!r} if m in sys.modules])")
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr


def test_at_interpreter_start_the_hook_imports_only_its_own_modules(tmp_path):
    """In an environment holding spark_tracking as a wheel install does (no editable finder that
    imports half the standard library first), the hook adds only spark_tracking's modules to
    interpreter start, configures the session, and so costs what benchmarks/hook_cost.py measures."""
    env = BareEnvironment(str(tmp_path / "venv"))
    probe = "import os, sys; print(os.environ.get('MLFLOW_TRACKING_URI')); print(*sorted(sys.modules))"
    without = env.run(probe).stdout.split()
    env.hook(True)
    with_hook = env.run(probe)
    assert with_hook.returncode == 0, with_hook.stderr
    uri, *modules = with_hook.stdout.split()
    assert uri == env.embedded_store_uri()
    added = sorted(set(modules) - set(without[1:]))
    assert [m for m in added if not m.startswith("spark_tracking")] == ["__future__"]  # its annotations
    assert "spark_tracking.session" in added


def test_on_a_linked_node_the_hook_reads_the_link_with_no_heavy_import(tmp_path):
    """A node the installer linked (config file + the link in the node's cache): the hook sets the
    AML endpoint with no import of json, re, typing or urllib (the C scanner behind json reads
    the files)."""
    env = BareEnvironment(str(tmp_path / "venv"))
    aml = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
    env.link_node(aml, f"https://westeurope.api.azureml.ms/mlflow/v2.0{aml}")
    probe = "import os, sys; print(os.environ.get('MLFLOW_TRACKING_URI')); print(*sorted(sys.modules))"
    without = env.run(probe).stdout.split()
    env.hook(True)
    with_hook = env.run(probe)
    uri, *modules = with_hook.stdout.split()
    assert uri == f"https://westeurope.api.azureml.ms/mlflow/v2.0{aml}", with_hook.stderr
    added = sorted(set(modules) - set(without[1:]))
    assert [m for m in added if not m.startswith("spark_tracking")] == ["__future__", "_json"]


def test_the_hook_adds_no_standard_library_import(hook_enabled):
    """Interpreter start pays only for spark_tracking's own modules: no typing, threading, json or
    network client (benchmarks/hook_cost.py measures the time)."""
    probe = "import sys; print(sorted(m for m in ('typing', 'threading', 'json', 'socket', 'ssl') if m in sys.modules))"
    without = _python(probe, SPARK_TRACKING_DISABLED="1")
    with_hook = _python(probe)
    assert with_hook.returncode == 0, with_hook.stderr
    assert with_hook.stdout == without.stdout
