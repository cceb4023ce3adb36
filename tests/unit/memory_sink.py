"""An in-memory stand-in for Kafka, for tests of the gateway's HTTP behaviour only (the
Kafka path itself is tested against the real broker in tests/integration)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ingest.gateway.parse import Accepted, Identity, Reject
from ingest.gateway.sink import Delivery, SinkUnavailable
from schemas.events import Envelope, parse_event


class MemorySink:
    """Records what would be written. ``refuse`` is a set of event ids it refuses one by
    one (as Kafka refuses a record that is too large); ``deliveries`` counts calls."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []  # decoded from the bytes that would be sent
        self.rejects: list[tuple[Identity, Reject]] = []
        self.down = False
        self.refuse: set[str] = set()
        self.deliveries = 0
        self.lock = threading.Lock()

    def deliver(
        self, events: Sequence[Accepted], rejects: Sequence[Reject], identity: Identity, batch: str
    ) -> Delivery:
        if self.down:
            raise SinkUnavailable("memory sink is down")
        refused = [
            Reject(e.line, e.value, "kafka_refused", "refused by the test")
            for e in events
            if e.event_id in self.refuse
        ]
        with self.lock:
            self.deliveries += 1
            self.events.extend(
                parse_event(e.value) for e in events if e.event_id not in self.refuse
            )
            self.rejects.extend((identity, r) for r in [*rejects, *refused])
        return Delivery(refused)

    def close(self) -> None:
        pass
