# Databricks notebook source
# MAGIC %md
# MAGIC # 2 · Distributed training with `mlflow.log_metric` inside Spark tasks
# MAGIC
# MAGIC Local SGD with model averaging on a synthetic regression problem. Each Spark task trains on its
# MAGIC own partition and calls **plain `mlflow.log_metric`**; spark_tracking forwards those points to the
# MAGIC run that is active on the driver: one series per worker (`loss/worker_<partition>`) and their
# MAGIC mean (`loss`). No tracking setup here: the session hook did it.
# MAGIC
# MAGIC Uses the RDD API (`mapPartitions`): on Databricks, run it on a cluster in dedicated (single user)
# MAGIC access mode.

# COMMAND ----------

# MAGIC %run ./_setup

# COMMAND ----------

# MAGIC %md
# MAGIC ## Data and the per-task training step

# COMMAND ----------

import numpy as np

WORKERS, ROUNDS, STEPS = 4, 4, 10
rng = np.random.default_rng(7)
true_w = rng.normal(size=5)
x = rng.normal(size=(2000, 5))
y = x @ true_w + rng.normal(scale=0.1, size=2000)
train = sc.parallelize(list(zip(x[:1600].tolist(), y[:1600].tolist())), WORKERS).cache()
x_val, y_val = x[1600:], y[1600:]


def local_sgd(rows, weights, lr, round_index):
    """One Spark task: SGD on this partition, logging its loss with plain MLflow."""
    import mlflow
    import numpy as np
    from pyspark import TaskContext

    rows = list(rows)
    xs, ys = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    w = np.array(weights)
    task_rng = np.random.default_rng(1000 * round_index + TaskContext.get().partitionId())
    for step in range(STEPS):
        batch = task_rng.choice(len(xs), size=min(32, len(xs)), replace=False)
        w -= lr * 2 * xs[batch].T @ (xs[batch] @ w - ys[batch]) / len(batch)
        mlflow.log_metric("loss", float(np.mean((xs @ w - ys) ** 2)), step=round_index * STEPS + step)
    yield w.tolist()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Train: one run per learning rate

# COMMAND ----------

import mlflow

run_ids = []
for lr in (0.02, 0.05):
    with mlflow.start_run(run_name=f"distributed-training lr={lr}") as run:
        mlflow.log_params({"lr": lr, "workers": WORKERS, "rounds": ROUNDS, "steps": STEPS})
        weights = [0.0] * 5
        for r in range(ROUNDS):
            results = train.mapPartitions(lambda rows, w=weights, r=r, lr=lr: local_sgd(rows, w, lr, r)).collect()
            weights = np.mean(np.array(results), axis=0).tolist()
            val_loss = float(np.mean((x_val @ np.array(weights) - y_val) ** 2))
            mlflow.log_metric("val_loss", val_loss, step=(r + 1) * STEPS - 1)
    run_ids.append(run.info.run_id)
    print(f"lr={lr}: run {run.info.run_id}, final val_loss {val_loss:.4f}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## What the run holds
# MAGIC
# MAGIC Read back from the store: the driver's `val_loss`, each worker's `loss/worker_<n>` and the mean `loss`.

# COMMAND ----------

import pandas as pd

client = mlflow.MlflowClient()
rows = []
for run_id in run_ids:
    for key in sorted(client.get_run(run_id).data.metrics):
        history = client.get_metric_history(run_id, key)
        rows.append({"run": run_id[:8], "metric": key, "points": len(history),
                     "last": sorted(history, key=lambda m: m.step)[-1].value})
summary = pd.DataFrame(rows)
display(summary)

# COMMAND ----------

import os

if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
    spark.stop()  # locally: release the executors (on Databricks the session belongs to the cluster)
