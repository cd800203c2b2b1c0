"""Bind the Spark jobs a driver thread submits to its active MLflow run: through the classic
SparkContext (``current.bind_spark_context``: Spark local properties), or, for a Spark Connect
client, through job tags (``connect.bind_current_thread``)."""

from __future__ import annotations

from . import connect, current


def bind_current_thread(sc=None) -> bool:
    """Bind Spark jobs submitted from this thread to this thread's active MLflow run.

    Called by MLflow at each run start (run-context provider) and by configure(); call it
    yourself (``spark_tracking.bind_current_thread()``) if you started the run before creating
    the SparkSession. Honours ``SPARK_TRACKING_FORWARDING`` / ``spark.sparktracking.forwarding``
    and ``..._DISABLED``. Returns True when bound.
    """
    if sc is None:
        # a Spark Connect client has no SparkContext: it binds with job tags (this thread's
        # Connect session wins over a SparkContext the process may also have)
        sc = current.spark_context()
        if sc is None or connect.session_of_this_thread() is not None:
            return connect.bind_current_thread()
    return current.bind_spark_context(sc)
