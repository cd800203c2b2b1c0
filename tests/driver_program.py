"""Driver programs as a notebook on a cluster runs them: in a fresh interpreter of this
environment, with spark_tracking's startup hook installed (the init script's setup) or not,
against a real MLflow store; the program prints the id of its run last."""

from __future__ import annotations

import sys
import textwrap

from conftest import run_driver

from spark_tracking import hook


def spark_session(master: str, executor_env: dict | None = None) -> str:
    """Driver code that starts ``spark`` on ``master``, on loopback, without the UI;
    ``executor_env``: variables set in the executors' environment (``spark.executorEnv.*``)."""
    extra = "".join(f".config({'spark.executorEnv.' + k!r}, {v!r})" for k, v in (executor_env or {}).items())
    return textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master({master!r})
                 .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                 {extra}.getOrCreate())
    """)


def run_on_cluster(program: str, tracking_uri: str, cwd, with_hook: bool = True) -> list[str]:
    """Run ``program`` (:func:`conftest.run_driver`) with ``SPARK_TRACKING_TRACKING_URI`` set
    and the startup hook enabled (``with_hook``) or disabled in this environment while it runs;
    its stdout lines."""
    if with_hook:
        hook.enable()
    else:
        hook.disable()
    env = {
        "SPARK_TRACKING_TRACKING_URI": tracking_uri,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    try:
        return run_driver(program, cwd=cwd, env=env).strip().splitlines()
    finally:
        hook.disable()
