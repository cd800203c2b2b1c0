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


def clean_pairs(rows) -> tuple[list, int]:
    """(key, value) string pairs from the wire (params, tags, artifact names): (good, bad count)."""
    good, bad = [], 0
    for row in rows if isinstance(rows, list) else [None]:
        if isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row):
            good.append((row[0], row[1]))
        else:
            bad += 1
    return good, bad
