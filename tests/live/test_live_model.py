"""The live view's per-run state: one curve per worker and their mean, within bounded memory."""

from __future__ import annotations

import math

from spark_tracking.live.model import LiveRun, worker_of


def _frame(partition, points, rank=None):
    """A relay worker list and metrics as (key, value, timestamp, step)."""
    return [3, partition, 0, 100 + partition, rank, 0], [(k, v, 1_700_000_000_000, s) for k, v, s in points]


def test_a_curve_per_worker_and_the_mean_step_by_step():
    run = LiveRun()
    run.take(*_frame(0, [("loss", 1.0, 0), ("loss", 0.5, 1)]))
    run.take(*_frame(1, [("loss", 3.0, 0)]))
    snap = run.snapshot(run_id="r")
    workers, mean = snap.curves["loss"]
    assert workers == {0: [(0, 1.0), (1, 0.5)], 1: [(0, 3.0)]}
    assert mean == [(0, 2.0), (1, 0.5)]
    (row,) = snap.rows
    assert (row.metric, row.step, row.mean, row.low, row.high, row.workers, row.points) == (
        "loss",
        1,
        1.75,
        0.5,
        3.0,
        2,
        3,
    )
    assert snap.points == 3


def test_workers_are_named_as_the_sink_names_them_rank_first():
    assert worker_of([0, 5, 0, 1, None, 0]) == 5
    assert worker_of([0, 5, 0, 1, 2, 0]) == 2
    assert worker_of([0, 5, 0, 1, 2]) == 2  # an old client's five-item list


def test_a_retried_attempt_does_not_redraw_steps_the_worker_already_logged():
    run = LiveRun()
    run.take(*_frame(0, [("loss", 1.0, 0), ("loss", 0.9, 1), ("loss", 0.8, 2)]))
    run.take(*_frame(0, [("loss", 5.0, 0), ("loss", 5.0, 1)]))  # attempt 2 starts over
    run.take(*_frame(0, [("loss", 0.7, 2), ("loss", 0.6, 3)]))  # the same step replaces, then new ones
    workers, mean = run.snapshot(run_id="r").curves["loss"]
    assert workers[0] == [(0, 1.0), (1, 0.9), (2, 0.7), (3, 0.6)]
    assert mean == workers[0]


def test_memory_is_bounded_and_the_curves_stay_aligned():
    run = LiveRun(max_points=100)
    for start in range(0, 10_000, 500):
        for worker in range(3):
            run.take(*_frame(worker, [("loss", 1.0 / (s + 1) + worker, s) for s in range(start, start + 500)]))
    snap = run.snapshot(run_id="r")
    workers, mean = snap.curves["loss"]
    steps = [s for s, _ in workers[0]]
    assert 50 <= len(steps) <= 100 and steps[0] == 0
    assert all([s for s, _ in points] == steps for points in workers.values())  # the same steps kept
    assert [s for s, _ in mean] == steps
    assert all(math.isclose(v, 1.0 / (s + 1) + 1) for s, v in mean)  # mean of +0, +1, +2
    (row,) = snap.rows
    assert (row.step, row.points) == (9_999, 30_000)  # the latest point is always known
    assert math.isclose(row.mean, 1.0 / 10_000 + 1)


def test_sparse_or_odd_steps_are_thinned_without_emptying_a_curve():
    run = LiveRun(max_points=10)
    run.take(*_frame(0, [("loss", float(s), s) for s in range(1, 200, 2)]))
    run.take(*_frame(1, [("acc", float(s), s) for s in range(0, 100_000, 1000)]))
    snap = run.snapshot(run_id="r")
    for key in ("loss", "acc"):
        workers, mean = snap.curves[key]
        (points,) = workers.values()
        assert 5 <= len(points) <= 10 and mean == points, (key, points)


def test_metrics_and_workers_beyond_the_limits_are_counted_not_drawn():
    run = LiveRun(max_metrics=2, max_workers=2)
    for worker in range(4):
        run.take(*_frame(worker, [("a", 1.0, 0), ("b", 1.0, 0), ("c", 1.0, 0)]))
    snap = run.snapshot(run_id="r")
    assert sorted(snap.curves) == ["a", "b"]
    assert all(sorted(workers) == [0, 1] for workers, _ in snap.curves.values())
    assert snap.hidden_points == 4 + 2 * 2  # "c" from 4 workers; workers 2 and 3 of "a" and "b"
    assert snap.points == 12
