"""A simulated Databricks notebook: a Jupyter kernel (run by nbclient) started the way the
runtime starts it, with what the runtime sets (docs/platform.md): ``DATABRICKS_RUNTIME_VERSION``,
``MLFLOW_TRACKING_URI=databricks``, a kernel launcher standing in for
``/databricks/python_shell/scripts/db_ipykernel_launcher.py``, and a dbutils notebook context
that appears only once the kernel is up (after interpreter start, where the startup hook runs).
The cluster is linked to the (fake) AML workspace; plain MLflow code in the notebook must log
there, into an experiment named after the notebook, AML-safe."""

from __future__ import annotations

import json
import sys

import mlflow
import nbformat
import pytest
from nbclient import NotebookClient

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


@pytest.fixture
def databricks_kernel(tmp_path, monkeypatch):
    """A kernelspec whose argv is the simulated launcher, found through JUPYTER_PATH."""
    launcher = tmp_path / "db_ipykernel_launcher.py"
    launcher.write_text(LAUNCHER)
    spec = tmp_path / "jupyter" / "kernels" / "databricks-sim"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, str(launcher), NOTEBOOK, NOTEBOOK_ID, "-f", "{connection_file}"],
                "display_name": "simulated Databricks",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")  # the runtime's default
    hook.enable()
    yield "databricks-sim"
    hook.disable()


def test_a_linked_databricks_notebook_logs_to_aml_with_its_notebook_experiment(
    azure, principal, workspace, mlflow_server, databricks_kernel, monkeypatch
):
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    NotebookClient(nb, kernel_name=databricks_kernel, timeout=240).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    assert "at the first cell: None" in text  # the path was not known at interpreter start
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
