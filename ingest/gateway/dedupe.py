"""Recently delivered event ids, so a batch the sensor re-sends is not written twice.

A sensor re-sends a batch when it did not get the answer (timeout, gateway restart): the
events may already be in Kafka. The gateway remembers the last ``capacity`` (tenant, sensor
id, event id) triples it got Kafka acknowledgements for, and answers those as ``duplicates`` without
producing them again. The window is seeded at start from the tail of the events topic (see
``sink.recent_ids``), so it survives a gateway restart or crash.

The sensor id is part of the key so that one sensor cannot make another's events
"duplicates" by sending their ids first (id squatting): it is the credential's sensor for
a sensor credential and the event's own ``sensor_id`` for a relay (which may only name
sensors of its own tenant).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

#: (tenant id, sensor id, event id)
Key = tuple[str, str, str]


class RecentIds:
    """A bounded insertion-ordered set (oldest forgotten first)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[Key, None] = OrderedDict()

    def __contains__(self, key: Key) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add_all(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self._ids[key] = None
            self._ids.move_to_end(key)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
