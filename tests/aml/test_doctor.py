"""``spark-tracking link`` and ``spark-tracking doctor``: what they print and record, and that
no secret reaches their output or files."""

from __future__ import annotations

import json
import re

import mlflow
import pytest

import spark_tracking
from spark_tracking.azure.doctor import doctor
from spark_tracking.azure.store import for_uri
from spark_tracking.cli import main

from .conftest import SECRET, arm_calls


def test_link_records_the_link_and_later_sessions_use_it_without_arm(
    azure, principal, workspace, tmp_path, monkeypatch, capsys
):
    config_file = tmp_path / "etc" / "config.json"
    assert main(["link", "--workspace-id", workspace, "--config-file", str(config_file)]) == 0
    out = capsys.readouterr().out
    uri = f"{azure.aml.url}/mlflow/v2.0{workspace}"
    assert out.splitlines() == [
        f"AML workspace: {workspace} (westeurope, AzureCloud)",
        "found from:    aml_workspace_id (argument)",
        f"tracking URI:  {uri}",
        f"recorded in:   {config_file}",
    ]
    assert json.loads(config_file.read_text()) == {
        "aml_workspace_id": workspace,
        "azure_cloud": "AzureCloud",
        "tracking_uri": uri,
    }
    calls = len(arm_calls(azure))
    cache = tmp_path / "home" / ".spark_tracking" / "aml-link.json"
    for written in (config_file, cache):
        if written.exists():
            assert SECRET not in written.read_text() and "eyJ" not in written.read_text()  # no secret, no JWT
    monkeypatch.setenv("SPARK_TRACKING_CONFIG_FILE", str(config_file))
    spark_tracking.configure(strict=True)
    with mlflow.start_run():
        mlflow.log_metric("m", 1.0)
    assert mlflow.get_tracking_uri() == for_uri(uri).uri  # through azureml-mlflow's store where it is installed
    assert len(arm_calls(azure)) == calls and azure.rejected == []


def test_link_without_a_source_says_what_to_set(capsys):
    assert main(["link", "--dry-run"]) == 1
    assert capsys.readouterr().err.startswith(
        "error: no Azure ML workspace is named: set SPARK_TRACKING_AML_WORKSPACE_ID"
    )


def _doctor_lines(**settings) -> list[str]:
    lines: list[str] = []
    doctor(emit=lambda text: lines.extend(text.splitlines()), **settings)
    return lines


def _statuses(lines) -> list[str]:
    return [m.group(1) + " " + m.group(2) for line in lines if (m := re.match(r"\[(\w+)\] ([\w ]+):", line))]


def test_doctor_passes_every_step_against_a_working_link(azure, principal, workspace, spark, capsys, monkeypatch):
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    lines: list[str] = []
    assert doctor(spark, emit=lambda text: lines.extend(text.splitlines())) is True
    assert _statuses(lines) == [
        "PASS configuration",
        "PASS source",
        "PASS token",
        "PASS link",
        "PASS store",
        "PASS probe run",
        "WARN artifacts",
        "PASS workers",
    ]
    assert "AZURE_CLIENT_SECRET=***" in lines[0]
    assert lines[1] == ("[PASS] source: AML workspace named by aml_workspace_id (env SPARK_TRACKING_AML_WORKSPACE_ID)")
    assert f"token for https://management.azure.com/.default (the identity appid={principal.client_id}" in lines[2]
    assert lines[3] == (
        f"[PASS] link: AML workspace {workspace} in westeurope (AzureCloud); tracking URI "
        f"{azure.aml.url}/mlflow/v2.0{workspace}"
    )
    assert lines[-1] == "[PASS] workers: 2 Spark tasks resolve the same configuration"
    assert SECRET not in "\n".join(lines)


def test_doctor_names_the_missing_permission_on_the_store(azure, principal, workspace):
    azure.aml_forbidden.add(principal.object_id)
    lines = _doctor_lines(aml_workspace_id=workspace)
    assert _statuses(lines) == [
        "PASS configuration",
        "PASS source",
        "PASS token",
        "PASS link",
        "FAIL store",
        "SKIP probe run",
        "WARN artifacts",
    ]
    failed = lines.index(next(line for line in lines if line.startswith("[FAIL] store")))
    assert "PERMISSION_DENIED" in lines[failed]
    assert lines[failed + 1] == (
        "       fix: grant the identity the 'AzureML Data Scientist' role (or Contributor) "
        "on the AML workspace: it needs Microsoft.MachineLearningServices/workspaces/"
        "experiments/* and workspaces/jobs/* actions"
    )


def test_doctor_reports_a_credential_failure_with_each_fix(azure, principal, workspace, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong")
    lines = _doctor_lines(aml_workspace_id=workspace, azure_credential="service_principal")
    assert _statuses(lines) == [
        "PASS configuration",
        "PASS source",
        "FAIL token",
        "SKIP link",
        "SKIP store",
        "SKIP probe run",
        "WARN artifacts",
    ]
    text = "\n".join(lines)
    assert "AADSTS7000215: Invalid client secret provided." in text
    fix = lines.index("       fix: Sources tried (only this one) and how to make each work:")
    assert lines[fix + 1].startswith("              - service principal from the environment: set AZURE_TENANT_ID, ")
    assert "=wrong" not in text and "'wrong'" not in text


def test_doctor_reports_a_wrong_workspace_with_the_fix(azure, principal, workspace):
    lines = _doctor_lines(aml_workspace_id=workspace + "-typo")
    assert _statuses(lines) == [
        "PASS configuration",
        "PASS source",
        "PASS token",
        "FAIL link",
        "SKIP store",
        "SKIP probe run",
        "WARN artifacts",
    ]
    assert lines[3].startswith(f"[FAIL] link: Azure ML workspace {workspace}-typo was not found (HTTP 404")
    assert lines[4].startswith("       fix: Check the workspace id from aml_workspace_id (argument)")


def test_doctor_without_a_link_points_at_the_embedded_store(capsys):
    lines = _doctor_lines()
    assert _statuses(lines) == ["PASS configuration", "WARN source", "PASS store", "PASS probe run"]


def test_no_secret_or_token_reaches_logs_output_or_files(
    azure, principal, workspace, spark, tmp_path, caplog, capsys, monkeypatch
):
    import logging
    import os

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    spark_tracking.configure(strict=True)
    with mlflow.start_run():
        mlflow.log_metric("loss", 0.5)
        spark.sparkContext.parallelize(range(2), 2).map(lambda x: mlflow.log_metric("task", x)).collect()
    spark_tracking.flush()
    assert main(["doctor"]) == 0
    assert main(["link", "--config-file", str(tmp_path / "linked.json")]) == 0
    assert main(["settings", "--resolved"]) == 0
    written = "".join(
        open(os.path.join(root, f), errors="replace").read()
        for root, _, files in os.walk(tmp_path / "home")
        for f in files
    )
    written += (tmp_path / "linked.json").read_text()
    seen = {
        "logs": caplog.text,
        "output": "".join(capsys.readouterr()),
        "files": written,
        "environment": "\n".join(f"{k}={v}" for k, v in os.environ.items() if k != "AZURE_CLIENT_SECRET"),
    }
    assert azure.issued
    for where, text in seen.items():
        for secret in [SECRET, *azure.issued]:
            assert secret not in text, f"a secret or token reached the {where}"


def test_doctor_probes_the_route_sessions_use_and_fails_where_they_would(
    azure, principal, workspace, tmp_path, monkeypatch
):
    """An azureml-mlflow that is installed but cannot be imported (e.g. a version that does not
    support the runtime's MLflow): sessions go through its store, as they do whenever its package
    is on the path, and fail at their first run; the doctor, probing the same route, fails too,
    with the fix (it probed the https route and passed before)."""
    import sys

    package = tmp_path / "site" / "azureml"
    (package / "mlflow").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mlflow" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'RunOperations' from 'mlflow.utils.async_logging'\")\n"
    )
    for name in [m for m in sys.modules if m == "azureml" or m.startswith("azureml.")]:
        monkeypatch.delitem(sys.modules, name)  # a real azureml-mlflow already imported (restored after)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)

    spark_tracking.configure(strict=True)
    with pytest.raises(ImportError) as info:
        mlflow.start_run()  # what a session meets
    assert str(info.value).startswith(
        "cannot import name 'RunOperations' from 'mlflow.utils.async_logging'\nFix: azureml-mlflow is installed "
        "but cannot be imported here, and sessions go through it while it is installed: reinstall it"
    )

    lines: list[str] = []
    assert doctor(emit=lambda text: lines.extend(text.splitlines())) is False
    assert _statuses(lines) == [
        "PASS configuration",
        "PASS current session",
        "PASS source",
        "PASS token",
        "PASS link",
        "FAIL store",
        "SKIP probe run",
        "SKIP artifacts",
    ]
    failed = lines.index(next(line for line in lines if line.startswith("[FAIL] store")))
    host = azure.aml.url.split("://", 1)[1]
    assert lines[failed] == (
        f"[FAIL] store: spark-tracking-aml://azureml/{host}/mlflow/v2.0{workspace} (through azureml-mlflow's "
        "azureml:// store, as sessions do) did not answer: ImportError: cannot import name 'RunOperations' from "
        "'mlflow.utils.async_logging'"
    )
    assert lines[failed + 1].startswith(
        "       fix: azureml-mlflow is installed but cannot be imported here, and sessions go through it"
    )
