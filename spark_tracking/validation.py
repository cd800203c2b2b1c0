"""MLflow's input rules, checked at the call site (mlflow/utils/validation.py, checked 2026-11).

Accepted and coerced: int and float metric values (NaN and ±inf included, as MLflow), numpy
scalars, 0-d arrays and 0-d tensors (anything with ``.item()`` giving a number). Params and
tag values are turned into ``str`` as MLflow does. Refused with :class:`InvalidInput`: bool,
None, strings and other non-numbers as metric values; keys that are empty, longer than 250
characters or have characters outside ``[/\\w.\\- :]``; params over 6000 characters; tag values
over 8000 characters; non-integer steps.
"""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_REQUEST_BYTES = 1_000_000
_KEY_RE = re.compile(r"^[/\w.\- :]*$")


class InvalidInput(ValueError):
    """A logging call with a value MLflow would refuse; the message names it and the rule."""


def check_key(key, kind: str = "metric") -> str:
    if not isinstance(key, str):
        raise InvalidInput(f"{kind} key {key!r} must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidInput(f"{kind} key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"{kind} key {key[:40]!r}... is {len(key)} characters; MLflow allows at most {MAX_KEY_LENGTH}"
        )
    if not _KEY_RE.match(key):
        raise InvalidInput(
            f"{kind} key {key!r} has characters MLflow refuses; use letters, digits, "
            "underscores (_), dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)"
        )
    return key


def metric_value(key: str, value) -> float:
    kind = type(value)
    if kind is float or kind is int:
        return value
    if kind is bool or value is None or isinstance(value, (str, bytes)):
        raise InvalidInput(
            f"metric {key!r} got {value!r} ({kind.__name__}); a metric value must be a number "
            "(int or float, NaN and inf allowed). Log text with set_tag or log_param."
        )
    item = getattr(value, "item", None)
    if item is not None:
        try:
            value = item()
        except (ValueError, TypeError, RuntimeError):
            raise InvalidInput(
                f"metric {key!r} got an array of shape {getattr(value, 'shape', '?')}; "
                "log one number per call (a 0-d array or scalar), e.g. value.mean().item()"
            ) from None
        if type(value) is not bool and isinstance(value, (int, float)):
            return value
    else:
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        except (TypeError, ValueError):
            pass
    raise InvalidInput(
        f"metric {key!r} got {value!r} ({kind.__name__}); a metric value must be a number"
    )


def step_value(step) -> int:
    if step is None:
        return 0
    if type(step) is int:
        return step
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise InvalidInput(f"step {step!r} must be an integer")
    return step.__index__()


def timestamp_value(timestamp) -> int | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, bool) or not hasattr(timestamp, "__index__"):
        raise InvalidInput(f"timestamp {timestamp!r} must be an integer (milliseconds since the epoch)")
    return timestamp.__index__()


def param_value(key: str, value) -> str:
    text = str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        raise InvalidInput(
            f"param {key!r} value is {len(text)} characters; MLflow allows at most "
            f"{MAX_PARAM_VALUE_LENGTH}. Log long text as an artifact instead."
        )
    return text


def tag_value(key: str, value) -> str:
    text = "" if value is None else str(value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise InvalidInput(
            f"tag {key!r} value is {len(text)} characters; MLflow allows at most {MAX_TAG_VALUE_LENGTH}"
        )
    return text
