"""The sensor-side Kafka producer: valid events to the events topic, rejects to the DLQ.

Events are keyed by sensor id, so one sensor's events stay in order on one partition.
Rejected input goes to the dead-letter topic as the *original bytes*, with the reason and
origin in Kafka headers: nothing is dropped, and an operator can replay it once fixed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer

from schemas.events import Envelope

DLQ_REASON_HEADER = "sigstream.reason"
DLQ_ORIGIN_HEADER = "sigstream.origin"
DLQ_STAGE_HEADER = "sigstream.stage"


def encode_event(event: Envelope) -> bytes:
    """The wire form of an event: compact JSON without null fields."""
    return event.model_dump_json(exclude_none=True).encode()


def dlq_headers(reason: str, origin: str, stage: str) -> list[tuple[str, bytes]]:
    return [
        (DLQ_REASON_HEADER, reason.encode()),
        (DLQ_ORIGIN_HEADER, origin.encode()),
        (DLQ_STAGE_HEADER, stage.encode()),
    ]


@dataclass
class DeliveryCounts:
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class EventProducer:
    """A thin, batching wrapper over kafka-python with ``acks=all``."""

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str],
        events_topic: str,
        dlq_topic: str,
        **overrides: Any,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "acks": "all",
            "linger_ms": 20,
            "batch_size": 512 * 1024,
            "max_request_size": 8 * 1024 * 1024,
            "retries": 10,
            "compression_type": None,
        }
        config.update(overrides)
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.counts = DeliveryCounts()
        self._producer = KafkaProducer(**config)

    def _on_error(self, exc: BaseException) -> None:
        self.counts.failed += 1
        if len(self.counts.errors) < 10:
            self.counts.errors.append(repr(exc))

    def send_event(self, event: Envelope) -> None:
        future = self._producer.send(
            self.events_topic, key=event.sensor_id.encode(), value=encode_event(event)
        )
        future.add_errback(self._on_error)
        self.counts.sent += 1

    def send_raw(self, key: str, value: bytes) -> None:
        """Send bytes that are already a serialized event (used by benchmarks and tests)."""
        future = self._producer.send(self.events_topic, key=key.encode(), value=value)
        future.add_errback(self._on_error)
        self.counts.sent += 1

    def send_reject(self, raw: bytes, reason: str, origin: str, stage: str = "ingest") -> None:
        future = self._producer.send(
            self.dlq_topic, value=raw, headers=dlq_headers(reason, origin, stage)
        )
        future.add_errback(self._on_error)
        self.counts.rejected += 1

    def flush(self, timeout: float | None = 60.0) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_reject(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Decode a DLQ record's headers into a dict (for tools and tests)."""
    return {k.removeprefix("sigstream."): v.decode(errors="replace") for k, v in headers}


def json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return raw.decode(errors="replace")
