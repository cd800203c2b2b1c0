# Databricks notebook source
# MAGIC %md
# MAGIC # 3 · Look at and compare runs
# MAGIC
# MAGIC Query the central store with plain MLflow: a table of the training runs from notebook 2, their
# MAGIC validation loss, and each worker's loss curve. No tracking setup: the session hook did it.

# COMMAND ----------

import mlflow

runs = mlflow.search_runs(
    search_all_experiments=True,
    filter_string="tags.mlflow.runName LIKE 'distributed-training%'",
    order_by=["attributes.start_time DESC"],
)
assert len(runs), "no training runs found: run notebook 2 (02_distributed_training) first"
table = runs[["run_id", "tags.mlflow.runName", "params.lr", "params.workers", "metrics.val_loss", "metrics.loss"]]
display(table)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Validation loss per run

# COMMAND ----------

import matplotlib.pyplot as plt
import pandas as pd

client = mlflow.MlflowClient()


def history(run_id, key):
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return pd.Series([m.value for m in points], index=[m.step for m in points], name=key)


fig, ax = plt.subplots(figsize=(7, 4))
for _, run in runs.iterrows():
    history(run.run_id, "val_loss").plot(ax=ax, marker="o", label=run["tags.mlflow.runName"])
ax.set(xlabel="step", ylabel="validation loss", yscale="log", title="val_loss by run")
ax.legend()
plt.show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Every worker of the best run
# MAGIC
# MAGIC The per-worker series were logged inside Spark tasks; `loss` is their mean at each step.
# MAGIC `spark_tracking.layout.group_metrics` groups a run's metric keys that way.

# COMMAND ----------

from spark_tracking.layout import group_metrics

best = runs.sort_values("metrics.val_loss").iloc[0]
mean_key, workers = group_metrics(client.get_run(best.run_id).data.metrics)["loss"]
fig, ax = plt.subplots(figsize=(7, 4))
for worker, key in workers:
    history(best.run_id, key).plot(ax=ax, linewidth=1, label=f"worker {worker}")
history(best.run_id, mean_key).plot(ax=ax, linewidth=2.5, label="mean")
ax.set(xlabel="step", ylabel="training loss", yscale="log", title=f"{best['tags.mlflow.runName']}: workers")
ax.legend()
plt.show()
print(f"best run: {best.run_id} ({best['tags.mlflow.runName']}), workers: {[key for _, key in workers]}")
