"""Run a Spark driver program the way a notebook on a cluster runs it: in a fresh interpreter
of this environment, with spark_tracking's startup hook installed (the init script's setup) or
not, against a real MLflow store; the program prints the id of its run last."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from spark_tracking import hook


def spark_session(master: str) -> str:
    """Driver code that starts ``spark`` on ``master``, on loopback, without the UI."""
    return textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master({master!r})
                 .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                 .getOrCreate())
    """)


def run_driver(program: str, tracking_uri: str, cwd, with_hook: bool = True, timeout: float = 600) -> list[str]:
    """Run ``program`` with ``SPARK_TRACKING_TRACKING_URI=tracking_uri`` and the startup hook
    enabled (``with_hook``) or disabled in this environment for its duration; returns its
    stdout lines after checking it exited cleanly."""
    if with_hook:
        hook.enable()
    else:
        hook.disable()
    try:
        env = dict(
            os.environ,
            SPARK_TRACKING_TRACKING_URI=tracking_uri,
            PYSPARK_PYTHON=sys.executable,
            PYSPARK_DRIVER_PYTHON=sys.executable,
        )
        out = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
        )
    finally:
        hook.disable()
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout.strip().splitlines()
