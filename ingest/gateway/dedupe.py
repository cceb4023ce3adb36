"""Recently delivered event ids, so a batch the sensor re-sends is not written twice.

A sensor re-sends a batch when it did not get the answer (timeout, gateway restart): the
events may already be in Kafka. The gateway remembers the last ``capacity`` (tenant, event
id) pairs it got Kafka acknowledgements for, and answers those as ``duplicates`` without
producing them again. The window is seeded at start from the tail of the events topic (see
``sink.recent_ids``), so it survives a gateway restart or crash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class RecentIds:
    """A bounded insertion-ordered set (oldest forgotten first)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add_all(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self._ids[key] = None
            self._ids.move_to_end(key)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
