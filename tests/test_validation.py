"""Bad input at the call site: each value either accepted (documented coercion) or refused
with an error that names the value and the rule (spark_tracking.validation)."""

import math

import numpy as np
import pytest

from spark_tracking.validation import InvalidInput, check_key, metric_value, param_value, step_value, tag_value


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, 1),
        (0.5, 0.5),
        (np.float32(0.25), 0.25),
        (np.int64(3), 3),
        (np.array(2.5), 2.5),
        (float("inf"), float("inf")),
        (float("-inf"), float("-inf")),
    ],
)
def test_numbers_are_accepted(value, expected):
    got = metric_value("k", value)
    assert got == expected and type(got) in (int, float)


def test_nan_is_accepted():
    assert math.isnan(metric_value("k", float("nan")))
    assert math.isnan(metric_value("k", np.float64("nan")))


@pytest.mark.parametrize(
    "value, message",
    [
        (
            True,
            "metric 'k' got True (bool); a metric value must be a number (int or float, NaN and inf allowed). "
            "Log text with set_tag or log_param.",
        ),
        (
            None,
            "metric 'k' got None (NoneType); a metric value must be a number (int or float, NaN and inf allowed). "
            "Log text with set_tag or log_param.",
        ),
        (
            "1.0",
            "metric 'k' got '1.0' (str); a metric value must be a number (int or float, NaN and inf allowed). "
            "Log text with set_tag or log_param.",
        ),
        (
            np.array([1.0, 2.0]),
            "metric 'k' got an array of shape (2,); log one number per call (a 0-d array or "
            "scalar), e.g. value.mean().item()",
        ),
        ([1.0], "metric 'k' got [1.0] (list); a metric value must be a number"),
    ],
)
def test_non_numbers_are_refused_with_the_value_and_the_rule(value, message):
    with pytest.raises(InvalidInput) as err:
        metric_value("k", value)
    assert str(err.value) == message


def test_keys():
    assert check_key("train/loss-1.5 epoch:2") == "train/loss-1.5 epoch:2"
    with pytest.raises(InvalidInput, match=r"^metric key 'a{40}'... is 251 characters; MLflow allows at most 250$"):
        check_key("a" * 251)
    with pytest.raises(InvalidInput) as err:
        check_key("loss%")
    assert str(err.value) == (
        "metric key 'loss%' has characters MLflow refuses; use letters, digits, underscores (_), "
        "dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)"
    )
    with pytest.raises(InvalidInput, match=r"^param key must not be empty$"):
        check_key("", "param")


def test_params_tags_and_steps():
    assert param_value("lr", 0.1) == "0.1"
    with pytest.raises(
        InvalidInput,
        match=r"^param 'notes' value is 6001 characters; MLflow allows at most 6000. "
        r"Log long text as an artifact instead.$",
    ):
        param_value("notes", "x" * 6001)
    assert tag_value("t", None) == ""
    with pytest.raises(InvalidInput, match=r"^tag 't' value is 8001 characters; MLflow allows at most 8000$"):
        tag_value("t", "x" * 8001)
    assert step_value(np.int32(4)) == 4
    with pytest.raises(InvalidInput, match=r"^step 1.5 must be an integer$"):
        step_value(1.5)
