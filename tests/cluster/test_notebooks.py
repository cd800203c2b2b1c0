"""The example notebooks, executed in a real Jupyter kernel on a simulated cluster node.

The node got spark_tracking from the real init script (startup hook + config file), the kernel
is that node's Python, Spark runs as local-cluster with executors on the same Python: so the
notebooks run exactly as on a configured cluster, with no tracking setup of their own.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from conftest import history

from .conftest import REPO, Node

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

SOURCES = sorted((REPO / "notebooks").glob("*.py"))
#: the examples; the others (``_setup``) are what they ``%run``
NOTEBOOKS = [p for p in SOURCES if not p.name.startswith("_")]
HEADER = "# Databricks notebook source\n"
SEPARATOR = re.compile(r"^# COMMAND -{10}\s*$", re.M)
RUN_SIBLING = re.compile(r"^%run \./(\w+)$")
#: Tracking setup the notebooks must not contain: the session hook does it.
SETUP_CODE = (
    "set_tracking_uri",
    "set_experiment",
    "configure(",
    "MLFLOW_TRACKING_URI",
    "azureml://",
    "get_token",
    "spark_tracking.hook",
)


def read_databricks_source(path) -> "nbformat.NotebookNode":
    """A Databricks source-format notebook (.py) as a Jupyter notebook. ``%run ./name`` (a
    notebook beside it, as on Databricks) becomes IPython's ``%run`` of that file's path."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER), f"{path} is not in Databricks source format"
    cells = []
    for chunk in SEPARATOR.split(text[len(HEADER) :]):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        lines = chunk.splitlines()
        if all(line.startswith("# MAGIC") for line in lines):
            body = [line[len("# MAGIC ") :] if line.startswith("# MAGIC ") else "" for line in lines]
            if body[0].startswith("%md"):
                cells.append(nbformat.v4.new_markdown_cell("\n".join([body[0][3:].strip()] + body[1:]).strip()))
                continue
            chunk = "\n".join(body)
            sibling = RUN_SIBLING.match(chunk)
            if sibling:
                chunk = f'%run "{path.parent / sibling.group(1)}.py"'
        cells.append(nbformat.v4.new_code_cell(chunk))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "sim-cluster", "display_name": "simulated cluster", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory, wheel, runtime_site):
    """A driver node configured by the init script, and a Jupyter kernel spec for its Python."""
    tmp = tmp_path_factory.mktemp("notebook-node")
    home = tmp / "home"
    home.mkdir()
    node = Node(tmp / "node", runtime_site, home)
    central = f"sqlite:///{tmp / 'central.db'}"
    out = node.run_init(SPARK_TRACKING_WHEEL=str(wheel), SPARK_TRACKING_TRACKING_URI=central)
    assert out.returncode == 0, out.stdout + out.stderr
    kernels = tmp / "jupyter" / "kernels" / "sim-cluster"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(node.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "simulated cluster",
                "language": "python",
            }
        )
    )
    return node, central, tmp / "jupyter"


def _execute(node: Node, jupyter_path, path, tmp_path, monkeypatch):
    nb = read_databricks_source(path)
    env = node.base_env()
    # what Jupyter tells a kernel about its notebook; spark_tracking names the experiment after it
    env.update(
        JUPYTER_PATH=str(jupyter_path),
        JPY_SESSION_NAME=str(path.with_suffix(".ipynb")),
        SPARK_MASTER="local-cluster[2,1,1024]",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # where this process finds the kernel spec
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="sim-cluster")
    client.execute(env=env, cwd=str(tmp_path))
    return nb


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_notebooks_are_databricks_source_without_tracking_setup(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER)
    assert not [s for s in SETUP_CODE if s in text]
    assert read_databricks_source(path).cells


def test_the_notebooks_run_auto_configured_and_produce_their_runs(cluster_node, tmp_path, monkeypatch):
    import mlflow

    node, central, jupyter_path = cluster_node
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_check_the_link.py",
        "02_distributed_training.py",
        "03_compare_runs.py",
        "04_vocabulary.py",
        "05_live_view.py",
    ]  # 05 runs in tests/live/test_live_notebook.py

    check = _text(_execute(node, jupyter_path, NOTEBOOKS[0], tmp_path, monkeypatch))
    assert f"tracking URI: {central}" in check
    assert "experiment:   01_check_the_link" in check
    assert "stored in experiment '01_check_the_link' (FINISHED)" in check

    training = _execute(node, jupyter_path, NOTEBOOKS[1], tmp_path, monkeypatch)
    client = mlflow.MlflowClient(central)
    experiment = client.get_experiment_by_name("02_distributed_training")
    assert experiment is not None, _text(training)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["mlflow.runName"] for r in runs) == [
        "distributed-training lr=0.02",
        "distributed-training lr=0.05",
    ]
    for run in runs:
        metrics = run.data.metrics
        workers = sorted(k for k in metrics if k.startswith("loss/worker_"))
        assert workers == [f"loss/worker_{i}" for i in range(4)], sorted(metrics)
        for key in workers + ["loss"]:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(40)), (key, steps)
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 4

    compare = _execute(node, jupyter_path, NOTEBOOKS[2], tmp_path, monkeypatch)
    assert _images(compare) == 2
    assert "best run:" in _text(compare) and "loss/worker_3" in _text(compare)


def _artifact_files(client, run_id, path=None) -> list[str]:
    files = []
    for entry in client.list_artifacts(run_id, path):
        files += _artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return sorted(files)


def _artifact(client, run_id, path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def test_the_vocabulary_notebook_logs_from_driver_and_tasks_and_shows_the_run(cluster_node, tmp_path, monkeypatch):
    import mlflow
    from PIL import Image

    node, central, jupyter_path = cluster_node
    (path,) = [p for p in NOTEBOOKS if p.name == "04_vocabulary.py"]
    nb = _execute(node, jupyter_path, path, tmp_path, monkeypatch)
    text = _text(nb)

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # this process's downloads below
    client = mlflow.MlflowClient(central)
    experiment = client.get_experiment_by_name("04_vocabulary")
    assert experiment is not None, text
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert (run.info.run_name, run.info.status) == ("vocabulary tour", "FINISHED")

    # metrics: the driver's series, and the loss of each of the 4 tasks plus their mean, step by step
    workers = [f"loss/worker_{w}" for w in range(4)]
    assert sorted(run.data.metrics) == sorted(["accuracy", "learning_rate", "loss", *workers])

    def series(key):
        return history(client, run_id, key, flush=False)

    assert series("accuracy") == list(enumerate([0.62, 0.71, 0.78, 0.82, 0.85]))
    assert [s for s, _ in series("learning_rate")] == list(range(5))
    per_worker = {key: series(key) for key in workers}
    for key, points in per_worker.items():
        assert [s for s, _ in points] == list(range(6)), (key, points)
    mean = series("loss")
    assert [s for s, _ in mean] == list(range(6)), mean
    for step, value in mean:
        assert value == pytest.approx(sum(per_worker[k][step][1] for k in workers) / 4), (step, mean)

    # texts and tags
    assert json.loads(run.data.tags["aml.text.model"]) == ["logistic regression"]
    assert run.data.tags["dataset"] == "synthetic"

    # artifacts: the driver's tables and image, one table part and one image per task, the uploaded file
    files = _artifact_files(client, run_id)
    stages = {m.group(1) for f in files for m in [re.search(r"/stage_(\d+)/", f)] if m}
    assert len(stages) == 1, files  # one Spark job, one stage
    stage = stages.pop()
    assert files == sorted(
        [
            "aml/images/accuracy_curve.png",
            *[f"aml/images/worker_loss/stage_{stage}/worker_{w}.png" for w in range(4)],
            "aml/tables/epochs.json",
            *[f"aml/tables/per_worker/stage_{stage}/worker_{w}.json" for w in range(4)],
            "aml/tables/predictions.json",
            "outputs/settings.json",
        ]
    )
    assert json.loads(_artifact(client, run_id, "aml/tables/epochs.json")) == {
        "columns": ["epoch", "accuracy"],
        "data": [[e, a] for e, a in enumerate([0.62, 0.71, 0.78, 0.82, 0.85])],
    }
    predictions = json.loads(_artifact(client, run_id, "aml/tables/predictions.json"))
    assert predictions["columns"] == ["label", "predicted", "confidence"] and len(predictions["data"]) == 4
    for w in range(4):
        part = json.loads(_artifact(client, run_id, f"aml/tables/per_worker/stage_{stage}/worker_{w}.json"))
        assert part["columns"] == ["worker", "final_loss"] and [row[0] for row in part["data"]] == [w]
        assert _artifact(client, run_id, f"aml/images/worker_loss/stage_{stage}/worker_{w}.png").startswith(
            b"\x89PNG\r\n\x1a\n"
        )
    assert _artifact(client, run_id, "aml/images/accuracy_curve.png").startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads(_artifact(client, run_id, "outputs/settings.json"))["epochs"] == 5
    logged = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "aml/tables/epochs.json", "type": "table"} in logged

    # the notebook's output: get_metrics() in AML's shape, the file list, the `show` report and plot
    assert "'accuracy': [0.62, 0.71, 0.78, 0.82, 0.85]" in text
    assert "'model': 'logistic regression'" in text
    assert "'per_worker': {'worker': [0, 1, 2, 3]" in text
    assert "outputs/settings.json" in text
    assert f"run {run_id}  name vocabulary tour  status FINISHED  experiment 04_vocabulary" in text
    assert re.search(r"^metric +worker +last +min +max +count$", text, re.M), text
    assert re.search(r"^loss +mean( +\S+){3} +6$", text, re.M), text
    assert re.search(r"^ +3( +\S+){3} +6$", text, re.M), text  # worker 3's row of loss
    assert re.search(r"^  model +logistic regression$", text, re.M), text
    assert re.search(r"^  per_worker +4 rows: worker, final_loss$", text, re.M), text
    plot = re.search(r"^plot: (\S+\.png) \((\d+) panels\)$", text, re.M)
    assert plot and plot.group(2) == "3", text
    with Image.open(plot.group(1)) as image:
        assert image.format == "PNG"
        assert image.size == (2 * 640, 2 * 400)  # 3 panels, two per row
        assert image.info.get("Description") == "spark-tracking show: 3 panels: accuracy, learning_rate, loss"
    assert _images(nb) == 2  # the driver's accuracy figure and the --plot PNG


def test_notebook_01_stops_with_the_cause_and_the_fix_in_an_unconfigured_session(tmp_path, monkeypatch):
    """A node where the init script wrote the config file but left the hook off (a misconfiguration):
    the notebook's first cell says the session is not configured, why, and what to do."""
    from fakes.databricks_runtime import NotebookEnvironment, cluster_site_packages

    cluster_site = cluster_site_packages(tmp_path / "site-packages", hook_enabled=False)
    notebook_env = NotebookEnvironment(tmp_path / "pythonEnv-1", cluster_site, "pth")
    config = tmp_path / "etc" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"tracking_uri": f"sqlite:///{tmp_path / 'central.db'}"}))
    kernels = tmp_path / "jupyter" / "kernels" / "sim-cluster"
    kernels.mkdir(parents=True)
    argv = [notebook_env.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernels / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "sim", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("SPARK_TRACKING_CONFIG_FILE", str(config))
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    nb = read_databricks_source(NOTEBOOKS[0])
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failed:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="sim-cluster").execute(cwd=str(tmp_path))
    message = str(failed.value)
    assert (
        "spark_tracking: this session is not configured (the startup hook is not enabled in any folder on "
        f"sys.path (spark_tracking_hook.pth)), although the config file {config} says this machine is set up"
    ) in message
    assert "Fix: on a cluster the init script enables it: its log (/var/log/spark_tracking/init.log" in message
