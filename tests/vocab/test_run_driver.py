"""The AML run vocabulary on the driver, through a real SQLite store: every call round-trips
and ``get_metrics()`` returns what was logged, types included."""

from __future__ import annotations

import io
import json
import math

import mlflow
import pandas as pd
import pytest
from conftest import history

from spark_tracking import Run
from spark_tracking.run import InvalidInput


def test_numbers_build_series_and_a_single_value_stays_a_scalar(store):
    run = Run.start_logging("numbers")
    run.log("acc", 0.5)
    for loss in (3, 2.5, 1):
        run.log("loss", loss)
    run.log("nan", float("nan"))
    metrics = run.get_metrics()
    assert metrics["acc"] == 0.5 and type(metrics["acc"]) is float
    assert metrics["loss"] == [3.0, 2.5, 1.0] and all(type(v) is float for v in metrics["loss"])
    assert math.isnan(metrics["nan"])
    assert history(store, run.id, "loss", flush=False) == [(0, 3.0), (1, 2.5), (2, 1.0)]
    run.complete()
    assert store.get_run(run.id).info.status == "FINISHED"


def test_a_new_run_object_continues_the_series_in_the_store(store):
    with Run.start_logging("continue") as run:
        run.log("loss", 1.0)
        Run(run.id).log("loss", 0.5)  # a second object on the same run: next step, not step 0
        Run.get_context().log("loss", 0.25)
    assert history(store, run.id, "loss", flush=False) == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert store.get_run(run.id).info.status == "FINISHED"


def test_text_values_are_kept_as_a_tag_and_come_back_as_text(store):
    with Run.start_logging("text") as run:
        run.log("phase", "warmup")
        run.log("note", "first")
        run.log("note", "second")
        assert run.get_metrics() == {"phase": "warmup", "note": ["first", "second"]}
        assert store.get_run(run.id).data.tags["aml.text.note"] == '["first", "second"]'
        assert store.get_run(run.id).data.metrics == {}


def test_log_list_of_numbers_and_of_text(store):
    with Run.start_logging("lists") as run:
        run.log_list("curve", [1, 4, 9, 16])
        run.log_list("labels", ["cat", "dog"])
        run.log_list("curve", [25])
        metrics = run.get_metrics()
    assert metrics == {"curve": [1.0, 4.0, 9.0, 16.0, 25.0], "labels": ["cat", "dog"]}
    assert history(store, run.id, "curve", flush=False)[-1] == (4, 25.0)


def test_rows_build_a_table_readable_by_mlflow_load_table(store):
    with Run.start_logging("rows") as run:
        for epoch in range(3):
            run.log_row("per_epoch", epoch=epoch, acc=0.5 + epoch / 10, note=f"e{epoch}")
        run.log_table("per_epoch", {"epoch": [3], "acc": [0.9], "note": ["last"]})
        table = run.get_metrics()["per_epoch"]
    assert table == {"epoch": [0, 1, 2, 3], "acc": [0.5, 0.6, 0.7, 0.9], "note": ["e0", "e1", "e2", "last"]}
    assert [type(v) for v in table["epoch"]] == [int] * 4
    assert run.get_file_names() == ["aml/tables/per_epoch.json"]
    tags = store.get_run(run.id).data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": "aml/tables/per_epoch.json", "type": "table"}]
    frame = store.load_table(store.get_run(run.id).info.experiment_id, "aml/tables/per_epoch.json", [run.id])
    assert frame["epoch"].tolist() == [0, 1, 2, 3] and frame["note"].tolist() == ["e0", "e1", "e2", "last"]


def test_log_table_and_rows_with_different_columns(store):
    with Run.start_logging("table") as run:
        run.log_table("scores", {"model": ["a", "b"], "auc": [0.7, 0.8]})
        Run(run.id).log_row("scores", model="c", auc=0.9, extra=True)  # another object appends
        assert run.get_metrics("scores") == {
            "scores": {"model": ["a", "b", "c"], "auc": [0.7, 0.8, 0.9], "extra": [None, None, True]}
        }


def test_images_from_a_file_and_from_a_figure(store, png):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([1, 2, 3])
    with Run.start_logging("images") as run:
        run.log_image("file", path=png)
        run.log_image("figure", plot=fig)
        metrics = run.get_metrics()
        files = run.get_file_names()
    assert metrics == {"figure": "aml/images/figure.png", "file": "aml/images/file.png"}
    assert files == ["aml/images/figure.png", "aml/images/file.png"]
    local = store.download_artifacts(run.id, "aml/images/figure.png")
    with open(local, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_tags_files_and_identity(store, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01weights")
    with Run.start_logging("identity", tags={"team": "vision"}) as run:
        run.tag("reviewed")
        run.tag("lr_schedule", "cosine")
        run.upload_file("outputs/model.bin", source)
        run.upload_file("outputs/notes.txt", io.BytesIO(b"hello"))
        assert run.get_file_names() == ["outputs/model.bin", "outputs/notes.txt"]
        tags = run.get_tags()
        assert (tags["team"], tags["reviewed"], tags["lr_schedule"]) == ("vision", "", "cosine")
        assert run.name == "identity" and run.parent is None
        assert run.get_status() == "RUNNING"
        assert Run.get_context() == run
        assert run.get_portal_url().endswith(f"/runs/{run.id}")
    with open(store.download_artifacts(run.id, "outputs/model.bin"), "rb") as fh:
        assert fh.read() == b"\x00\x01weights"


def test_parent_of_nested_and_child_runs(store):
    with Run.start_logging("parent") as parent:
        nested = Run.start_logging("nested")
        assert nested.parent == parent
        nested.complete()
        assert mlflow.active_run().info.run_id == parent.id
        child = parent.child_run("child")
        child.log("x", 1)
        assert child.parent == parent and child.get_metrics() == {"x": 1.0}
        child.complete()
    assert store.get_run(child.id).info.status == "FINISHED"
    assert store.get_run(nested.id).info.status == "FINISHED"


def test_a_failure_inside_the_with_block_marks_the_run_failed(store):
    with pytest.raises(ZeroDivisionError):
        with Run.start_logging("fails") as run:
            1 / 0
    assert store.get_run(run.id).info.status == "FAILED"


def test_get_context_starts_a_run_when_none_is_active(store):
    assert mlflow.active_run() is None
    run = Run.get_context()
    assert mlflow.active_run().info.run_id == run.id
    run.log("started", 1)
    run.complete()
    assert mlflow.active_run() is None


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.log("flag", True), "run.log('flag') got True (bool)"),
        (lambda r: r.log("bad name!", 1), "characters MLflow refuses"),
        (lambda r: r.log("obj", {"a": 1}), "must be a number"),
        (lambda r: r.log_list("mixed", [1, "a"]), "mixes text and numbers"),
        (lambda r: r.log_list("empty", []), "empty list"),
        (lambda r: r.log_list("text", "abc"), "list of numbers or strings, not str"),
        (lambda r: r.log_row("t"), "no columns"),
        (lambda r: r.log_row("a/b", x=1), "no slashes"),
        (lambda r: r.log_row("t", x=object()), "column 'x' got"),
        (lambda r: r.log_table("t", {"a": [1, 2], "b": [1]}), "different lengths {'a': 2, 'b': 1}"),
        (lambda r: r.log_image("img"), "exactly one of path="),
        (lambda r: r.log_image("img", plot="figure"), "not str"),
        (lambda r: r.upload_file("../x", __file__), "relative artifact path"),
        (lambda r: r.upload_file("x", "/no/such/file"), "is not a file"),
    ],
)
def test_bad_input_is_refused_naming_the_value_and_the_rule(store, call, message):
    with Run.start_logging("bad") as run:
        with pytest.raises(InvalidInput) as info:
            call(run)
        assert message in str(info.value)
        assert run.get_metrics() == {}


def test_a_non_png_image_file_is_refused(store, tmp_path):
    text = tmp_path / "plot.png"
    text.write_text("not a png")
    with Run.start_logging("bad-image") as run:
        with pytest.raises(InvalidInput, match="is not a PNG file"):
            run.log_image("plot", path=text)


def test_the_table_json_is_what_pandas_reads_in_split_orientation(store):
    with Run.start_logging("split") as run:
        run.log_row("t", a=1, b="x")
    with open(store.download_artifacts(run.id, "aml/tables/t.json")) as fh:
        doc = json.load(fh)
    assert doc == {"columns": ["a", "b"], "data": [[1, "x"]]}
    assert pd.read_json(io.StringIO(json.dumps(doc)), orient="split").to_dict("list") == {"a": [1], "b": ["x"]}
