"""Start-up cost of the session hook: `python -c pass` with and without it, interleaved in one
run (docs/benchmarks.md). Restores the hook's previous state.

The package's bytecode is compiled first, as pip does when it installs the wheel on a cluster:
otherwise (an editable install with PYTHONDONTWRITEBYTECODE set) every run would compile the
sources and measure the compiler, not the hook. Reports the medians, their difference and
their ratio (on a machine shared with other work the ratio is the steadier figure).

    .venv/bin/python benchmarks/hook_cost.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from spark_tracking import hook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    import compileall

    import spark_tracking

    compileall.compile_dir(os.path.dirname(spark_tracking.__file__), quiet=1)  # as pip install does
    was_enabled = hook.is_enabled()
    home = tempfile.mkdtemp(prefix="spark-tracking-hook-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_TRACKING_", "MLFLOW_"))}
    env["HOME"] = home
    times = {"without": [], "with": []}
    try:
        for _ in range(args.runs):
            for state in ("without", "with"):
                (hook.enable if state == "with" else hook.disable)()
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
                times[state].append(time.perf_counter() - t)
    finally:
        (hook.enable if was_enabled else hook.disable)()
    without, with_hook = statistics.median(times["without"]), statistics.median(times["with"])
    print(
        f"python -c pass, median of {args.runs}: without hook {without * 1e3:.1f} ms, with hook "
        f"{with_hook * 1e3:.1f} ms, hook cost {(with_hook - without) * 1e3:.1f} ms "
        f"(ratio {with_hook / without:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
