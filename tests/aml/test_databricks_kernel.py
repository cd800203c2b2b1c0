"""A simulated Databricks notebook: a Jupyter kernel (run by nbclient) started the way the
runtime starts it, with what the runtime sets (docs/platform.md): ``DATABRICKS_RUNTIME_VERSION``,
``MLFLOW_TRACKING_URI=databricks``, a kernel launcher standing in for
``/databricks/python_shell/scripts/db_ipykernel_launcher.py``, and a dbutils notebook context
that appears only once the kernel is up (after interpreter start, where the startup hook runs).
The cluster is linked to the (fake) AML workspace; plain MLflow code in the notebook must log
there, into an experiment named after the notebook, AML-safe.

Two kernels: today's (the kernel runs the interpreter whose site-packages hold the hook's
``.pth``), and the notebook's own environment as Databricks runs it (tests/fakes/
databricks_runtime.py): an interpreter that reaches the cluster's site-packages by a path line
or ``PYTHONPATH``, so the hook's ``.pth`` never runs there."""

from __future__ import annotations

import json
import sys

import mlflow
import nbformat
import pytest
from fakes.databricks_runtime import NotebookEnvironment, cluster_site_packages
from nbclient import NotebookClient

from aml.conftest import write_aml_config
from spark_tracking import hook

NOTEBOOK = "/Users/ana@contoso.com/churn/train"
NOTEBOOK_ID = "4242424242"

LAUNCHER = '''
"""Stands in for db_ipykernel_launcher.py: the kernel first, then dbutils in its namespace."""
import json
import sys

from ipykernel.kernelapp import IPKernelApp


class Option:  # a Scala Option as py4j shows it
    def __init__(self, value):
        self.value = value

    def isDefined(self):
        return self.value is not None

    def get(self):
        return self.value


class Map:
    def __init__(self, data):
        self.data = data

    def get(self, key):
        return Option(self.data.get(key))


class CommandContext:
    def __init__(self, path, notebook_id):
        self.extra = {"notebook_path": path, "notebook_id": notebook_id, "aclPathOfAclRoot": f"/workspace/{notebook_id}"}
        self.tag_map = {"user": "ana@contoso.com", "clusterId": "0101-123456-abcdefgh",
                        "browserHostName": "adb-1.2.azuredatabricks.net"}

    def toJson(self):
        return json.dumps({"extraContext": self.extra, "tags": self.tag_map})

    def notebookPath(self):
        return Option(self.extra["notebook_path"])

    def aclPathOfAclRoot(self):  # makes MLflow's own Databricks notebook provider answer, as on Databricks
        return Option(self.extra["aclPathOfAclRoot"])

    def tags(self):
        return Map(self.tag_map)

    def extraContext(self):
        return Map(self.extra)

    def __getattr__(self, name):  # any other accessor of the JVM context: not set
        return lambda *args: Option(None)


class Dbutils:
    def __init__(self, context):
        notebook = type("Notebook", (), {"getContext": lambda _self: context})()
        java = type("JavaDbutils", (), {"notebook": lambda _self: notebook})()
        entry_point = type("EntryPoint", (), {"getDbutils": lambda _self: java})()
        self.notebook = type("NotebookUtils", (), {"entry_point": entry_point})()
        self.entry_point = entry_point  # the py4j gateway entry point, also on dbutils itself


path, notebook_id = sys.argv.pop(1), sys.argv.pop(1)
app = IPKernelApp.instance()
app.initialize(sys.argv[1:])
app.shell.user_ns["dbutils"] = Dbutils(CommandContext(path, notebook_id))  # only now, as on Databricks
app.start()
'''

CELL = """
import os, mlflow
print("at the first cell:", os.environ.get("MLFLOW_EXPERIMENT_NAME"))
with mlflow.start_run() as run:
    mlflow.log_param("lr", "0.01")
    mlflow.log_metric("loss", 0.5, step=1)
print("RESULT", run.info.run_id, mlflow.get_tracking_uri())
with mlflow.start_run() as again:
    pass
print("AGAIN", again.info.experiment_id == run.info.experiment_id)
"""


def kernelspec(folder, python: str, env: dict[str, str] | None = None) -> str:
    """A kernelspec whose argv is the simulated launcher run by ``python``, found through
    JUPYTER_PATH (set by the caller)."""
    launcher = folder / "db_ipykernel_launcher.py"
    launcher.write_text(LAUNCHER)
    spec = folder / "jupyter" / "kernels" / "databricks-sim"
    spec.mkdir(parents=True)
    spec_json = {
        "argv": [python, str(launcher), NOTEBOOK, NOTEBOOK_ID, "-f", "{connection_file}"],
        "display_name": "simulated Databricks",
        "language": "python",
    }
    if env:
        spec_json["env"] = env
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    return "databricks-sim"


@pytest.fixture
def databricks_kernel(tmp_path, monkeypatch):
    """Today's node: the kernel's interpreter has the hook's .pth in its own site-packages."""
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")  # the runtime's default
    hook.enable()
    yield kernelspec(tmp_path, sys.executable)
    hook.disable()


@pytest.fixture(params=["pth", "pythonpath"])
def notebook_environment_kernel(request, tmp_path, monkeypatch, workspace):
    """The notebook's own environment: the cluster's site-packages (the init script ran there:
    wheel, hook, config file) reached by a path line in a .pth, or by PYTHONPATH."""
    cluster_site = cluster_site_packages(tmp_path / "databricks-python3-site-packages")
    notebook = NotebookEnvironment(tmp_path / "pythonEnv-0a1b2c", cluster_site, request.param)
    etc = tmp_path / "etc" / "spark_tracking"
    etc.mkdir(parents=True)
    monkeypatch.setenv("SPARK_TRACKING_CONFIG_FILE", write_aml_config(etc))  # written by the init script
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")  # the runtime's default
    assert not hook.is_enabled()  # this test environment's own hook plays no part
    return kernelspec(tmp_path, notebook.python, notebook.env)


def run_notebook(kernel_name: str, cell: str = CELL) -> str:
    """Run ``cell`` in a fresh kernel; its stdout."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    NotebookClient(nb, kernel_name=kernel_name, timeout=240).execute()
    return "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")


def test_a_linked_databricks_notebook_logs_to_aml_with_its_notebook_experiment(
    azure, principal, workspace, mlflow_server, databricks_kernel, monkeypatch
):
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    text = run_notebook(databricks_kernel)
    assert "at the first cell: None" in text  # the path was not known at interpreter start
    assert_logged_to_aml(text, azure, workspace, mlflow_server)


def test_a_notebook_environment_without_pth_processing_logs_to_aml(
    azure, principal, workspace, mlflow_server, notebook_environment_kernel
):
    """The hook's .pth never runs in the notebook's interpreter; importing MLflow configures the
    session (MLflow loads spark_tracking's plugins), before the first run."""
    assert_logged_to_aml(run_notebook(notebook_environment_kernel), azure, workspace, mlflow_server)


def assert_logged_to_aml(text: str, azure, workspace: str, mlflow_server) -> None:
    run_id, uri = next(line.split()[1:] for line in text.splitlines() if line.startswith("RESULT"))
    assert uri == f"{azure.aml.url}/mlflow/v2.0{workspace}"  # the AML link, not the runtime's databricks
    assert "AGAIN True" in text  # the experiment is found again: an AML-safe name
    store = mlflow.MlflowClient(mlflow_server.uri)
    run = store.get_run(run_id)
    assert store.get_experiment(run.info.experiment_id).name == "train"
    assert run.data.params == {"lr": "0.01"}
    assert [(m.step, m.value) for m in store.get_metric_history(run_id, "loss")] == [(1, 0.5)]
    assert run.data.tags["mlflow.source.name"] == NOTEBOOK  # set after AML dropped it at creation
    assert run.data.tags["mlflow.databricks.notebookPath"] == NOTEBOOK
    assert azure.rejected == []
