"""Never silently unconfigured: on a machine set up for spark_tracking (its config file, as the
init script writes it, or a Databricks Runtime) a session that is not configured says so at its
first run, and ``spark-tracking doctor`` fails, each with the cause and the fix."""

from __future__ import annotations

import json

import mlflow
import pytest

from spark_tracking import hook, session, state
from spark_tracking import status as session_check
from spark_tracking.cli import main

STARTUP_HOOK_OFF = (
    "the startup hook is not enabled in any folder on sys.path (spark_tracking_hook.pth)), although the config "
    "file {config} says this machine is set up for spark_tracking; MLflow logs to {uri}"
)


@pytest.fixture(autouse=True)
def fresh_session_state(monkeypatch):
    monkeypatch.setattr(state, "_last_failure", None)
    monkeypatch.setattr(session_check, "_warned_unconfigured", False)
    monkeypatch.setattr(state, "_choice", None)
    assert not hook.is_enabled()


@pytest.fixture
def set_up_machine(tmp_path, monkeypatch):
    """The config file the init script writes, naming a store."""
    store = f"sqlite:///{tmp_path}/central.db"
    config = tmp_path / "etc" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"tracking_uri": store}))
    monkeypatch.setenv("SPARK_TRACKING_CONFIG_FILE", str(config))
    return config, store


def test_the_first_run_of_an_unconfigured_session_on_a_set_up_machine_says_so_once(set_up_machine, tmp_path, capsys):
    config, _ = set_up_machine
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    mlflow.set_tracking_uri(elsewhere)
    with mlflow.start_run():
        pass
    err = capsys.readouterr().err
    assert (
        "spark_tracking: this session is not configured (" + STARTUP_HOOK_OFF.format(config=config, uri=elsewhere)
    ) in err
    assert (
        ". Fix: on a cluster the init script enables it: its log (/var/log/spark_tracking/init.log on the driver, "
        "or the cluster's init script logs) says why it did not; elsewhere: spark-tracking hook enable. Or call "
        "spark_tracking.configure() at the top of the notebook"
    ) in err
    with mlflow.start_run():
        pass
    assert "spark_tracking:" not in capsys.readouterr().err  # once per process


def test_a_configuration_error_is_named_at_the_first_run(set_up_machine, tmp_path, capsys):
    config, _ = set_up_machine
    config.write_text(json.dumps({"tracking_url": "sqlite:///typo.db"}))
    assert session.configure() is None
    capsys.readouterr()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/elsewhere.db")
    with mlflow.start_run():
        pass
    err = capsys.readouterr().err
    assert f"spark_tracking: this session is not configured (configure() failed: config file {config} has " in err
    assert "Fix: fix that setting, then run spark_tracking.configure() or restart the notebook's Python" in err


def test_nothing_is_said_where_nothing_is_set_up(tmp_path, capsys):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mine.db")
    with mlflow.start_run():
        pass
    assert "spark_tracking" not in capsys.readouterr().err


def test_a_configured_session_runs_quietly(set_up_machine, capsys):
    _, store = set_up_machine
    session.configure(strict=True)
    with mlflow.start_run() as run:
        pass
    assert "spark_tracking" not in capsys.readouterr().err
    assert mlflow.MlflowClient(store).get_run(run.info.run_id).info.run_id == run.info.run_id


def test_the_runtime_default_set_after_configure_is_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    store = f"sqlite:///{tmp_path}/central.db"
    session.configure(tracking_uri=store, strict=True)
    status = session_check.session_status("databricks")
    assert (status.level, status.detail, status.fix) == (
        "FAIL",
        f"MLflow's tracking URI is 'databricks', the Databricks Runtime's default, set after spark_tracking "
        f"configured this session for {store}",
        "run spark_tracking.configure() (it sets the session's store again)",
    )
    assert session_check.session_status(store).configured
    assert session_check.session_status("file:/elsewhere").level == "WARN"  # the user's own choice


def test_doctor_fails_when_the_current_session_is_not_configured(set_up_machine, capsys):
    """Before, doctor resolved the settings itself and passed: the session it runs in was never checked."""
    config, _ = set_up_machine
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    failed = "[FAIL] current session: this session is not configured ("
    assert failed + STARTUP_HOOK_OFF.format(config=config, uri=mlflow.get_tracking_uri()) in out
    assert "       fix: on a cluster the init script enables it: its log (/var/log/spark_tracking/init.log" in out


def test_doctor_passes_a_configured_session(set_up_machine, capsys):
    _, store = set_up_machine
    session.configure(strict=True)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"[PASS] current session: configured: runs go to {store} (tracking_uri from config file" in out
