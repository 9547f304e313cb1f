"""A map that never holds more than a fixed number of entries.

Every in-memory map keyed by something a caller chooses (a token, a session id, a
provider, a transport property) is one of these, so that no sequence of calls can grow
memory past the ceiling: storing a new key into a full map forgets the key stored
least recently. Forgetting must always be safe for the map's owner (a cache answers a
miss by asking its source again), so the ceiling is a memory bound, never a refusal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """At most `capacity` entries; `put` of a new key into a full map evicts the entry
    put least recently (a `get` does not count as a use, so reads cost no reordering)."""

    __slots__ = ("_capacity", "_entries", "evictions")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a bounded map holds at least one entry")
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.evictions = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Store `value` under `key` as the most recent entry, evicting the least recent
        one when the map was full."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self._capacity:
            entries.popitem(last=False)
            self.evictions += 1

    def setdefault(self, key: K, value: V) -> V:
        """The value stored under `key`, storing `value` first when there is none."""
        known = self._entries.get(key)
        if known is None:
            self.put(key, value)
            return value
        return known

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """A copy, safe to read while the map changes (e.g. from a metrics thread)."""
        return list(self._entries.items())

    def clear(self) -> None:
        self._entries.clear()
