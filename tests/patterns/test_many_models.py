"""Many models with applyInPandas: one child run per group, each with its params, a metric
series, a text artifact and a model that loads back on the driver and predicts."""

from __future__ import annotations

import mlflow
import pandas as pd
from conftest import history

from .conftest import model_name_kwargs

GROUPS = ["a", "b", "c"]


def _data(spark):
    rows = [(g, float(x), float(x) * (i + 1) + 0.5) for i, g in enumerate(GROUPS) for x in range(20)]
    return spark.createDataFrame(rows, "group string, x double, y double")


def test_many_models_with_apply_in_pandas(spark, store):
    name_kwargs = model_name_kwargs("model")

    def train_model(pdf: pd.DataFrame) -> pd.DataFrame:
        import mlflow
        from sklearn.linear_model import LinearRegression

        group = pdf["group"].iloc[0]
        with mlflow.start_run(run_name=f"group-{group}", nested=True) as run:
            model = LinearRegression().fit(pdf[["x"]], pdf["y"])
            mlflow.log_param("group", group)
            mlflow.log_param("rows", len(pdf))
            for epoch in range(3):
                mlflow.log_metric("mse", 1.0 / (epoch + 1), step=epoch)
            mlflow.log_text(f"coefficient {model.coef_[0]:.3f}", "notes/summary.txt")
            mlflow.sklearn.log_model(model, **name_kwargs)
            return pd.DataFrame({"group": [group], "run_id": [run.info.run_id]})

    with mlflow.start_run(run_name="many-models") as parent:
        result = _data(spark).groupBy("group").applyInPandas(train_model, "group string, run_id string").toPandas()

    runs = dict(zip(result["group"], result["run_id"]))
    assert sorted(runs) == GROUPS
    assert len(set(runs.values())) == 3 and parent.info.run_id not in runs.values()
    for i, group in enumerate(GROUPS):
        child = store.get_run(runs[group])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["mlflow.runName"] == f"group-{group}"
        assert child.info.experiment_id == parent.info.experiment_id
        assert child.info.status == "FINISHED"
        assert child.data.params == {"group": group, "rows": "20"}
        assert history(store, runs[group], "mse") == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
        assert mlflow.artifacts.load_text(f"runs:/{runs[group]}/notes/summary.txt") == f"coefficient {i + 1:.3f}"
        model = mlflow.sklearn.load_model(f"runs:/{runs[group]}/model")
        assert model.predict(pd.DataFrame({"x": [10.0]}))[0] == 10.0 * (i + 1) + 0.5
    # the groups' params are on their own runs, not on the parent
    assert store.get_run(parent.info.run_id).data.params == {}


def test_many_models_with_the_parent_passed_in(spark, store):
    """The other way the docs write it: the task resumes the parent by id, then nests."""
    with mlflow.start_run() as parent:
        parent_id = parent.info.run_id

        def train_model(pdf: pd.DataFrame) -> pd.DataFrame:
            import mlflow

            group = pdf["group"].iloc[0]
            with mlflow.start_run(run_id=parent_id):
                with mlflow.start_run(run_name=f"group-{group}", nested=True) as child:
                    mlflow.log_param("group", group)
                    mlflow.log_metric("rows", len(pdf))
                    return pd.DataFrame({"group": [group], "run_id": [child.info.run_id]})

        result = _data(spark).groupBy("group").applyInPandas(train_model, "group string, run_id string").toPandas()
        assert mlflow.active_run().info.run_id == parent_id

    parent_run = store.get_run(parent_id)
    assert parent_run.info.status == "FINISHED"  # ended by the driver, never by a task
    assert parent_run.data.params == {}
    for group, run_id in zip(result["group"], result["run_id"]):
        child = store.get_run(run_id)
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.data.params == {"group": group}
        assert history(store, run_id, "rows") == [(0, 20.0)]
