"""The live view in a real Jupyter kernel, off the happy path: the docs snippet executed in batch
(``jupyter nbconvert --execute``, no ``wait()``) and its HTML export in headless Chromium; a
finished run opened late; a kernel without ipywidgets; a task that fails and is retried; a task
whose every attempt fails (the last one is never retried: the job fails).

Real Spark (``local[2,2]``: two task slots, a failed task is retried once), a real SQLite MLflow
store, the package's session hook (no tracking setup in the notebooks).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cluster.test_notebooks import REPO

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

DOCS = REPO / "docs" / "live-view.md"
HEADER = re.compile(r'data-status="(\w+)" data-points="(\d+)"')


def _kernel_env(tmp, store: str) -> dict:
    kernels = tmp / "jupyter" / "kernels" / "live-kernel"
    kernels.mkdir(parents=True, exist_ok=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "live view",
                "language": "python",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_TRACKING_", "MLFLOW_", "PYSPARK_", "JPY_"))}
    env.update(
        JUPYTER_PATH=str(tmp / "jupyter"),
        MLFLOW_TRACKING_URI=store,
        HOME=str(tmp),
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_SUBMIT_ARGS="--master local[2,2] --conf spark.driver.host=127.0.0.1 "
        "--conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false pyspark-shell",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        SPARK_LOCAL_IP="127.0.0.1",
    )
    return env


def docs_snippet() -> list[str]:
    """The two code blocks of docs/live-view.md's "Use" section, as written."""
    text = DOCS.read_text(encoding="utf-8")
    use = text[text.index("## Use") :]
    use = use[: use.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", use, re.S)
    assert len(blocks) >= 2, "docs/live-view.md: the Use section lost its two code blocks"
    return blocks[:2]


def _view_output(nb, needle: str) -> dict:
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    (output,) = [o for o in cell.outputs if o.output_type == "display_data"]
    return output.data


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The docs snippet executed by ``jupyter nbconvert --to notebook --execute``, then exported
    to HTML: (saved notebook, html path, store, folder)."""
    tmp = tmp_path_factory.mktemp("live-batch")
    store = f"sqlite:///{tmp / 'store.db'}"
    env = _kernel_env(tmp, store)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in docs_snippet()])
    nb.metadata["kernelspec"] = {"name": "live-kernel", "display_name": "live view", "language": "python"}
    source = tmp / "snippet.ipynb"
    nbformat.write(nb, str(source))
    jupyter = [sys.executable, "-m", "jupyter", "nbconvert"]
    done = subprocess.run(
        [
            *jupyter,
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.timeout=300",
            "--output",
            "executed",
            str(source),
        ],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    executed = tmp / "executed.ipynb"
    done = subprocess.run(
        [*jupyter, "--to", "html", str(executed)], env=env, cwd=tmp, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return nbformat.read(str(executed), as_version=4), tmp / "executed.html", store, tmp


def test_in_batch_the_saved_notebook_keeps_the_final_state_without_wait(batch):
    nb, _, store, _ = batch
    data = _view_output(nb, "details.show()")
    page = data["text/html"]
    # the static final state, not a widget a saved notebook cannot draw
    assert "application/vnd.jupyter.widget-view+json" not in data
    # 4 workers x 60 steps from the tasks, and the driver's one val_loss point
    assert 'data-status="FINISHED" data-points="241"' in page, page[:600]
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="live view chart">', page)
    assert re.search(r"^run \w{8} training  FINISHED$", data["text/plain"], re.M), data["text/plain"]
    # the workers table: four workers done at step 59; the driver's own val_loss in the metrics table
    for worker in range(4):
        assert re.search(rf"^{worker} +done +\d+ +0 +59 +", data["text/plain"], re.M), data["text/plain"]
    assert re.search(r"^loss +59 +\S+ +\S+ +\S+ +59 +4 +240 +-$", data["text/plain"], re.M), data["text/plain"]
    assert re.search(r"^val_loss .* 0\.05$", data["text/plain"], re.M), data["text/plain"]


def _chromium() -> str:
    for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(path):
            return path
    pytest.skip("Debian's chromium is not installed (.ci/setup installs it when run as root)")


def _browse(page, tmp, name: str):
    """The page as headless Chromium draws it: (screenshot as an RGB array, the rendered DOM)."""
    import numpy as np
    from PIL import Image

    shot = tmp / f"{name}.png"
    flags = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp / f'chromium-{name}'}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1600,4000",
    ]
    done = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.exists(), done.stderr[-3000:]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    return np.asarray(Image.open(shot).convert("RGB")).astype(int), dom.stdout


def test_the_html_export_shows_status_workers_and_a_curve_per_worker_in_a_browser(batch):
    from matplotlib import colormaps

    _, html_path, _, tmp = batch
    screen, dom = _browse(html_path, tmp, "batch")
    # what the browser rendered: the final status, the worker rows, the chart
    assert 'data-status="FINISHED"' in dom
    assert re.search(r"run \w{8} training\s+FINISHED", dom)
    rows = re.findall(r'<tr><td style="[^"]*">(\d+)</td><td style="[^"]*">done</td>', dom)
    assert rows == ["0", "1", "2", "3"], rows
    assert 'alt="live view chart"' in dom
    # one curve per worker in the screenshot: each worker's colour (alpha 0.7 on white) is drawn
    drawn = 0
    for worker in range(4):
        rgb = [255 * (0.7 * c + 0.3) for c in colormaps["tab10"](worker)[:3]]
        close = (abs(screen - rgb) <= 24).all(axis=2).sum()
        drawn += close >= 40
    assert drawn == 4, drawn
    assert ((screen < 30).all(axis=2)).sum() > 200  # the mean, black


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One kernel, several views: a finished run opened late, the same without ipywidgets, a run
    whose task fails once and is retried, a run whose job fails (a task fails on both attempts)."""
    tmp = tmp_path_factory.mktemp("live-kernel")
    store = f"sqlite:///{tmp / 'store.db'}"
    env = _kernel_env(tmp, store)
    cells = [
        # a run trained with no view open: 2 workers x 30 steps, and a driver metric
        """
import sys
import mlflow
from pyspark.sql import SparkSession
import spark_tracking

spark = SparkSession.builder.getOrCreate()

def train(rows, fail_partition=None, always=False):
    import mlflow
    from pyspark import TaskContext
    ctx = TaskContext.get()
    for step in range(30):
        mlflow.log_metric("loss", 1.0 / (step + 1) + ctx.partitionId(), step=step)
        if ctx.partitionId() == fail_partition and (always or ctx.attemptNumber() == 0) and step == 9:
            raise ValueError("bad batch at step 9")
    yield ctx.partitionId()

with mlflow.start_run(run_name="earlier") as earlier:
    spark.sparkContext.parallelize(range(2), 2).mapPartitions(train).collect()
    mlflow.log_metric("val_loss", 0.5, step=29)
""",
        "late = spark_tracking.RunDetails(earlier.info.run_id)\nlate.show()",
        'sys.modules["ipywidgets"] = None  # as if not installed\n'
        "plain = spark_tracking.RunDetails(earlier.info.run_id)\nplain.show()\n"
        'del sys.modules["ipywidgets"]',
        'failing = mlflow.start_run(run_name="failing")\nfailed_view = spark_tracking.RunDetails(failing)\n'
        "failed_view.show()",
        "spark.sparkContext.parallelize(range(2), 2).mapPartitions(lambda rows: train(rows, 1)).collect()\n"
        "mlflow.end_run()",
        'doomed = mlflow.start_run(run_name="doomed")\ndoomed_view = spark_tracking.RunDetails(doomed)\n'
        "doomed_view.show()",
        "try:\n"
        "    spark.sparkContext.parallelize(range(2), 2).mapPartitions(lambda rows: train(rows, 1, True)).collect()\n"
        "except Exception as exc:\n"
        '    print("the job failed:", "bad batch at step 9" in str(exc))\n'
        'mlflow.end_run("FAILED")',
        "spark.stop()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in cells])
    nb.metadata["kernelspec"] = {"name": "live-kernel", "display_name": "live view", "language": "python"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
        nbclient.NotebookClient(nb, timeout=600, kernel_name="live-kernel").execute(env=env, cwd=str(tmp))
    return nb, store, tmp


def test_a_finished_run_opened_late_shows_its_history_and_the_driver_s_metrics(kernel):
    nb, _, _ = kernel
    data = _view_output(nb, "late.show()")
    text = data["text/plain"]
    assert re.search(r"^run \w{8} earlier  FINISHED$", text, re.M), text
    assert "no points yet" not in text
    # the run's counters on this driver (60 points from tasks, 30 means), and what the view took
    assert (
        "this run: received 60  stored 90  spooled 0  dropped 0  |  in the view: 0 points from tasks, 61 loaded" in text
    ), text
    assert re.search(r"^loss +29 +\S+ +\S+ +\S+ +29 +2 +60 +-$", text, re.M), text
    assert re.search(r"^val_loss .* 0\.5$", text, re.M), text
    assert re.search(r'<img src="data:image/png;base64,', data["text/html"])


def test_without_ipywidgets_show_prints_the_summary_and_does_not_raise(kernel):
    nb, _, _ = kernel
    (cell,) = [c for c in nb.cells if "plain.show()" in c.source]
    assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
    data = _view_output(nb, "plain.show()")
    assert "application/vnd.jupyter.widget-view+json" not in data
    text = data["text/plain"]
    assert re.search(r"^run \w{8} earlier  FINISHED$", text, re.M), text
    assert "no link: no MLflow UI runs for this store (start one with: spark-tracking ui)" in text


def test_a_task_that_fails_and_is_retried_is_shown(kernel):
    nb, _, _ = kernel
    data = _view_output(nb, "failed_view.show()")
    text = data["text/plain"]
    assert re.search(r"^run \w{8} failing  FINISHED$", text, re.M), text
    # the error line came with the failed attempt's end, before the retry started
    assert re.search(r"^task failed: worker 1, stage \d+, attempt 0: ValueError: bad batch at step 9$", text, re.M), (
        text
    )
    assert re.search(r"^1 +done +\d+ +1 +29 +", text, re.M), text  # attempt 1 finished the task
    assert re.search(r"^0 +done +\d+ +0 +29 +", text, re.M), text
    assert "failed task attempts 1" in text, text
    assert 'data-failures="1"' in data["text/html"]


def test_a_task_that_fails_on_its_last_attempt_stays_failed_with_its_error(kernel):
    nb, _, _ = kernel
    (cell,) = [c for c in nb.cells if "the job failed" in c.source]
    assert [o.get("text") for o in cell.outputs if o.output_type == "stream"] == ["the job failed: True\n"]
    data = _view_output(nb, "doomed_view.show()")
    text = data["text/plain"]
    assert re.search(r"^run \w{8} doomed  FAILED$", text, re.M), text
    assert "failed task attempts 2" in text, text
    for attempt in (0, 1):
        assert re.search(
            rf"^task failed: worker 1, stage \d+, attempt {attempt}: ValueError: bad batch at step 9$", text, re.M
        ), text
    # attempt 1, never retried: the worker stays failed, with its error, at the step it reached
    assert re.search(r"^1 +failed: ValueError: bad batch at step 9 +\d+ +1 +9 +", text, re.M), text
    assert 'data-failures="2"' in data["text/html"]
