"""Where accepted events and rejects go: Kafka, through an idempotent producer.

``KafkaSink.deliver`` is blocking; the app runs it on a worker thread and only answers a
batch after Kafka acknowledged every record of it (``acks=all``), so a 200 means "durable
in Kafka". Any failure raises ``SinkUnavailable`` (the app answers 503 + Retry-After and the
client re-sends the whole batch later; the ids already acknowledged are then answered as
duplicates, see ``dedupe``).

The client is librdkafka (confluent-kafka), like ``ingest.producer.EventProducer``. The
producer is idempotent (``enable.idempotence``: broker-side de-duplication of the
producer's own retries, order kept with up to 5 requests in flight). It is created lazily
and thrown away after any failure, so a Kafka outage never leaves the gateway stuck.
Security options (SASL/TLS) come in as librdkafka properties from
``sigstream.connections.confluent_kafka_config``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from ingest.gateway.parse import Identity, Reject
from ingest.producer import COMPRESSION, dlq_headers, encode_event
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
        client_config: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        """``client_config``: librdkafka security properties (see sigstream.connections);
        ``overrides``: any other librdkafka property."""
        self.bootstrap = bootstrap
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.timeout_s = timeout_s
        self.config: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "batch.size": 512 * 1024,
            "message.max.bytes": 8 * 1024 * 1024,
            "compression.type": COMPRESSION,
            "socket.timeout.ms": 10_000,
            "message.timeout.ms": int(timeout_s * 1000),
        }
        self.config.update(client_config or {})
        self.config["bootstrap.servers"] = bootstrap
        self.config.update(overrides)
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _get(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self.config)
            return self._producer

    def _drop(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.purge()
                producer.flush(0)
            except Exception:  # pragma: no cover - best effort on a broken producer
                log.debug("closing a failed producer", exc_info=True)

    def deliver(
        self, events: Sequence[Envelope], rejects: Sequence[Reject], identity: Identity, batch: str
    ) -> None:
        failures: list[str] = []
        acked = [0]

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                acked[0] += 1
            elif len(failures) < 5:
                failures.append(str(error))
            else:
                failures.append("")

        try:
            producer = self._get()
            sent = 0
            for event in events:
                headers = [
                    (TENANT_HEADER, event.tenant_id.encode()),
                    (EVENT_ID_HEADER, event.event_id.encode()),
                ]
                self._produce(
                    producer,
                    self.events_topic,
                    encode_event(event),
                    delivered,
                    key=event.sensor_id.encode(),
                    headers=headers,
                )
                sent += 1
            for r in rejects:
                headers = [
                    *dlq_headers(
                        r.reason, f"gateway:{identity.sensor_id}:{batch}#{r.line}", "gateway"
                    ),
                    (TENANT_HEADER, identity.tenant_id.encode()),
                    (SENSOR_HEADER, identity.sensor_id.encode()),
                ]
                self._produce(producer, self.dlq_topic, r.raw, delivered, headers=headers)
                sent += 1
            remaining = producer.flush(self.timeout_s)
            if remaining or failures or acked[0] != sent:
                reasons = "; ".join(f for f in failures if f) or f"{remaining} not delivered"
                raise RuntimeError(f"{sent - acked[0]} of {sent} records failed: {reasons}")
        except Exception as exc:
            self._drop()
            raise SinkUnavailable(f"Kafka did not acknowledge the batch: {exc!r}") from exc

    def _produce(
        self, producer: Producer, topic: str, value: bytes, callback: Any, **kw: Any
    ) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                producer.produce(topic, value, on_delivery=callback, **kw)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                if time.monotonic() > deadline:
                    raise
                producer.poll(0.05)

    def ready(self) -> bool:
        try:
            meta = self._get().list_topics(self.events_topic, timeout=5)
            topic = meta.topics.get(self.events_topic)
            return topic is not None and topic.error is None and bool(topic.partitions)
        except Exception:
            self._drop()
            return False

    def close(self) -> None:
        producer = self._producer
        if producer is not None:
            producer.flush(5)
        self._drop()


def recent_ids(
    bootstrap: str,
    topic: str,
    per_partition: int,
    timeout_s: float = 20.0,
    client_config: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """(tenant, event id) of the last ``per_partition`` records of each partition, oldest
    first, read from the headers the gateway writes. Empty when the topic does not exist.

    Needs Read on the topic: under the secure profile's ACLs the gateway has none, so the
    app starts with an empty window (it logs why)."""
    config: dict[str, Any] = {
        **(client_config or {}),
        "bootstrap.servers": bootstrap,
        "group.id": "sigstream-gateway-seed",  # required by librdkafka; never joined
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    consumer = Consumer(config)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            if (
                info is not None
                and info.error is not None
                and info.error.code()
                not in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError._UNKNOWN_TOPIC,
                )
            ):
                raise RuntimeError(f"cannot read {topic}: {info.error}")
            return []
        assigned: list[TopicPartition] = []
        pending: set[int] = set()
        for p in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                assigned.append(TopicPartition(topic, p, max(low, high - per_partition)))
                pending.add(p)
        if not assigned:
            return []
        consumer.assign(assigned)
        per_part: dict[int, list[tuple[str, str]]] = {p: [] for p in pending}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error, partition = msg.error(), msg.partition() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                    continue
                raise RuntimeError(f"cannot read {topic}: {error}")
            raw = msg.headers() or []
            pairs = raw.items() if isinstance(raw, dict) else raw
            h = {k: v for k, v in pairs if isinstance(v, bytes)}
            if TENANT_HEADER in h and EVENT_ID_HEADER in h:
                per_part[partition].append((h[TENANT_HEADER].decode(), h[EVENT_ID_HEADER].decode()))
        return [pair for p in sorted(per_part) for pair in per_part[p]]
    finally:
        consumer.close()
