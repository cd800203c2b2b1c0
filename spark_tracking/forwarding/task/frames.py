"""What the task side sends to the driver relay: the records the log calls queue (:class:`Point`,
:class:`Entry`), request ids, and "points" requests cut from them (:func:`frame`; halves of a
frame the relay refused or that is over its size: :func:`halves`). The wire format is in
:mod:`..protocol`."""

from __future__ import annotations

import itertools
import os
import uuid
from functools import partial
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, NamedTuple

from .. import protocol

if TYPE_CHECKING:
    from .binding import Binding

FRAME_POINTS = 5000  # entries per frame at most (the relay's sink takes them in rounds)


class Point(NamedTuple):
    """A metric point on its way to the driver, as the log calls queue it. Without its binding
    it is the wire's metric row ``[key, value, timestamp, step]`` (see :mod:`.protocol`)."""

    binding: Binding
    key: str
    value: float
    timestamp: int
    step: int


#: ``new_point((binding, key, value, timestamp, step))``: a :class:`Point` built in one C call
#: (the log calls' hot path; ``Point(...)`` runs a Python ``__new__``)
new_point = partial(tuple.__new__, Point)


class Entry(NamedTuple):
    """A param (kind ``"p"``), tag (``"t"``) or artifact (``"a"``: path and base64 content) on
    its way to the driver."""

    binding: Binding
    kind: str
    key: str
    value: str


class Request:
    """A frame to send: relay, secret, the message (with its id), entries and a size bound."""

    __slots__ = ("entries", "message", "relay", "secret", "size")

    def __init__(self, relay, secret, message, entries, size=None):
        self.relay, self.secret, self.message, self.entries = relay, secret, message, entries
        self.size = protocol.encoded_size(message) if size is None else size


_ids = uuid.uuid4().hex
_id_seq = itertools.count(1)  # next() is atomic: the task thread and the shipper both take ids


def new_id() -> str:
    """A request id: unique in this process's life, kept when the request is re-sent."""
    return f"{_ids}:{os.getpid()}:{next(_id_seq)}"


def frame(b: Binding, items: list) -> Request:
    """The "points" request for queue items (:class:`Point`, :class:`Entry`) of one binding
    (see :mod:`.protocol`), with an upper bound of its encoded size (JSON escapes a character
    in at most 6 bytes)."""
    metrics: list = []
    params: list = []
    tags: list = []
    artifacts: list = []
    message = {
        "id": new_id(),
        "op": "points",
        "b": b.binding,
        "w": b.worker,
        "m": metrics,
        "p": params,
        "t": tags,
        "a": artifacts,
    }
    if b.run is not None:
        message["r"] = b.run
    size = 256 + 6 * len(b.binding) + (6 * len(b.run) if b.run else 0)
    if set(map(type, items)) == {Point}:  # only metrics (the usual frame): no loop in Python
        metrics.extend(map(_ROW, items))
        size += 6 * sum(map(len, map(_KEY, items))) + 80 * len(items)
        return Request(b.relay, b.secret, message, len(items), size)
    lists = {"p": params, "t": tags, "a": artifacts}
    for item in items:
        if type(item) is Point:
            metrics.append(item[1:])
            size += 6 * len(item.key) + 80
        else:
            lists[item.kind].append((item.key, item.value))
            size += 6 * (len(item.key) + len(item.value)) + 8
    return Request(b.relay, b.secret, message, len(items), size)


def entries(message: dict) -> list:
    """The (kind, row) entries of a "points" request, in kind order."""
    return [(kind, row) for kind in ("m", "p", "t", "a") for row in message.get(kind, ())]


def halves(req: Request) -> list:
    """A frame in two, each half with an id derived from the frame's: the same frame split
    again (a spill file given back) gives the same ids, which the relay dispatches once."""
    rows = entries(req.message)
    mid = len(rows) // 2
    out = []
    parent = req.message.get("id") or new_id()
    for n, part in enumerate((rows[:mid], rows[mid:])):
        if part:
            message = {k: v for k, v in req.message.items() if k not in ("m", "p", "t", "a", "seq")}
            message.update(id=f"{parent}/{n}", m=[], p=[], t=[], a=[])
            for kind, row in part:
                message[kind].append(row)
            out.append(Request(req.relay, req.secret, message, len(part)))
    return out


_ROW = itemgetter(slice(1, None))  # a Point without its binding: the wire's metric row
_KEY = attrgetter("key")
_BINDING = attrgetter("binding")


def group(items: list) -> list:
    """Items grouped by binding (bindings of one worker and run travel together), in order."""
    if len(set(map(_BINDING, items))) == 1:  # one binding (the usual case): no loop in Python
        return [(items[0].binding, items)]
    groups: dict = {}
    by_id: dict = {}
    for item in items:
        b = item.binding
        found = by_id.get(id(b))
        if found is None:
            found = groups.get(b.group)
            if found is None:
                found = groups[b.group] = (b, [])
            by_id[id(b)] = found
        found[1].append(item)
    return list(groups.values())
