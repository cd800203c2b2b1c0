"""Records that cross the wire between a task and the driver: the :class:`Worker` of a task,
and MLflow entities as their protobuf messages (``encode`` / ``decode``), enums by name, never
pickled, so a task can only make the driver build MLflow entities (and the other way round)."""

from __future__ import annotations

import base64
from typing import NamedTuple


class Worker(NamedTuple):
    """Who logged a point (the protocol's ``"w"``; a JSON list on the wire, in this order).

    ``rank``: the barrier rank, or ``RANK`` of a process a task started, else None;
    ``stage_attempt``: 0 where PySpark does not tell it (see :mod:`.protocol`)."""

    stage: int
    partition: int
    attempt: int
    task_id: int
    rank: int | None = None
    stage_attempt: int = 0

    @classmethod
    def of(cls, worker) -> Worker:
        """``worker`` as a Worker: itself when it is one (the relay's decode made it), else read
        from a worker list (five or six items, as tests and in-process callers pass)."""
        return worker if isinstance(worker, cls) else cls(*worker)


def _message_class(full_name: str):
    from google.protobuf import descriptor_pool

    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # protobuf < 4.21 (MLflow 2.9's floor)
        from google.protobuf import symbol_database

        # the protobuf stubs describe the newest release, which dropped GetPrototype
        return symbol_database.Default().GetPrototype(descriptor)  # type: ignore[attr-defined]
    return GetMessageClass(descriptor)


def encode(value):
    """A JSON-able form of ``value`` (MLflow entities as protobuf, enums by name)."""
    from enum import Enum

    if value is None or (isinstance(value, (bool, int, float, str)) and not isinstance(value, Enum)):
        return value
    if isinstance(value, Enum):
        return {"$n": type(value).__name__, "v": value.value}
    if isinstance(value, dict):
        return {"$d": [[encode(k), encode(v)] for k, v in value.items()]}
    if hasattr(value, "to_proto"):
        message = value.to_proto()
        return {
            "$e": type(value).__name__,
            "m": message.DESCRIPTOR.full_name,
            "p": base64.b64encode(message.SerializeToString()).decode("ascii"),
        }
    if type(value).__name__ == "Model" and hasattr(value, "to_dict"):
        return {"$model": value.to_dict()}
    if isinstance(value, (list, tuple)):
        items = [encode(v) for v in value]
        token = getattr(value, "token", None)
        return {"$l": items, "t": token} if token is not None or type(value).__name__ == "PagedList" else items
    raise TypeError(f"cannot send a {type(value).__name__} between a Spark task and the driver")


def decode(value, rewrite=None):
    """The inverse of ``encode``. ``rewrite(message)`` may edit each protobuf message first."""
    if isinstance(value, list):
        return [decode(v, rewrite) for v in value]
    if not isinstance(value, dict):
        return value
    import mlflow.entities as entities

    if "$e" in value:
        cls = getattr(entities, value["$e"], None)
        if cls is None or not hasattr(cls, "from_proto"):
            raise TypeError(f"not an MLflow entity: {value['$e']!r}")
        message = _message_class(value["m"]).FromString(base64.b64decode(value["p"]))
        if rewrite is not None:
            rewrite(message)
        return cls.from_proto(message)
    if "$n" in value:
        cls = getattr(entities, value["$n"], None)
        if cls is None:
            raise TypeError(f"not an MLflow enum: {value['$n']!r}")
        return cls(value["v"])
    if "$d" in value:
        return {decode(k, rewrite): decode(v, rewrite) for k, v in value["$d"]}
    if "$model" in value:
        from mlflow.models import Model

        return Model.from_dict(value["$model"])
    if "$l" in value:
        from mlflow.store.entities.paged_list import PagedList

        return PagedList(decode(value["$l"], rewrite), value.get("t"))
    if "$err" in value:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, ErrorCode

        try:  # the name of the error code the driver's store raised
            code = ErrorCode.Value(str(value.get("code")))
        except ValueError:
            code = INTERNAL_ERROR
        raise MlflowException(value["$err"], error_code=code)
    raise TypeError(f"unknown value on the wire: {sorted(value)!r}")
