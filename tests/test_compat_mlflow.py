"""Each MLflow private spark_tracking touches, exercised on the installed MLflow
(spark_tracking/_compat/mlflow.py names the versions each was checked on)."""

import mlflow

from spark_tracking._compat import mlflow as compat


def test_active_run_stack_is_the_list_mlflow_pushes_and_pops(sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    stack = compat.active_run_stack()
    assert stack == []
    with mlflow.start_run() as run:
        assert stack[-1].info.run_id == run.info.run_id  # the same list object, updated in place
    assert stack == []


def test_default_experiment_id_follows_set_experiment(sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    assert compat.default_experiment_id() == "0"
    experiment = mlflow.set_experiment("compat-check")
    assert compat.default_experiment_id() == experiment.experiment_id


def test_tracking_store_and_rest_route(mlflow_server, sqlite_uri):
    rest = compat.tracking_store(mlflow.MlflowClient(mlflow_server.uri))
    assert compat.rest_log_batch_route(rest) == ("/api/2.0/mlflow/runs/log-batch", "POST")
    local = compat.tracking_store(mlflow.MlflowClient(sqlite_uri))
    assert local is not None and compat.rest_log_batch_route(local) is None
    run = mlflow.MlflowClient(mlflow_server.uri).create_run("0").info.run_id
    response = compat.rest_request(
        rest,
        "/api/2.0/mlflow/runs/log-batch",
        "POST",
        30,
        {"run_id": run, "metrics": [{"key": "k", "value": 1.5, "timestamp": 1, "step": 0}]},
    )
    assert response.status_code == 200
    assert [m.value for m in mlflow.MlflowClient(mlflow_server.uri).get_metric_history(run, "k")] == [1.5]


def test_import_finished_is_false_only_while_mlflow_imports(tmp_path):
    """MLflow loads plugins' entry points from inside ``import mlflow`` (the run-context registry
    imported by ``mlflow.tracking.fluent``): code running then sees the import unfinished."""
    import subprocess
    import sys

    assert compat.import_finished()
    (tmp_path / "watch_import.py").write_text(
        "import sys\n"
        "from spark_tracking._compat import mlflow as compat\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mlflow.tracking.context.registry':\n"
        "            print('during', compat.import_finished())\n"
        "sys.meta_path.insert(0, Finder())\n"
    )
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import watch_import, mlflow; "
        "print(watch_import.compat.import_finished())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["during", "False", "True"]


def test_the_default_store_is_the_one_mlflow_uses_when_nothing_is_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = compat.default_tracking_uri()
    assert uri.startswith(("sqlite:", "file:", "mlruns")), uri
    store = compat.cached_store(uri)
    assert store is compat.cached_store(uri)  # MLflow's own, built once per URI
    assert store.get_experiment("0").name == "Default"
