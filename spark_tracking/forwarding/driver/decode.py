"""The one decode check of what a task sends the driver: entries that do not have the shape
and range MLflow stores are dropped here and counted, so the sink only ever sends the store
what it can take."""

from __future__ import annotations

#: MLflow stores steps and timestamps as signed 64-bit integers (its client refuses others at the call)
INT64 = range(-(2**63), 2**63)


def clean_metrics(rows, beyond: list | None = None) -> tuple[list, int]:
    """Points from the wire, checked again (a client may be buggy): (good, bad count). The one
    decode check of points on the driver. With ``beyond`` a list, points whose step or timestamp
    MLflow cannot store (outside signed 64 bits) go there instead of the bad count: a store fails
    on them as if it were down (SQLite), or stores them at step 0 and drops the rest of the
    request (``mlflow server``)."""
    good: list = []
    bad = 0
    if not isinstance(rows, list):
        return good, 1
    if _all_good(rows):
        return (list(rows) if set(map(type, rows)) == {tuple} else list(map(tuple, rows))), 0
    for row in rows:
        try:
            key, value, ts, step = row
            if (
                isinstance(key, str)
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and type(ts) is int
                and type(step) is int
                and key
            ):
                point = (key, float(value) if not isinstance(value, float) else value, ts, step)
                if ts in INT64 and step in INT64:
                    good.append(point)
                    continue
                if beyond is not None:
                    beyond.append(point)
                    continue
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
            pass
        bad += 1
    return good, bad


_ROW_TYPES = frozenset({tuple, list})


def _all_good(rows: list) -> bool:
    """Whether every row is a well-formed point with a float value, in range: the check of the
    loop below for a frame as tasks send it, in loops of C (a frame with anything else takes
    the loop, which tells good from bad row by row)."""
    if not rows or not set(map(type, rows)) <= _ROW_TYPES or set(map(len, rows)) != {4}:
        return False
    keys, values, stamps, steps = zip(*rows)
    return (
        set(map(type, keys)) == {str}
        and all(keys)
        and set(map(type, values)) == {float}
        and set(map(type, stamps)) == {int}
        and set(map(type, steps)) == {int}
        and min(stamps) in INT64
        and max(stamps) in INT64
        and min(steps) in INT64
        and max(steps) in INT64
    )


def clean_pairs(rows) -> tuple[list, int]:
    """(key, value) string pairs from the wire (params, tags, artifact names): (good, bad count)."""
    good, bad = [], 0
    for row in rows if isinstance(rows, list) else [None]:
        if isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row):
            good.append((row[0], row[1]))
        else:
            bad += 1
    return good, bad
