"""An in-memory stand-in for Kafka, for tests of the gateway's HTTP behaviour only (the
Kafka path itself is tested against the real broker in tests/integration)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ingest.gateway.parse import Identity, Reject
from ingest.gateway.sink import SinkUnavailable
from schemas.events import Envelope


class MemorySink:
    def __init__(self) -> None:
        self.events: list[Envelope] = []
        self.rejects: list[tuple[Identity, Reject]] = []
        self.down = False
        self.lock = threading.Lock()

    def deliver(
        self, events: Sequence[Envelope], rejects: Sequence[Reject], identity: Identity, batch: str
    ) -> None:
        if self.down:
            raise SinkUnavailable("memory sink is down")
        with self.lock:
            self.events.extend(events)
            self.rejects.extend((identity, r) for r in rejects)

    def close(self) -> None:
        pass
