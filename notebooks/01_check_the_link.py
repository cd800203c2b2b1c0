# Databricks notebook source
# MAGIC %md
# MAGIC # 1 · Check the link
# MAGIC
# MAGIC This notebook contains **no tracking setup**: on a cluster where `spark-tracking install` ran, the
# MAGIC init script installed a startup hook, and this session configured itself (at the latest when it
# MAGIC imported MLflow). Run it to see where your runs go; the first cell fails, with the cause and the
# MAGIC fix, if this session is not configured.
# MAGIC
# MAGIC Locally: `pip install spark-tracking[local]`, `spark-tracking hook enable`, then open this notebook in Jupyter.

# COMMAND ----------

import os

import mlflow
import spark_tracking
from spark_tracking import session_status

# is this session configured, and does MLflow log where it was configured to? (cause and fix if not)
status = session_status(mlflow.get_tracking_uri())
assert status.configured, f"spark_tracking: {status.detail}. Fix: {status.fix}"
print(f"spark_tracking {spark_tracking.__version__}: {status.detail}")
print(spark_tracking.current_config().debug_string())

# COMMAND ----------

# MAGIC %md
# MAGIC ## Where runs go
# MAGIC
# MAGIC The tracking URI and the experiment were set by the session hook: the linked Azure ML workspace
# MAGIC (or the URI your admin chose), and an experiment named after this notebook.

# COMMAND ----------

tracking_uri = mlflow.get_tracking_uri()
experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
print(f"tracking URI: {tracking_uri}")
print(f"experiment:   {experiment_name}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## A first run
# MAGIC
# MAGIC Plain MLflow: no URI, no experiment, no token in this notebook.

# COMMAND ----------

with mlflow.start_run(run_name="link-check") as run:
    mlflow.log_param("purpose", "link-check")
    mlflow.log_metric("ping", 1.0)

stored = mlflow.MlflowClient().get_run(run.info.run_id)
experiment = mlflow.get_experiment(stored.info.experiment_id)
print(f"run {stored.info.run_id} stored in experiment {experiment.name!r} ({stored.info.status})")
for key in sorted(stored.data.tags):
    if key.startswith(("spark_tracking.", "mlflow.source", "mlflow.databricks")):
        print(f"  {key} = {stored.data.tags[key]}")
