"""Standard access mode: the notebook's path, user and job come from the Databricks REPL context
(``dbruntime.databricks_repl_context.get_context()``, read first as MLflow does), because py4j
calls to the notebook context are refused there (``Py4JSecurityException``) and there is no
SparkContext (docs/platform.md). The fakes: a ``dbruntime`` module on ``sys.path`` and a dbutils whose
every JVM call is refused."""

from __future__ import annotations

import sys

import pytest

from spark_tracking import context, session

REPL_CONTEXT = """
class _Context:
    notebookPath = "/Users/ana@contoso.com/churn/train"
    notebookId = "4242"
    user = "ana@contoso.com"
    clusterId = "0101-123456-abcdefgh"
    jobId = "734"
    idInJob = "991"
    browserHostName = "adb-1.2.azuredatabricks.net"
    isInJob = True


def get_context():
    return _Context()
"""


class Py4JSecurityException(Exception):
    """py4j's refusal of a method not on the allowlist (standard access mode)."""


class RefusingDbutils:
    """dbutils on standard access: every call into the JVM notebook context is refused."""

    class notebook:  # noqa: N801 - dbutils' own attribute name
        class entry_point:  # noqa: N801
            @staticmethod
            def getDbutils():  # noqa: N802
                raise Py4JSecurityException(
                    "Method public com.databricks.backend.common.rpc.CommandContext "
                    "com.databricks.dbutils_v1.NotebookUtils.getContext() is not whitelisted on class "
                    "class com.databricks.dbutils_v1.impl.NotebookUtilsImpl"
                )


def _install_repl_context_module(tmp_path, monkeypatch) -> None:
    """The runtime's ``dbruntime.databricks_repl_context`` (REPL_CONTEXT), importable."""
    package = tmp_path / "dbruntime"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "databricks_repl_context.py").write_text(REPL_CONTEXT)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def standard_access_notebook(tmp_path, monkeypatch):
    _install_repl_context_module(tmp_path, monkeypatch)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    monkeypatch.setattr(context, "_ipython_user_ns", lambda: {"dbutils": RefusingDbutils()})
    yield
    for name in ("dbruntime", "dbruntime.databricks_repl_context"):
        sys.modules.pop(name, None)


def test_the_notebook_context_comes_from_the_repl_context_when_py4j_is_refused(standard_access_notebook):
    ctx = context.detect()
    assert (ctx.notebook_path, ctx.user, ctx.cluster_id, ctx.job_id, ctx.job_run_id, ctx.databricks_host) == (
        "/Users/ana@contoso.com/churn/train",
        "ana@contoso.com",
        "0101-123456-abcdefgh",
        "734",
        "991",
        "https://adb-1.2.azuredatabricks.net",
    )
    tags = context.context_tags(ctx)
    assert tags["mlflow.source.name"] == tags["mlflow.databricks.notebookPath"] == "/Users/ana@contoso.com/churn/train"
    assert tags["mlflow.databricks.jobID"] == "734"
    assert context.job_cluster_reason(ctx) == "a Databricks job run (job id 734)"


def test_an_aml_session_names_the_experiment_by_the_notebook_not_a_users_path(standard_access_notebook):
    """Without the notebook path, MLflow's Databricks provider would name a /Users/... experiment,
    which AML cannot find again by name (azure-sdk-for-python#45209)."""
    session.configure(
        tracking_uri="azureml://westeurope.api.azureml.ms/mlflow/v2.0/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w",
        resolve_link=False,
    )
    assert session.default_experiment_name() == "train"


def test_outside_databricks_the_repl_context_is_not_looked_for(tmp_path, monkeypatch):
    from spark_tracking._compat.databricks_runtime import repl_context

    _install_repl_context_module(tmp_path, monkeypatch)
    assert repl_context() == {}
    sys.modules.pop("dbruntime", None)
