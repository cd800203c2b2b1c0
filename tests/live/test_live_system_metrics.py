"""Workers' system metrics in the live view: a table with a row per worker (CPU, memory, GPU)
and the outlying workers named, never a training curve; bounded per worker and name."""

from __future__ import annotations

import io

from spark_tracking import layout
from spark_tracking.live import RunDetails
from spark_tracking.live.model import LiveRun
from spark_tracking.live.notebook import table_html
from spark_tracking.live.text import format_summary

T0 = 1_796_000_000  # steps of system metrics are Unix seconds


def _frame(partition, points):
    """A relay worker list and metrics as (key, value, timestamp, step): a system metric's step
    ``s`` seconds after T0, a training metric's step ``s``."""
    return [3, partition, 0, 100 + partition, None, 0], [
        (k, v, (T0 + s) * 1000, T0 + s if k.startswith("system/") else s) for k, v, s in points
    ]


def _system_run() -> LiveRun:
    """Worker 0 trains and burns CPU; worker 1 sleeps and holds memory; both log a loss."""
    run = LiveRun()
    for t in range(3):
        run.take(*_frame(0, [("loss", 1.0 / (t + 1), t)]))
        run.take(*_frame(1, [("loss", 2.0 / (t + 1), t)]))
        run.take(
            *_frame(
                0,
                [
                    ("system/cpu_utilization_percentage", 40.0 + 10 * t, 10 * t),
                    ("system/system_memory_usage_megabytes", 100.0 + t, 10 * t),
                    ("system/gpu_0_utilization_percentage", 90.0, 10 * t),
                ],
            )
        )
        run.take(
            *_frame(
                1,
                [
                    ("system/cpu_utilization_percentage", 2.0, 10 * t),
                    ("system/system_memory_usage_megabytes", 900.0 - t, 10 * t),
                    ("system/gpu_1_utilization_percentage", 10.0, 10 * t),
                ],
            )
        )
    return run


SYSTEM_TABLE = [
    "system metrics per worker",
    "worker  cpu % mean  cpu % last  memory MB max  gpu % mean",
    "0               50          60            102          90",
    "1                2           2            900          10",
    "busiest CPU: worker 0 (50)",
    "most memory: worker 1 (900)",
    "least-used GPU: worker 1 (10)",
]


def test_system_metrics_are_a_table_per_worker_not_training_curves():
    snap = _system_run().snapshot(run_id="r")
    assert list(snap.curves) == ["loss"]  # no chart panel, no metrics-table row for system/...
    assert [r.metric for r in snap.rows] == ["loss"]
    assert [(w.worker, w.step, w.last, w.points) for w in snap.workers] == [
        (0, 2, {"loss": 1.0 / 3}, 3),  # the step is the training step, not a sample's Unix time
        (1, 2, {"loss": 2.0 / 3}, 3),
    ]
    assert snap.system == [
        ["worker", "cpu % mean", "cpu % last", "memory MB max", "gpu % mean"],
        ["0", "50", "60", "102", "90"],
        ["1", "2", "2", "900", "10"],
    ]
    assert snap.system_notes == [
        "busiest CPU: worker 0 (50)",
        "most memory: worker 1 (900)",
        "least-used GPU: worker 1 (10)",
    ]
    assert snap.points == 6 + 18


def test_the_text_summary_and_the_notebook_show_the_system_table():
    snap = _system_run().snapshot(run_id="r")
    text = format_summary(snap)
    assert "\n".join(SYSTEM_TABLE) in text, text
    assert "system/" not in text
    page = table_html(snap)
    assert "<b>system metrics per worker</b>" in page
    assert 'class="spark-tracking-system"' in page
    assert "<td" in page and ">900</td>" in page
    assert "most memory: worker 1 (900)" in page
    assert "system/" not in page


def test_only_system_metrics_yet_still_shows_their_table():
    run = LiveRun()
    run.take(*_frame(0, [("system/cpu_utilization_percentage", 12.0, 0)]))
    text = format_summary(run.snapshot(run_id="r"))
    assert "no points yet" not in text
    assert "system metrics per worker\nworker  cpu % mean  cpu % last\n" in text, text


def test_memory_per_worker_and_name_is_four_numbers_whatever_the_run_s_length():
    run = LiveRun()
    for t in range(5000):
        run.take(*_frame(t % 2, [("system/cpu_utilization_percentage", float(t % 100), t)]))
    run.take(*_frame(0, [("system/cpu_utilization_percentage", 1.0, 4998)]))  # a step already taken: not counted
    assert sorted(run.system) == [
        "system/cpu_utilization_percentage/worker_0",
        "system/cpu_utilization_percentage/worker_1",
    ]
    assert run.system["system/cpu_utilization_percentage/worker_0"].summary.count == 2500
    assert run.snapshot(run_id="r").system[1] == ["0", "49", "98"]


def test_a_view_opened_late_shows_the_stored_system_metrics_with_the_driver_s_machine(sqlite_uri):
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient(sqlite_uri)
    run_id = client.create_run(client.create_experiment("live-system")).info.run_id
    metrics = []
    for t in range(4):
        ts, step = (T0 + 10 * t) * 1000, T0 + 10 * t
        metrics += [
            Metric(layout.worker_metric_key("system/cpu_utilization_percentage", 0), 80.0, ts, step),
            Metric(layout.worker_metric_key("system/cpu_utilization_percentage", 1), 5.0 + t, ts, step),
            Metric(layout.worker_metric_key("system/system_memory_usage_megabytes", 1), 300.0, ts, step),
            Metric("system/cpu_utilization_percentage", 20.0, ts, step),  # MLflow's own, the driver's machine
            Metric(layout.worker_metric_key("loss", 0), 1.0 / (t + 1), ts, t),
            Metric(layout.worker_metric_key("loss", 1), 2.0 / (t + 1), ts, t),
        ]
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, "FINISHED")
    out = io.StringIO()
    view = RunDetails(run_id, tracking_uri=sqlite_uri)
    view.show(file=out)
    assert view.wait(0)
    snap = view.snapshot()
    assert list(snap.curves) == ["loss"]
    assert snap.driver == {}
    assert snap.system == [
        ["worker", "cpu % mean", "cpu % last", "memory MB max"],
        ["driver", "20", "20", "-"],
        ["0", "80", "80", "-"],
        ["1", "6.5", "8", "300"],
    ]
    assert snap.system_notes == ["busiest CPU: worker 0 (80)"]
    text = out.getvalue()
    assert "system metrics per worker\nworker  cpu % mean  cpu % last  memory MB max\n" in text, text
    assert "\ndriver          20          20              -\n" in text, text
    assert "\nbusiest CPU: worker 0 (80)\n" in text, text
