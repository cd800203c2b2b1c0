# Databricks notebook source
# MAGIC %md
# MAGIC # 4 · The Azure ML logging vocabulary, from the driver and from Spark tasks
# MAGIC
# MAGIC Code written for Azure ML's `Run` (`Run.get_context()`, `run.log`, `run.log_row`, `run.log_image`...)
# MAGIC keeps working: `spark_tracking.Run` stores every call as plain MLflow on the run, so the results show
# MAGIC up in AML studio, the MLflow UI and `spark-tracking show`. The same calls work inside Spark tasks,
# MAGIC where they are forwarded to the run that is active on the driver. No tracking setup here: the
# MAGIC session hook did it.
# MAGIC
# MAGIC Uses the RDD API (`mapPartitions`): on Databricks, run it on a cluster in dedicated (single user)
# MAGIC access mode.

# COMMAND ----------

# MAGIC %run ./_setup

# COMMAND ----------

# MAGIC %md
# MAGIC ## Start a run
# MAGIC
# MAGIC `Run.start_logging` starts an interactive run (AML's `experiment.start_logging()`) in this
# MAGIC session's experiment. It becomes the active run, so Spark jobs submitted from now on log to it.

# COMMAND ----------

from spark_tracking import Run

run = Run.start_logging("vocabulary tour")
print(f"run {run.id}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## On the driver
# MAGIC
# MAGIC | call | stored as |
# MAGIC |---|---|
# MAGIC | `run.log(name, number)`, `run.log_list(name, numbers)` | the MLflow metric `name`, one step per value |
# MAGIC | `run.log(name, "text")` | the tag `aml.text.<name>` (a JSON list of the texts) |
# MAGIC | `run.log_row(name, ...)`, `run.log_table(name, {...})` | the table artifact `aml/tables/<name>.json` |
# MAGIC | `run.log_image(name, plot=fig)` | the artifact `aml/images/<name>.png` |
# MAGIC | `run.tag(key, value)` | the MLflow tag `key` |
# MAGIC | `run.upload_file(name, path)` | the artifact `name` |

# COMMAND ----------

import json
import os
import tempfile

import matplotlib.pyplot as plt

EPOCHS = 5
accuracy = [0.62, 0.71, 0.78, 0.82, 0.85]
run.log("model", "logistic regression")  # text: kept as a tag
run.log_list("learning_rate", [round(0.1 * 0.7 ** epoch, 4) for epoch in range(EPOCHS)])  # one series
for epoch, acc in enumerate(accuracy):
    run.log("accuracy", acc)  # each call is the next step: 0, 1, 2, ...
    run.log_row("epochs", epoch=epoch, accuracy=acc)
run.log_table("predictions", {"label": ["cat", "dog", "cat", "bird"],
                              "predicted": ["cat", "dog", "dog", "bird"],
                              "confidence": [0.91, 0.87, 0.55, 0.78]})
run.tag("dataset", "synthetic")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(range(EPOCHS), accuracy, marker="o")
ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy by epoch")
run.log_image("accuracy_curve", plot=fig)
plt.show()

settings = os.path.join(tempfile.mkdtemp(prefix="vocabulary-"), "settings.json")
with open(settings, "w") as fh:
    json.dump({"epochs": EPOCHS, "model": "logistic regression"}, fh)
run.upload_file("outputs/settings.json", settings)

# COMMAND ----------

# MAGIC %md
# MAGIC ## From Spark tasks
# MAGIC
# MAGIC Inside a task, `Run.get_context()` is the driver's run. A metric becomes one series per worker
# MAGIC (`loss/worker_<partition>`, steps counted from 0 in each task) and their mean `loss`, computed on
# MAGIC the driver step by step. Each task's rows and image are their own artifacts:
# MAGIC `aml/tables/<name>/stage_<s>/worker_<w>.json` and `aml/images/<name>/stage_<s>/worker_<w>.png`.

# COMMAND ----------

WORKERS, STEPS = 4, 6


def train_partition(rows):
    """One Spark task: a toy loss curve, logged with the AML vocabulary."""
    from matplotlib.figure import Figure  # not pyplot: tasks have no display
    from pyspark import TaskContext

    from spark_tracking import Run

    worker = TaskContext.get().partitionId()
    run = Run.get_context()
    losses = [round((1 + worker) * 0.6 ** step, 4) for step in range(STEPS)]
    for loss in losses:
        run.log("loss", loss)
    run.log_row("per_worker", worker=worker, final_loss=losses[-1])
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot(losses, marker="o")
    ax.set(xlabel="step", ylabel="loss", title=f"worker {worker}")
    run.log_image("worker_loss", plot=fig)
    yield worker, losses[-1]


results = sc.parallelize(range(WORKERS), WORKERS).mapPartitions(train_partition).collect()
print(f"final loss per worker: {dict(results)}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Read it back, in AML's shape
# MAGIC
# MAGIC `get_metrics()` first waits for what the tasks forwarded. A series is a list in step order, a
# MAGIC text a string, a table a dict of columns (the tasks' rows after the driver's), an image its
# MAGIC artifact path (one per task).

# COMMAND ----------

from pprint import pprint

pprint(run.get_metrics(), width=110, sort_dicts=False)

# COMMAND ----------

for name in run.get_file_names():
    print(name)
run.complete()

# COMMAND ----------

# MAGIC %md
# MAGIC ## `spark-tracking show --plot`
# MAGIC
# MAGIC The same run from a terminal (the web terminal on Databricks): per metric its last, min, max and
# MAGIC count, for the mean and for every worker; then texts, tables and images. `--plot` draws one panel
# MAGIC per metric: each worker thin, the mean thick.

# COMMAND ----------

import subprocess
import sys

from IPython.display import Image, display

plot_path = os.path.join(tempfile.mkdtemp(prefix="vocabulary-"), "vocabulary_tour.png")
shown = subprocess.run([sys.executable, "-m", "spark_tracking.cli", "show", run.id, "--plot", plot_path],
                       capture_output=True, text=True)
print(shown.stdout)
if shown.returncode != 0:
    raise RuntimeError(f"spark-tracking show failed ({shown.returncode}):\n{shown.stderr}")
display(Image(filename=plot_path))

# COMMAND ----------

if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
    spark.stop()  # locally: release the executors (on Databricks the session belongs to the cluster)
