"""hyperopt SparkTrials with nested runs per trial: trials are launched from hyperopt's own
dispatcher thread (never bound), and each is a child run of the tuning run."""

from __future__ import annotations

import mlflow


def test_spark_trials_with_nested_runs(spark, store):
    from hyperopt import STATUS_OK, SparkTrials, fmin, hp, tpe

    def objective(params):
        import mlflow

        with mlflow.start_run(nested=True):
            loss = (params["x"] - 3.0) ** 2
            mlflow.log_param("x", params["x"])
            mlflow.log_metric("loss", loss)
            return {"loss": loss, "status": STATUS_OK}

    with mlflow.start_run(run_name="tuning") as tuning:
        fmin(
            fn=objective,
            space={"x": hp.uniform("x", -10, 10)},
            algo=tpe.suggest,
            max_evals=4,
            trials=SparkTrials(parallelism=2),
        )

    import spark_tracking

    spark_tracking.flush()
    trials = store.search_runs([tuning.info.experiment_id], f"tags.`mlflow.parentRunId` = '{tuning.info.run_id}'")
    assert len(trials) == 4
    for trial in trials:
        x = float(trial.data.params["x"])
        assert trial.data.metrics["loss"] == (x - 3.0) ** 2
        assert trial.info.status == "FINISHED"
    tuning_run = store.get_run(tuning.info.run_id)
    assert "x" not in tuning_run.data.params and "loss" not in tuning_run.data.metrics
    # nothing went to a store of the executors' own (the only runs are the tuning run and its trials)
    assert len(store.search_runs([tuning.info.experiment_id])) == 5
