"""configure(): tracking URI, experiment, context tags — with plain MLflow calls."""

import os
import subprocess
import sys

import mlflow
import pytest

import spark_tracking
from spark_tracking import context


def test_configure_points_mlflow_at_the_embedded_store():
    cfg = spark_tracking.configure()
    expected = "sqlite:///" + os.path.expanduser("~/.spark_tracking/mlflow.db")
    assert cfg.effective_tracking_uri == expected
    assert mlflow.get_tracking_uri() == expected
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.5)
    assert mlflow.MlflowClient(expected).get_run(run.info.run_id).data.metrics == {"m": 1.5}
    assert os.path.isdir(os.path.expanduser("~/.spark_tracking"))


def test_the_embedded_store_keeps_artifacts_in_home_and_leaves_host_artifact_uris_loadable(tmp_path):
    """Artifacts of the embedded store go to <home>/artifacts on every MLflow (not ./mlruns), and
    the session never makes the process look like a tracking server's to MLflow 3.17.2's artifact
    host policy, which then refuses every host-addressed artifact URI (a model in ADLS)."""
    spark_tracking.configure()
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    home = os.path.expanduser("~/.spark_tracking")
    assert run.info.artifact_uri.startswith(os.path.join(home, "artifacts"))
    assert os.path.isfile(os.path.join(run.info.artifact_uri, "note.txt"))
    assert not os.path.exists(tmp_path / "mlruns")  # the working directory (clean_env chdir)
    assert "_MLFLOW_SERVER_ARTIFACT_ROOT" not in os.environ
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository("https://models.example.com/m1")  # built, not refused (nothing is fetched)


def test_a_user_set_mlflow_tracking_uri_is_left_alone(monkeypatch, sqlite_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    spark_tracking.configure()
    assert mlflow.get_tracking_uri() == sqlite_uri


def test_configure_is_idempotent_and_follows_changes(monkeypatch, sqlite_uri):
    first = spark_tracking.configure()
    again = spark_tracking.configure()
    assert first.effective_tracking_uri == again.effective_tracking_uri == mlflow.get_tracking_uri()
    spark_tracking.configure(tracking_uri=sqlite_uri)
    assert mlflow.get_tracking_uri() == sqlite_uri


def test_disabled_does_nothing(monkeypatch):
    monkeypatch.setenv("SPARK_TRACKING_DISABLED", "1")
    assert spark_tracking.configure() is None
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_bad_config_never_raises_unless_strict(monkeypatch, caplog):
    monkeypatch.setenv("SPARK_TRACKING_RATE_LIMIT", "fast")
    assert spark_tracking.configure() is None
    assert "tracking left unconfigured: rate_limit='fast' from env SPARK_TRACKING_RATE_LIMIT" in caplog.text
    with pytest.raises(ValueError, match="rate_limit='fast'"):
        spark_tracking.configure(strict=True)


def test_experiment_from_a_databricks_notebook_path():
    ctx = context.RunContext(notebook_path="/Users/ana@contoso.com/churn/train", cluster_id="0101-abc")
    assert context.experiment_name_for(ctx) == "/Users/ana@contoso.com/churn/train"


def test_experiment_from_a_jupyter_notebook(monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/ana/work/churn-model.ipynb")
    assert context.experiment_name_for(context.detect()) == "churn-model"


def test_experiment_from_a_script_and_override(tmp_path):
    script = tmp_path / "train_churn.py"
    script.write_text(
        "import spark_tracking, os\nspark_tracking.configure()\nprint(os.environ['MLFLOW_EXPERIMENT_NAME'])\n"
    )
    env = dict(os.environ)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "train_churn"
    env["SPARK_TRACKING_EXPERIMENT_NAME"] = "shared-exp"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "shared-exp"


def test_runs_get_context_tags_with_plain_start_run(monkeypatch, spark_local):
    monkeypatch.setenv("DB_CLUSTER_ID", "0101-123456-abc")
    monkeypatch.setenv("DATABRICKS_HOST", "adb-123.4.azuredatabricks.net")
    monkeypatch.setenv("SPARK_TRACKING_NOTEBOOK_PATH", "/Users/ana@contoso.com/churn/train")
    spark_tracking.configure()
    with mlflow.start_run() as run:
        pass
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow.databricks.clusterID"] == "0101-123456-abc"
    assert tags["mlflow.databricks.notebookPath"] == "/Users/ana@contoso.com/churn/train"
    assert tags["mlflow.databricks.webappURL"] == "https://adb-123.4.azuredatabricks.net"
    assert tags["spark_tracking.spark_app_id"] == spark_local.sparkContext.applicationId
    assert tags["spark_tracking.version"] == spark_tracking.__version__
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == "/Users/ana@contoso.com/churn/train"


@pytest.fixture
def spark_local(spark):
    return spark
