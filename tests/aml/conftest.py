"""The Azure link against a fake Azure (tests/fakes/azure.py: Azure AD, ARM and an AML-shaped
MLflow endpoint over TLS on 127.0.0.1) in front of a real ``mlflow server``, driven by the real
azure-identity, requests and MLflow clients."""

from __future__ import annotations

import json

import pytest
from fakes.azure import FakeAzure

SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
GROUP = "rg-ml"
NAME = "ws-ml"
SECRET = "sp-s3cr3t-9f2c1e"
AML_ID = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{NAME}"


@pytest.fixture(autouse=True)
def fresh_credentials(monkeypatch):
    """Each test starts without cached credentials or tokens."""
    from spark_tracking.azure import credentials, mlflow_auth

    credentials.reset()
    monkeypatch.setattr(mlflow_auth, "_auth", None)
    yield
    credentials.reset()


@pytest.fixture
def azure(tmp_path, mlflow_server, monkeypatch):
    with FakeAzure(tmp_path, mlflow_server.uri) as fake:
        for key, value in fake.env().items():
            monkeypatch.setenv(key, value)
        yield fake


@pytest.fixture
def principal(azure, monkeypatch):
    """A service principal with Reader on everything, in the environment as a cluster has it."""
    sp = azure.add_principal(secret=SECRET)
    azure.grant(sp)
    monkeypatch.setenv("AZURE_TENANT_ID", "72f988bf-0000-4000-8000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", sp.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    return sp


@pytest.fixture
def workspace(azure) -> str:
    return azure.add_aml_workspace(SUB, GROUP, NAME)


@pytest.fixture
def linked(azure, principal, workspace, monkeypatch):
    """A session linked to the fake AML workspace by SPARK_TRACKING_AML_WORKSPACE_ID."""
    monkeypatch.setenv("SPARK_TRACKING_AML_WORKSPACE_ID", workspace)
    return azure


def write_aml_config(folder, **overrides) -> str:
    data = {"subscription_id": SUB, "resource_group": GROUP, "workspace_name": NAME, **overrides}
    path = folder / "config.json"
    path.write_text(json.dumps(data))
    return str(path)


def arm_calls(azure) -> list[str]:
    return [path for server, _, path in azure.requests if server == "arm"]


def log_model_is_refused_before_sending(fake_aml) -> None:
    """``mlflow.pyfunc.log_model`` in the active run fails at once naming AML's missing
    logged-models API and the fix, and nothing reached that API (both routes to AML)."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    with pytest.raises(Exception) as info:
        mlflow.pyfunc.log_model(name="echo", python_model=Echo())
    message = str(info.value)
    assert "Azure ML's MLflow endpoint has no logged-models API, which log_model of MLflow " in message
    assert "Fix: log the model with MLflow < 2.17" in message
    assert "404" not in message
    assert not [p for server, _, p in fake_aml.requests if "logged-models" in p]  # refused before sending
