"""Memoisation keyed on object identity (a model, a landmark set) plus hashable options.

Models and operator sets are large pytrees of arrays: hashing their contents on every call would
cost more than the work saved, so precomputations are cached per object. The cache keeps the key
objects alive (so their ids cannot be reused by new objects) and is bounded (least recently used
entries go first), so it holds no more than ``maxsize`` models' worth of tables.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class IdentityCache(Generic[T]):
    """``cache.get((model, landmark_set), options, make)``: ``make()`` once per identity of the
    objects and value of ``options``, then the stored result."""

    def __init__(self, maxsize: int = 8):
        self._entries: OrderedDict = OrderedDict()
        self._maxsize = maxsize

    def get(self, objects: tuple, options: Hashable, make: Callable[[], T]) -> T:
        key = (tuple(map(id, objects)), options)
        hit = self._entries.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], objects)):
            self._entries.move_to_end(key)
            return hit[1]
        value = make()
        self._entries[key] = (objects, value)
        while len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
