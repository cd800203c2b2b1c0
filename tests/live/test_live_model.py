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
    assert mean == [(0, 2.0)]  # step 1: worker 1 is not there yet
    assert snap.partial["loss"] == [(1, 0.5)]
    (row,) = snap.rows
    assert (row.metric, row.step, row.mean, row.low, row.high, row.latest, row.workers, row.points) == (
        "loss",
        0,
        2.0,
        1.0,
        3.0,
        1,
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
    assert (row.latest, row.step, row.points) == (9_999, steps[-1], 30_000)  # the latest point is always known
    assert math.isclose(row.mean, 1.0 / (steps[-1] + 1) + 1)  # the table's mean: at a step every worker has
    assert [w.step for w in snap.workers] == [9_999] * 3


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


def test_a_second_wave_of_workers_makes_earlier_steps_partial_not_a_jump():
    """More tasks than cores: workers 2 and 3 start once 0 and 1 are done. The mean of a step
    covers every worker or is drawn apart as partial; the table's step is one all workers reached."""
    run = LiveRun()
    for worker in (0, 1):
        run.take(*_frame(worker, [("loss", 10.0 + worker, s) for s in range(10)]))
    snap = run.snapshot(run_id="r")
    assert [s for s, _ in snap.curves["loss"][1]] == list(range(10))
    run.take(*_frame(2, [("loss", 0.0, s) for s in range(3)]))
    run.take(*_frame(3, [("loss", 2.0, s) for s in range(3)]))
    snap = run.snapshot(run_id="r")
    _, mean = snap.curves["loss"]
    assert mean == [(s, (10 + 11 + 0 + 2) / 4) for s in range(3)]  # over all four workers only
    assert [s for s, _ in snap.partial["loss"]] == list(range(3, 10))
    (row,) = snap.rows
    assert (row.step, row.latest, row.low, row.high) == (2, 9, 0.0, 11.0)


def test_each_worker_has_a_row_with_state_attempt_step_and_latest_values():
    run = LiveRun()
    run.take([3, 0, 0, 100, None, 0], [("loss", 0.5, 1_700_000_000_000, 4), ("acc", 0.9, 1_700_000_000_500, 4)])
    run.take([3, 1, 0, 101, None, 0], [("loss", 0.7, 1_700_000_001_000, 2)])
    run.task_done([3, 0, 0, 100, None, 0], 1_700_000_002_000)
    snap = run.snapshot(run_id="r")
    w0, w1 = snap.workers
    assert (w0.worker, w0.state, w0.stage, w0.attempt, w0.step, w0.last, w0.points) == (
        0,
        "done",
        3,
        0,
        4,
        {"acc": 0.9, "loss": 0.5},
        2,
    )
    assert w0.last_seen_ms == 1_700_000_002_000
    assert (w1.state, w1.step, w1.last, w1.last_seen_ms) == ("running", 2, {"loss": 0.7}, 1_700_000_001_000)


def test_a_new_attempt_shows_the_failed_one_and_a_failure_event_gives_its_error():
    run = LiveRun()
    run.take([3, 1, 0, 101, None, 0], [("loss", 0.7, 1, s) for s in range(5)])
    run.task_failed([3, 1, 0, 101, None, 0], "Traceback (most recent call last):\n  ...\nValueError: bad batch")
    snap = run.snapshot(run_id="r")
    assert (snap.workers[0].state, snap.workers[0].error) == ("failed", "Traceback (most recent call last):")
    run.take([3, 1, 1, 107, None, 0], [("loss", 0.6, 1, s) for s in range(8)])  # the retry
    snap = run.snapshot(run_id="r")
    # the retry's row carries no error of its own: the failed attempt's stays in the failures
    assert (snap.workers[0].state, snap.workers[0].attempt, snap.workers[0].step, snap.workers[0].error) == (
        "retried",
        1,
        7,
        "",
    )
    assert [(f.worker, f.stage, f.attempt) for f in snap.failures] == [(1, 3, 0)]  # not counted twice
    assert snap.failed_tasks == 1
    # a retry nobody reported: the failed attempt is inferred from the new attempt number
    run.take([3, 2, 0, 102, None, 0], [("loss", 0.5, 1, 0)])
    run.take([3, 2, 1, 108, None, 0], [("loss", 0.5, 1, 1)])
    assert [(f.worker, f.attempt, f.error) for f in run.snapshot(run_id="r").failures][1:] == [(2, 0, "")]
    assert run.snapshot(run_id="r").workers[1].state == "retried"


def test_a_worker_whose_stage_ended_without_its_word_is_unreported_until_a_late_done():
    run = LiveRun()
    for partition in range(3):
        run.take([3, partition, 0, 100 + partition, None, 0], [("loss", 0.5, 1, 0)])
    run.task_done([3, 0, 0, 100, None, 0])
    run.task_failed([3, 1, 0, 101, None, 0], "ValueError: bad batch")
    run.take([4, 0, 0, 110, None, 0], [("loss", 0.4, 1, 1)])  # the next stage runs
    run.stage_ended(3)  # Spark: stage 3 runs no task any more; worker 2 (a crashed worker) never said so
    states = [(w.worker, w.stage, w.state) for w in run.snapshot(run_id="r").workers]
    assert states == [(0, 4, "running"), (1, 3, "failed"), (2, 3, "unreported")]
    run.task_done([3, 2, 0, 102, None, 0])  # its "done" arrives late (from a spill file)
    assert run.snapshot(run_id="r").workers[2].state == "done"


def test_history_from_the_store_and_the_driver_s_own_points():
    run = LiveRun()
    for s in range(5):
        run.add_point("loss", 0, s, 1.0, 1_700_000_000_000 + s)
        run.add_point("loss", 1, s, 3.0, 1_700_000_000_000 + s)
        run.add_point("val_loss", None, s, 0.5, 1_700_000_000_000 + s)
    run.take(*_frame(0, [("loss", 1.0, s) for s in range(3, 7)]))  # the relay repeats steps 3, 4
    snap = run.snapshot(run_id="r")
    assert snap.curves["loss"][1] == [(s, 2.0) for s in range(5)]
    assert snap.driver["val_loss"] == [(s, 0.5) for s in range(5)]
    assert snap.curves["val_loss"] == ({}, [])
    assert (snap.loaded, snap.received, snap.points) == (15, 2, 17)  # repeats taken once
    rows = {r.metric: r for r in snap.rows}
    assert (rows["val_loss"].driver, rows["val_loss"].workers) == (0.5, 0)
