"""Where accepted events and rejects go: Kafka, through an idempotent producer.

``KafkaSink.deliver`` is blocking (kafka-python is thread-based); the app runs it on a
worker thread and only answers a batch after Kafka acknowledged every record of it
(``acks=all``), so a 200 means "durable in Kafka". Any failure raises ``SinkUnavailable``
(the app answers 503 + Retry-After and the client re-sends the whole batch later; the ids
already acknowledged are then answered as duplicates, see ``dedupe``).

The producer is idempotent (``enable_idempotence``: broker-side de-duplication of the
producer's own retries, order kept with up to 5 requests in flight). It is created lazily
and thrown away after any failure, so a Kafka outage never leaves the gateway stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ingest.gateway.parse import Identity, Reject
from ingest.producer import dlq_headers, encode_event
from schemas.events import Envelope

log = logging.getLogger(__name__)

TENANT_HEADER = "sigstream.tenant"
EVENT_ID_HEADER = "sigstream.event_id"
SENSOR_HEADER = "sigstream.sensor"


class SinkUnavailable(RuntimeError):
    """Kafka did not take the batch; the sender should retry later."""


class Sink(Protocol):
    def deliver(
        self, events: Sequence[Envelope], rejects: Sequence[Reject], identity: Identity, batch: str
    ) -> None: ...

    def close(self) -> None: ...


class KafkaSink:
    """Events to ``events_topic`` keyed by sensor id; rejects to ``dlq_topic`` with reasons."""

    def __init__(
        self,
        bootstrap: str,
        events_topic: str,
        dlq_topic: str,
        *,
        timeout_s: float = 30.0,
        **overrides: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.timeout_s = timeout_s
        self.config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,
            "linger_ms": 5,
            "batch_size": 512 * 1024,
            "max_request_size": 8 * 1024 * 1024,
            "max_block_ms": 5_000,
            "bootstrap_timeout_ms": 5_000,
            "request_timeout_ms": 10_000,
            "delivery_timeout_ms": int(timeout_s * 1000),
        }
        self.config.update(overrides)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(**self.config)
            return self._producer

    def _drop(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # pragma: no cover - best effort on a broken producer
                log.debug("closing a failed producer", exc_info=True)

    def deliver(
        self, events: Sequence[Envelope], rejects: Sequence[Reject], identity: Identity, batch: str
    ) -> None:
        try:
            producer = self._get()
            futures = []
            for event in events:
                headers = [
                    (TENANT_HEADER, event.tenant_id.encode()),
                    (EVENT_ID_HEADER, event.event_id.encode()),
                ]
                futures.append(
                    producer.send(
                        self.events_topic,
                        key=event.sensor_id.encode(),
                        value=encode_event(event),
                        headers=headers,
                    )
                )
            for r in rejects:
                headers = [
                    *dlq_headers(
                        r.reason, f"gateway:{identity.sensor_id}:{batch}#{r.line}", "gateway"
                    ),
                    (TENANT_HEADER, identity.tenant_id.encode()),
                    (SENSOR_HEADER, identity.sensor_id.encode()),
                ]
                futures.append(producer.send(self.dlq_topic, value=r.raw, headers=headers))
            producer.flush(timeout=self.timeout_s)
            deadline = time.monotonic() + self.timeout_s
            for f in futures:
                f.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            self._drop()
            raise SinkUnavailable(f"Kafka did not acknowledge the batch: {exc!r}") from exc

    def ready(self) -> bool:
        try:
            return bool(self._get().partitions_for(self.events_topic))
        except Exception:
            self._drop()
            return False

    def close(self) -> None:
        self._drop()


def recent_ids(
    bootstrap: str, topic: str, per_partition: int, timeout_s: float = 20.0
) -> list[tuple[str, str]]:
    """(tenant, event id) of the last ``per_partition`` records of each partition, oldest
    first, read from the headers the gateway writes. Empty when the topic does not exist."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begin[tp], end[tp] - per_partition))
        found: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    h = dict(rec.headers or [])
                    if TENANT_HEADER in h and EVENT_ID_HEADER in h:
                        found.append((h[TENANT_HEADER].decode(), h[EVENT_ID_HEADER].decode()))
        return found
    finally:
        consumer.close()
