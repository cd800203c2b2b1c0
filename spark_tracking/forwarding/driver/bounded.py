"""A dict that forgets its least recently used entries past a size: driver state that would
otherwise grow with every task, stage, run or request of a long notebook session."""

from __future__ import annotations

from collections import OrderedDict


class BoundedDict(OrderedDict):
    """``OrderedDict`` holding at most ``max_size`` entries; a read or write marks an entry
    recent, an insert past the bound drops the least recent one."""

    def __init__(self, max_size: int):
        super().__init__()
        self.max_size = max_size

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key, default=None):
        """The value of ``key`` (marking it recent), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.max_size:
            self.popitem(last=False)

    def setdefault(self, key, default=None):
        """The value of ``key`` (marking it recent), inserting ``default`` first when absent."""
        if key not in self:
            self[key] = default
        return self[key]
