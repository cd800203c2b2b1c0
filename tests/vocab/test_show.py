"""``spark-tracking show`` on a known run (exact text), ``--plot`` / ``--compare`` PNGs, and
``spark-tracking ui`` serving the store on 127.0.0.1 and stopping."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from conftest import QUIET_ENV, free_port
from mlflow.entities import Metric, Param, RunTag
from PIL import Image

from spark_tracking import Run, cli, show


def known_run(client, name="known", scale=1.0, extra_metric=None) -> str:
    """A run as forwarding leaves it: loss/worker_0..1 and their mean loss, plus acc, params,
    tags, a text, a table and an image logged with the AML vocabulary."""
    experiment = client.create_experiment(f"show-{name}")
    run_id = client.create_run(experiment, run_name=name).info.run_id
    metrics = [Metric("acc", v * scale, 1000 + s, s) for s, v in enumerate([0.5, 0.75, 0.625])]
    for w in range(2):
        metrics += [Metric(f"loss/worker_{w}", (10 * w + 4 - s) * scale, 1000 + s, s) for s in range(4)]
    metrics += [Metric("loss", (9 - s) * scale, 1000 + s, s) for s in range(4)]
    if extra_metric:
        metrics.append(Metric(extra_metric, 1.0, 1000, 0))
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param("lr", "0.1"), Param("optimizer", "sgd")],
        tags=[RunTag("team", "vision"), RunTag("mlflow.user", "hidden")],
    )
    run = Run(run_id, tracking_uri=client.tracking_uri)
    run.log("note", "first")
    run.log("note", "second")
    run.log_row("per_epoch", epoch=0, acc=0.5)
    run.log_row("per_epoch", epoch=1, acc=0.75)
    client.set_terminated(run_id)
    return run_id


def test_show_prints_the_known_run_exactly(store, capsys):
    run_id = known_run(store)
    assert cli.main(["show", run_id, "--tracking-uri", store.tracking_uri]) == 0
    assert (
        capsys.readouterr().out
        == f"""\
run {run_id}  name known  status FINISHED  experiment show-known

metric  worker   last  min   max  count
------  ------  -----  ---  ----  -----
acc             0.625  0.5  0.75      3
loss    mean        6    6     9      4
        0           1    1     4      4
        1          11   11    14      4

params
  lr         0.1
  optimizer  sgd

tags
  team  vision

text
  note  second  (2 values)

tables
  per_epoch  2 rows: epoch, acc
"""
    )


def test_show_uses_the_configured_store_and_all_tags_shows_system_tags(store, capsys):
    run_id = known_run(store)
    assert cli.main(["show", run_id, "--all-tags"]) == 0  # the store configure() set
    out = capsys.readouterr().out
    assert re.search(r"^  mlflow\.user +hidden$", out, re.M) and re.search(r"^  aml\.text\.note +", out, re.M)


def png_panels(path) -> tuple[tuple[int, int], str]:
    with Image.open(path) as image:
        return image.size, image.info.get("Description", "")


def test_plot_writes_one_panel_per_metric(store, tmp_path, capsys):
    run_id = known_run(store, extra_metric="lr_now")
    out = tmp_path / "curves.png"
    assert cli.main(["show", run_id, "--plot", str(out)]) == 0
    assert capsys.readouterr().out.endswith(f"plot: {out} (3 panels)\n")
    size, description = png_panels(out)
    assert size == (2 * 640, 2 * 400)  # 3 panels: two per row, two rows
    assert description == "spark-tracking show: 3 panels: acc, loss, lr_now"
    fig = show.plot_runs([show.load_run(store, run_id)])
    loss = [ax for ax in fig.axes if ax.get_title() == "loss"][0]
    assert [line.get_label() for line in loss.get_lines()] == ["worker 0", "worker 1", "mean"]


def test_compare_overlays_runs_and_tables_their_last_values(store, tmp_path, capsys):
    first = known_run(store, "first")
    second = known_run(store, "second", scale=2.0, extra_metric="only_here")
    out = tmp_path / "compare.png"
    assert cli.main(["show", first, "--compare", second, "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("run ") == 2
    assert (
        f"""\
comparison
metric (last)  first ({first[:8]})  second ({second[:8]})
-------------  ----------------  -----------------
acc                       0.625               1.25
loss                          6                 12
only_here                     -                  1
"""
        in text
    )
    size, description = png_panels(out)
    assert size == (2 * 640, 2 * 400)
    assert description == "spark-tracking show: 3 panels: acc, loss, only_here"
    fig = show.plot_runs([show.load_run(store, first), show.load_run(store, second)])
    loss = [ax for ax in fig.axes if ax.get_title() == "loss"][0]
    assert len(loss.get_lines()) == 6  # two workers and the mean of each run


def test_a_single_metric_is_one_panel(store, tmp_path):
    with Run.start_logging("one") as run:
        run.log("x", 1)
    out = tmp_path / "one.png"
    assert cli.main(["show", run.id, "--plot", str(out)]) == 0
    assert png_panels(out) == ((640, 400), "spark-tracking show: 1 panels: x")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "0123456789abcdef"], "error: run '0123456789abcdef' not found in sqlite:"),
        (["show", "RUN", "--plot", "out.jpg"], "--plot 'out.jpg': the output file must end in .png"),
        (["show", "RUN", "--plot", "/no/such/dir/out.png"], "folder '/no/such/dir' does not exist"),
    ],
)
def test_show_refuses_bad_input_clearly(store, capsys, argv, message):
    assert cli.main(argv) != 0
    assert message in capsys.readouterr().err


def test_plotting_a_run_without_metrics_says_so(store, tmp_path, capsys):
    with Run.start_logging("empty") as run:
        run.tag("only", "a tag")
    assert cli.main(["show", run.id, "--plot", str(tmp_path / "x.png")]) == 1
    assert f"run {run.id} has no metrics to plot" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def _closed(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    except OSError:
        return True
    return False


def test_ui_server_answers_health_on_loopback_and_stops(store, tmp_path):
    port = free_port()
    server = show.UiServer(store.tracking_uri, port=port).start()
    try:
        assert server.url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()
    assert server.proc.poll() is not None
    assert _closed(port)


def test_ui_command_prints_the_url_serves_the_embedded_store_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_TRACKING_", "MLFLOW_", "_MLFLOW_"))}
    env.update(QUIET_ENV, SPARK_TRACKING_HOME=str(tmp_path / "st-home"))
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark_tracking.cli", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()  # printed once the server answers /health
        assert line.startswith(f"MLflow UI: http://127.0.0.1:{port}  (store sqlite:///"), (
            line + (tmp_path / "ui.log").read_text()
        )
        assert str(tmp_path / "st-home" / "mlflow.db") in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert _closed(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        log.close()


def test_ui_refuses_a_remote_configured_store(monkeypatch, capsys):
    monkeypatch.setenv("SPARK_TRACKING_TRACKING_URI", "https://mlflow.example.invalid")
    assert cli.main(["ui"]) == 2
    assert "is a remote store with its own UI" in capsys.readouterr().err


def test_system_metrics_get_a_row_per_worker_naming_the_outliers():
    metrics = {
        "loss/worker_0": [(0, 1.0)],
        "system/cpu_utilization_percentage": [(1, 5.0)],  # MLflow's own, the driver's machine
        "system/cpu_utilization_percentage/worker_0": [(1, 40.0), (2, 60.0)],
        "system/cpu_utilization_percentage/worker_1": [(1, 2.0), (2, 4.0)],
        "system/system_memory_usage_megabytes/worker_0": [(1, 100.0), (2, 120.0)],
        "system/system_memory_usage_megabytes/worker_1": [(1, 900.0), (2, 400.0)],
        "system/gpu_0_utilization_percentage/worker_0": [(1, 90.0)],
        "system/gpu_1_utilization_percentage/worker_0": [(1, 70.0)],
        "system/gpu_2_utilization_percentage/worker_1": [(1, 10.0)],
    }
    text = "\n".join(show.format_system_metrics(metrics))
    assert text == "\n".join(
        [
            "",
            "system metrics per worker",
            "worker  cpu % mean  cpu % last  memory MB max  gpu % mean",
            "------  ----------  ----------  -------------  ----------",
            "driver           5           5              -           -",
            "0               50          60            120          80",
            "1                3           4            900          10",
            "busiest CPU: worker 0 (50)",
            "most memory: worker 1 (900)",
            "least-used GPU: worker 1 (10)",
        ]
    )
    report = show.format_report(show.RunData("r", metrics=metrics))
    assert "system/cpu" not in report  # not repeated in the metrics table
    assert show.format_system_metrics({"loss": [(0, 1.0)]}) == []
