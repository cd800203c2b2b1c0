"""Notebook 05 in a real Jupyter kernel: the live view refreshes while a Spark job logs from
tasks (local-cluster, a real SQLite MLflow store), ends with one curve per worker plus the mean,
and its final chart is drawn by a real browser (headless Chromium) in the notebook's HTML export.

The kernel is this environment's Python, with ``MLFLOW_TRACKING_URI`` naming the store: the
notebook has no tracking setup, and forwarding needs only the package installed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys

import pytest
from cluster.test_notebooks import REPO, read_databricks_source

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = REPO / "notebooks" / "05_live_view.py"
HEADER = re.compile(r'data-status="(\w+)" data-points="(\d+)" data-refresh="(\d+)"')
WORKERS, ROUNDS, STEPS, METRICS = 4, 4, 25, ("grad_norm", "loss")
#: a cell the test appends: the final figure as the view drew it
CHECK_CELL = """
import json
print("FIGURE " + json.dumps({ax.get_title(): {line.get_label(): len(line.get_xdata()) for line in ax.get_lines()}
                              for ax in details.figure.axes}))
"""


class RecordingClient(nbclient.NotebookClient):
    """Records every header update of the live view the kernel sends (ipywidgets comm messages),
    with the index of the cell running at the time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, str, int, int]] = []

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] == "comm_msg":
            value = msg["content"]["data"].get("state", {}).get("value")
            match = HEADER.search(value) if isinstance(value, str) else None
            if match:
                self.updates.append((cell_index, match.group(1), int(match.group(2)), int(match.group(3))))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Notebook 05 run in a Jupyter kernel; (notebook, client, store URI, folder)."""
    tmp = tmp_path_factory.mktemp("live-notebook")
    kernels = tmp / "jupyter" / "kernels" / "live-view"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "live view",
                "language": "python",
            }
        )
    )
    store = f"sqlite:///{tmp / 'store.db'}"
    nb = read_databricks_source(NOTEBOOK)
    nb.metadata["kernelspec"] = {"name": "live-view", "display_name": "live view", "language": "python"}
    nb.cells.insert(-1, nbformat.v4.new_code_cell(CHECK_CELL))
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("SPARK_TRACKING_", "MLFLOW_", "PYSPARK_", "JPY_"))
    }
    env.update(
        JUPYTER_PATH=str(tmp / "jupyter"),
        MLFLOW_TRACKING_URI=store,
        HOME=str(tmp),
        SPARK_MASTER="local-cluster[2,1,1024]",
        PYSPARK_PYTHON=sys.executable,
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        SPARK_LOCAL_IP="127.0.0.1",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(tmp / "jupyter"))  # where this process finds the kernel spec
        client = RecordingClient(nb, timeout=600, kernel_name="live-view")
        client.execute(env=env, cwd=str(tmp))
    return nb, client, store, tmp


def _cell_index(nb, needle: str) -> int:
    (index,) = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source]
    return index


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def test_the_view_refreshes_while_the_spark_job_runs(executed):
    nb, client, store, _ = executed
    job = _cell_index(nb, "mapPartitions(")
    during = [(points, refresh) for cell, status, points, refresh in client.updates if cell == job]
    assert len(during) >= 3, client.updates
    counts = [points for points, _ in during]
    assert counts == sorted(counts), during  # never going back
    total = WORKERS * ROUNDS * STEPS * len(METRICS)
    growing = sorted({c for c in counts if 0 < c < total})
    assert len(growing) >= 2, during  # points seen arriving in at least two refreshes mid-job
    refreshes = [r for _, r in during]
    assert refreshes == sorted(refreshes) and len(set(refreshes)) == len(refreshes), during
    # the last update: the run FINISHED, every point received, and the view stopped there
    assert client.updates[-1][1:3] == ("FINISHED", total), client.updates[-1]


def test_the_final_figure_has_a_curve_per_worker_plus_the_mean(executed):
    nb, _, _, _ = executed
    check = _cell_index(nb, 'print("FIGURE "')
    figure = json.loads(re.search(r"^FIGURE (.*)$", _text(nb.cells[check]), re.M).group(1))
    expected = {f"worker {w}": ROUNDS * STEPS for w in range(WORKERS)} | {
        "mean": ROUNDS * STEPS,
        "mean (partial)": 0,  # every step complete at the end
        "driver": 0,  # the driver logs no metric of these keys
    }
    assert figure == {metric: expected for metric in METRICS}
    summary = _text(nb.cells[_cell_index(nb, "details.wait(")])
    assert re.search(r"^run \w{8} live view  FINISHED$", summary, re.M), summary
    assert re.search(
        rf"^loss +{ROUNDS * STEPS - 1} +\S+ +\S+ +\S+ +{ROUNDS * STEPS - 1} +{WORKERS} +{ROUNDS * STEPS * WORKERS}$",
        summary,
        re.M,
    ), summary


def test_the_output_keeps_the_final_chart_as_static_html(executed):
    nb, _, store, _ = executed
    show = nb.cells[_cell_index(nb, "details.show()")]
    (output,) = [o for o in show.outputs if o.output_type == "display_data"]
    page = output.data["text/html"]
    assert 'data-status="FINISHED"' in page and "application/vnd.jupyter.widget-view+json" not in output.data
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="live view chart">', page)
    assert "no MLflow UI runs for this store" in page  # a local store, no UI: no dead link
    # the store has what the view drew: 4 workers and the mean, step by step
    import mlflow

    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    for metric in METRICS:
        for key in [f"{metric}/worker_{w}" for w in range(WORKERS)] + [metric]:
            assert len(client.get_metric_history(run.info.run_id, key)) == ROUNDS * STEPS, key


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (.ci/setup installs it when run as root)")
    return path


def test_the_exported_notebook_draws_the_chart_in_a_browser(executed):
    import numpy as np
    from nbconvert import HTMLExporter
    from PIL import Image

    nb, _, _, tmp = executed
    body, _ = HTMLExporter().from_notebook_node(nb)
    # a magenta frame around the chart, so it can be found in the screenshot; its inside is the browser's drawing
    marker = '<style>img[alt="live view chart"]{outline:6px solid #ff00ff;margin:12px}</style>'
    page = tmp / "05_live_view.html"
    page.write_text(body.replace("</head>", marker + "</head>", 1), encoding="utf-8")
    shot = tmp / "screenshot.png"
    profile = tmp / "chromium-profile"
    done = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1400,9000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.exists(), done.stderr[-3000:]
    screen = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    magenta = (screen[:, :, 0] > 240) & (screen[:, :, 1] < 20) & (screen[:, :, 2] > 240)
    rows, cols = np.nonzero(magenta)
    assert rows.size, "the chart's frame is not in the screenshot"
    inside = screen[rows.min() + 6 : rows.max() - 5, cols.min() + 6 : cols.max() - 5]

    show = nb.cells[_cell_index(nb, "details.show()")]
    (output,) = [o for o in show.outputs if o.output_type == "display_data"]
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", output.data["text/html"]).group(1))
    chart = Image.open(io.BytesIO(png))
    background = Image.new("RGBA", chart.size, "white")
    expected = np.asarray(Image.alpha_composite(background, chart.convert("RGBA")).convert("RGB")).astype(int)
    assert inside.shape == expected.shape, (inside.shape, expected.shape)
    not_white = (inside < 230).any(axis=2).mean()
    assert not_white > 0.02, not_white  # axes, curves and labels are drawn
    assert np.abs(inside - expected).mean() < 8  # the browser drew the view's chart
