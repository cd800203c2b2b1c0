# Databricks notebook source
# MAGIC %md
# MAGIC # 5 · Watch a distributed run live: `RunDetails().show()`
# MAGIC
# MAGIC Azure ML users watch a run from the notebook with `RunDetails(run).show()`. spark_tracking's
# MAGIC `RunDetails` does the same for training that runs **inside Spark tasks**: one panel per metric
# MAGIC with a curve per worker and their mean, the latest values, the forwarding counters, the run's
# MAGIC status and its link. It refreshes about once a second from what the driver receives from the
# MAGIC tasks (no round trip to the store), in its own output, while the next cell runs the Spark job.
# MAGIC No tracking setup here: the session hook did it.
# MAGIC
# MAGIC Uses the RDD API (`mapPartitions`): on Databricks, run it on a cluster in dedicated (single user)
# MAGIC access mode.

# COMMAND ----------

# MAGIC %run ./_setup

# COMMAND ----------

# MAGIC %md
# MAGIC ## Data and the per-task training step
# MAGIC
# MAGIC Local SGD on a synthetic regression problem, as in notebook 2. Each task logs its `loss` and
# MAGIC the norm of its gradient with plain `mlflow.log_metric`. `STEP_SECONDS` stands in for the time a
# MAGIC real training step takes, so the curves grow at a pace you can watch.

# COMMAND ----------

import numpy as np

WORKERS, ROUNDS, STEPS, STEP_SECONDS = 4, 4, 25, 0.04
rng = np.random.default_rng(11)
true_w = rng.normal(size=5)
x = rng.normal(size=(2000, 5))
y = x @ true_w + rng.normal(scale=0.1, size=2000)
train = sc.parallelize(list(zip(x.tolist(), y.tolist())), WORKERS).cache()


def local_sgd(rows, weights, lr, round_index):
    """One Spark task: SGD on this partition, logging with plain MLflow."""
    import time

    import mlflow
    import numpy as np
    from pyspark import TaskContext

    rows = list(rows)
    xs, ys = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    w = np.array(weights)
    task_rng = np.random.default_rng(1000 * round_index + TaskContext.get().partitionId())
    for step in range(STEPS):
        batch = task_rng.choice(len(xs), size=min(32, len(xs)), replace=False)
        grad = 2 * xs[batch].T @ (xs[batch] @ w - ys[batch]) / len(batch)
        w -= lr * grad
        global_step = round_index * STEPS + step
        mlflow.log_metric("loss", float(np.mean((xs @ w - ys) ** 2)), step=global_step)
        mlflow.log_metric("grad_norm", float(np.linalg.norm(grad)), step=global_step)
        time.sleep(STEP_SECONDS)  # the rest of a real training step
    yield w.tolist()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Start the run and its live view
# MAGIC
# MAGIC `RunDetails().show()` draws the view of the active run in this cell's output and returns at once
# MAGIC (`RunDetails(run)` names a run: an id, an MLflow run or a `spark_tracking.Run`).
# MAGIC `spark_tracking.Run(...).show_details()` is the same for the Azure ML vocabulary.

# COMMAND ----------

import mlflow

import spark_tracking

run = mlflow.start_run(run_name="live view")
mlflow.log_params({"workers": WORKERS, "rounds": ROUNDS, "steps": STEPS, "lr": 0.03})
details = spark_tracking.RunDetails()
details.show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Train — and watch the view above
# MAGIC
# MAGIC While this cell runs, the curves above grow, one per worker plus their mean.

# COMMAND ----------

weights = [0.0] * 5
for r in range(ROUNDS):
    results = train.mapPartitions(lambda rows, w=weights, r=r: local_sgd(rows, w, 0.03, r)).collect()
    weights = np.mean(np.array(results), axis=0).tolist()
mlflow.end_run()
print(f"run {run.info.run_id} ended")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The end of the run
# MAGIC
# MAGIC The view notices the run's end (it reads the run's status every few seconds), draws once more and
# MAGIC stops, leaving the final chart in the notebook. `wait()` blocks until then; `summary()` is the same
# MAGIC view as text.

# COMMAND ----------

details.wait(timeout=120)
print(details.summary())

# COMMAND ----------

import os

if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
    spark.stop()  # locally: release the executors (on Databricks the session belongs to the cluster)
