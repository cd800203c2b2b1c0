"""What the Azure ML vocabulary's calls are given, checked and converted before anything is
logged: names that become artifact file names, table cells, the values of ``run.log`` /
``run.log_list`` (numbers or text) and images (a PNG file or a matplotlib figure).

Used by :class:`spark_tracking.run.Run`; every refusal is an
:class:`~spark_tracking.validation.InvalidInput` raised at the call site.
"""

from __future__ import annotations

import io
import os
import re

from .validation import InvalidInput, check_key, metric_value

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILE_NAME_RE = re.compile(r"^[\w.\- :]+$")


def check_file_name(name, kind: str) -> str:
    """Names that become one artifact file name: no folders, MLflow's characters."""
    check_key(name, kind)
    if not _FILE_NAME_RE.match(name) or name in (".", ".."):
        raise InvalidInput(
            f"{kind} name {name!r} becomes an artifact file name: use letters, digits, "
            "underscores (_), dashes (-), periods (.), spaces and colons, no slashes"
        )
    return name


def table_cell(table: str, column: str, value):
    """A table cell as a JSON value (numbers, text, bool, None); numpy scalars unwrapped."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if item is not None:
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError):
            pass
        else:
            if value is None or isinstance(value, (bool, int, float, str)):
                return value
    raise InvalidInput(
        f"table {table!r} column {column!r} got {value!r} ({type(value).__name__}); a cell must be "
        "a number, a string, a bool or None"
    )


def classify_values(name: str, values: list) -> tuple[str, list]:
    """('number', floats) or ('text', strs) for log/log_list values; refuses anything else."""
    if values and all(isinstance(v, str) for v in values):
        return "text", list(values)
    numbers = []
    for v in values:
        if isinstance(v, str):
            raise InvalidInput(f"log_list({name!r}) mixes text and numbers; log them under two names")
        if isinstance(v, bool) or v is None:
            raise InvalidInput(
                f"run.log({name!r}) got {v!r} ({type(v).__name__}); a value must be a number "
                "(int or float, NaN and inf allowed) or a string. Log a flag as 0/1 or as text."
            )
        try:
            numbers.append(metric_value(name, v))
        except InvalidInput:
            raise InvalidInput(
                f"run.log({name!r}) got {v!r} ({type(v).__name__}); a value must be a number "
                "(int or float, NaN and inf allowed) or a string"
            ) from None
    return "number", numbers


def image_png(name: str, path=None, plot=None) -> bytes:
    """The PNG bytes of ``log_image``'s ``path=`` (a PNG file) or ``plot=`` (a matplotlib
    Figure or pyplot): exactly one of them."""
    if (path is None) == (plot is None):
        raise InvalidInput(
            f"log_image({name!r}) takes exactly one of path= (a PNG file) or plot= (a matplotlib figure or pyplot)"
        )
    if path is not None:
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InvalidInput(f"log_image({name!r}): cannot read {path!r}: {exc.strerror}") from None
        if not data.startswith(_PNG_SIGNATURE):
            raise InvalidInput(f"log_image({name!r}): {path!r} is not a PNG file; save the image as PNG")
        return data
    savefig = getattr(plot, "savefig", None)
    if savefig is None:
        raise InvalidInput(
            f"log_image({name!r}): plot= must be a matplotlib Figure (or pyplot), not {type(plot).__name__}"
        )
    buf = io.BytesIO()
    savefig(buf, format="png")
    return buf.getvalue()
