"""Envelopes -> per-sensor summaries on the summaries topic, as the detect tasks make them
(``SensorSummaries``), without Spark: for the integration test and the fleet benchmark,
which exercise the sensor-health query on its own."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from detections.health.summary import SUMMARY_FIELDS, SensorSummaries
from schemas.events import Envelope
from schemas.generate import arrow_event_schema


class SummaryFeed:
    """The fleet's events, summarized per flush (one "task" each) with SensorSummaries and
    produced to the summaries topic, received when summarized (as the gateway stamps)."""

    def __init__(
        self, bootstrap: str, topic: str, client_config: dict[str, Any] | None = None
    ) -> None:
        from confluent_kafka import Producer

        full = arrow_event_schema()
        self.schema = pa.schema(
            [*(full.field(n) for n in SUMMARY_FIELDS), ("topic", pa.string()),
             ("partition", pa.int32()), ("offset", pa.int64())]
        )  # fmt: skip
        self.fields = set(SUMMARY_FIELDS)
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, **(client_config or {})})
        self.pending: list[dict[str, Any]] = []
        self.offset = 0
        self.lock = threading.Lock()

    def send(self, event: Envelope) -> None:
        row = event.model_dump(include=self.fields)
        with self.lock:
            self.pending.append(row | {"topic": "fleet", "partition": 0, "offset": self.offset})
            self.offset += 1

    def flush(self) -> None:
        with self.lock:
            rows, self.pending = self.pending, []
        if not rows:
            return
        received = datetime.now(UTC)
        batch = pa.RecordBatch.from_pylist(
            [r | {"received_time": received} for r in rows], schema=self.schema
        )
        summaries = SensorSummaries()
        summaries.add(batch)
        for key, value in summaries.records():
            self.producer.produce(self.topic, value, key=key)
        assert self.producer.flush(30) == 0

    def close(self) -> None:
        self.flush()
