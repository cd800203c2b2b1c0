"""The stored layout, from its one owner (spark_tracking.layout): names written and read back."""

from spark_tracking import layout


def test_the_worker_id_is_the_rank_when_set_else_the_partition():
    assert layout.worker_id([3, 7, 0, 41, None, 0]) == 7
    assert layout.worker_id([3, 7, 0, 41, 2, 0]) == 2
    assert layout.worker_id([3, 7, 0, 41, None]) == 7  # an old client's five items


def test_worker_series_and_their_mean_group_under_the_key():
    keys = [layout.worker_metric_key("loss", w) for w in (10, 2, 0)] + ["loss", "acc", "acc/worker_x", "a/b"]
    assert layout.worker_metric_key("loss", 3) == "loss/worker_3"
    assert layout.split_metric_key("nested/loss/worker_12") == ("nested/loss", 12)
    assert layout.split_metric_key("loss/worker_") == ("loss/worker_", None)
    assert layout.group_metrics(keys) == {
        "a/b": ("a/b", []),
        "acc": ("acc", []),
        "acc/worker_x": ("acc/worker_x", []),
        "loss": ("loss", [(0, "loss/worker_0"), (2, "loss/worker_2"), (10, "loss/worker_10")]),
    }
    assert layout.group_metrics(["m/worker_1"]) == {"m": (None, [(1, "m/worker_1")])}


def test_text_tags_and_artifact_paths():
    assert layout.text_tag("note") == "aml.text.note"
    assert layout.text_name("aml.text.note") == "note" and layout.text_name("mlflow.user") is None
    assert layout.table_path("t") == "aml/tables/t.json"
    assert layout.table_path("t", (4, 1)) == "aml/tables/t/stage_4/worker_1.json"
    assert layout.image_path("i") == "aml/images/i.png"
    assert layout.image_path("i", (4, 1)) == "aml/images/i/stage_4/worker_1.png"


def test_task_parts_are_found_in_stage_then_worker_order():
    files = [
        "aml/tables/t/stage_10/worker_0.json",
        "aml/tables/t/stage_2/worker_11.json",
        "aml/tables/t/stage_2/worker_3.json",
        "aml/tables/t/stage_2/worker_3.png",
        "aml/tables/t/notes.txt",
        "aml/tables/tt/stage_1/worker_0.json",
    ]
    assert layout.task_parts(files, layout.table_folder("t"), "json") == [
        "aml/tables/t/stage_2/worker_3.json",
        "aml/tables/t/stage_2/worker_11.json",
        "aml/tables/t/stage_10/worker_0.json",
    ]


def test_a_table_file_round_trips_with_columns_in_first_seen_order():
    rows = [{"epoch": 0, "acc": 0.5}, {"epoch": 1, "note": "x"}]
    data = layout.encode_table(rows)
    assert data == b'{"columns": ["epoch", "acc", "note"], "data": [[0, 0.5, null], [1, null, "x"]]}'
    assert layout.decode_table(data) == [
        {"epoch": 0, "acc": 0.5, "note": None},
        {"epoch": 1, "acc": None, "note": "x"},
    ]
