"""MLflow's input rules, checked at the call site (mlflow/utils/validation.py, checked 2026-11).

Accepted and coerced: int and float metric values (NaN and ±inf included, as MLflow; an int
beyond the float range is refused, MLflow stores doubles), numpy scalars, 0-d arrays and 0-d
tensors (anything with ``.item()`` giving a number), integer-like steps and timestamps (numpy
integers included). Params and
tag values are turned into ``str`` as MLflow does. Refused with :class:`InvalidInput`: bool,
None, strings and other non-numbers as metric values; keys that are empty, longer than 250
characters or have characters outside ``[/\\w.\\- :]``, keys MLflow's path rule refuses
(``loss/``, ``/loss``, ``a//b``, ``./a``: a key must be its own normalised path); params over
6000 characters; tag values over 8000 characters; non-integer steps; steps and timestamps that are not 64-bit
integers (and negative timestamps), in MLflow's words.
"""

from __future__ import annotations

import posixpath
import re

# MLflow's limits (mlflow/utils/validation.py); every caller takes them from here.
MAX_KEY_LENGTH = 250  # MAX_ENTITY_KEY_LENGTH
MAX_PARAM_VALUE_LENGTH = 6000  # MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE_LENGTH = 8000  # MAX_TAG_VAL_LENGTH
# one log_batch request:
MAX_METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH
MAX_PARAMS_TAGS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH: params, and tags, each
MAX_ENTITIES_PER_BATCH = 1000  # MAX_ENTITIES_PER_BATCH: metrics, params and tags together
MAX_REQUEST_BYTES = 1_000_000  # MAX_BATCH_LOG_REQUEST_SIZE: the JSON body
_KEY_RE = re.compile(r"^[/\w.\- :]*$")


class InvalidInput(ValueError):
    """A logging call with a value MLflow would refuse; the message names it and the rule.

    ``error_code`` is the one MLflow gives such a refusal (``INVALID_PARAMETER_VALUE``): MLflow
    calls inside a Spark task raise MLflow's ``MlflowException`` with it
    (``forwarding.task.store``); this module never imports MLflow (a task's hot path)."""

    error_code = "INVALID_PARAMETER_VALUE"


def check_key(key, kind: str = "metric", max_length: int = MAX_KEY_LENGTH, suffix: str = "") -> str:
    """``key`` if MLflow takes it as a ``kind`` key. ``suffix``: what the store will append
    (a Spark task's per-worker suffix, ``layout.worker_key_suffix``), which must fit in ``max_length`` too."""
    if not isinstance(key, str):
        raise InvalidInput(f"{kind} key {key!r} must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidInput(f"{kind} key must not be empty")
    if len(key) + len(suffix) > max_length:
        if suffix:
            raise InvalidInput(
                f"{kind} key {key[:40]!r}... is {len(key)} characters; inside a Spark task it is stored "
                f"per worker as '<key>{suffix}', and MLflow allows at most {max_length} characters: "
                f"shorten the key to {max_length - len(suffix)} characters or fewer"
            )
        raise InvalidInput(f"{kind} key {key[:40]!r}... is {len(key)} characters; MLflow allows at most {max_length}")
    if not _KEY_RE.match(key):
        raise InvalidInput(
            f"{kind} key {key!r} has characters MLflow refuses; use letters, digits, "
            "underscores (_), dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)"
        )
    if "/" in key or key[0] == "." or key[-1] == ".":
        norm = posixpath.normpath(key)
        if norm != key or norm == "." or norm.startswith(("..", "/")):
            raise InvalidInput(
                f"{kind} key {key!r} is refused by MLflow: keys are used as file paths and must not "
                f"resolve to another name (this one resolves to {norm!r}); drop leading, trailing and "
                "doubled slashes and '.'/'..' parts, e.g. use {fix!r}".format(fix=_path_fix(key))
            )
    return key


def _path_fix(key: str) -> str:
    parts = [p for p in key.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "loss"


_MAX_FLOAT = 1.7976931348623157e308


def metric_value(key: str, value) -> float:
    """``value`` as the float MLflow stores for metric ``key``: ints, floats, numpy scalars and
    0-d arrays or tensors; :class:`InvalidInput` for anything else (bool, None, text, arrays)."""
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        return _int_value(key, value)
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
            return _int_value(key, value) if isinstance(value, int) else float(value)
    else:
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        except (TypeError, ValueError):
            pass
    raise InvalidInput(f"metric {key!r} got {value!r} ({kind.__name__}); a metric value must be a number")


def _int_value(key: str, value: int) -> float:
    if -_MAX_FLOAT <= value <= _MAX_FLOAT:
        return float(value)
    raise InvalidInput(
        f"metric {key!r} got an integer of {len(str(abs(value)))} digits, beyond what MLflow stores "
        "(a 64-bit float, at most about 1.8e308); log float('inf') or a scaled value instead"
    )


#: a step and a timestamp are 64-bit integers in every MLflow store (protobuf int64, SQL BIGINT)
MIN_LONG = -(2**63)
MAX_LONG = 2**63 - 1


def _invalid_value(path: str, value, message: str) -> str:
    """MLflow's wording of a refused value (``mlflow.utils.validation.invalid_value``)."""
    return f"Invalid value {value} for parameter '{path}' supplied: {message}"


def _of(key: str | None) -> str:
    return f"metric {key!r}: " if key is not None else ""


def step_value(step, key: str | None = None) -> int:
    """``step`` as an int (0 when None); :class:`InvalidInput` unless it is integer-like and a
    64-bit integer. MLflow's own checks (``_validate_metric``, 3.17) let a step of 2**63 pass;
    the store then fails on it (SQLite: "int too large", ``INTERNAL_ERROR``; a REST store:
    protobuf's "Value out of range"), so it is refused here, in MLflow's words."""
    if step is None:
        return 0
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise InvalidInput(f"step {step!r} must be an integer")
    step = step.__index__()
    if not MIN_LONG <= step <= MAX_LONG:
        raise InvalidInput(
            _invalid_value(
                "step", step, f"{_of(key)}Step must be a valid long (64-bit integer), from -2**63 to 2**63 - 1."
            )
        )
    return step


def timestamp_value(timestamp, key: str | None = None) -> int | None:
    """``timestamp`` (milliseconds since the epoch) as an int, or None to mean now;
    :class:`InvalidInput` unless it is integer-like, not negative and a 64-bit integer (MLflow
    refuses a negative one, and its stores one of 2**63 or more, see :func:`step_value`)."""
    if timestamp is None:
        return None
    if isinstance(timestamp, bool) or not hasattr(timestamp, "__index__"):
        raise InvalidInput(f"timestamp {timestamp!r} must be an integer (milliseconds since the epoch)")
    timestamp = timestamp.__index__()
    if not 0 <= timestamp <= MAX_LONG:
        raise InvalidInput(
            _invalid_value(
                "timestamp",
                timestamp,
                f"{_of(key)}Timestamp must be a nonnegative long (64-bit integer), milliseconds since the epoch.",
            )
        )
    return timestamp


def param_value(key: str, value) -> str:
    """``value`` as the text MLflow stores for param ``key`` (``str(value)``), at most
    ``MAX_PARAM_VALUE_LENGTH`` characters."""
    text = str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        raise InvalidInput(
            f"param {key!r} value is {len(text)} characters; MLflow allows at most "
            f"{MAX_PARAM_VALUE_LENGTH}. Log long text as an artifact instead."
        )
    return text


def tag_value(key: str, value) -> str:
    """``value`` as the text MLflow stores for tag ``key`` (``str(value)``, None as ``""``), at
    most ``MAX_TAG_VALUE_LENGTH`` characters."""
    text = "" if value is None else str(value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise InvalidInput(f"tag {key!r} value is {len(text)} characters; MLflow allows at most {MAX_TAG_VALUE_LENGTH}")
    return text
