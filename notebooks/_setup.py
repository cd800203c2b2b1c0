# Databricks notebook source
# MAGIC %md
# MAGIC # Spark for the example notebooks
# MAGIC
# MAGIC Each example starts with `%run ./_setup`, which defines `spark` and `sc`: the cluster's session
# MAGIC on Databricks; elsewhere (Jupyter, IPython), `local-cluster[2,1,1024]` (or `SPARK_MASTER`):
# MAGIC two executor processes on this machine, on loopback. No tracking setup: the session hook did it.

# COMMAND ----------

import os
import sys

from pyspark.sql import SparkSession

if "DATABRICKS_RUNTIME_VERSION" in os.environ:
    spark = SparkSession.builder.getOrCreate()  # the cluster's session
else:  # locally: two executor processes on this machine, on loopback
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(os.environ.get("SPARK_MASTER", "local-cluster[2,1,1024]"))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executorEnv.PYSPARK_PYTHON", os.environ["PYSPARK_PYTHON"])
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
sc = spark.sparkContext
