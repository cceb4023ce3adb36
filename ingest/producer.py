"""The sensor-side Kafka producer: valid events to the events topic, rejects to the DLQ.

Events are keyed by sensor id, so one sensor's events stay in order on one partition.
Rejected input goes to the dead-letter topic as the *original bytes*, with the reason and
origin in Kafka headers: nothing is dropped, and an operator can replay it once fixed.

The client is librdkafka (confluent-kafka): measured in ``bench/ingest.py`` at 10x or more
the events/s of kafka-python with its C checksum extension and 30x or more without it
(kafka-python computes record checksums in Python). Batches are LZ4-compressed
(``COMPRESSION``): JSON events shrink several-fold, so the client, the broker and the disk
move less; bench/README.md has the measurements.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# One producer-construction path for every Kafka producer (re-exported here for the
# ingest side's callers).
from common.client_options import COMPRESSION as COMPRESSION
from common.client_options import RELIABLE_PRODUCER as RELIABLE_PRODUCER
from common.client_options import producer_config

# The DLQ convention lives in common.dlq (the detection stages write DLQ records too);
# re-exported here for the ingest side's callers.
from common.dlq import DLQ_ORIGIN_HEADER as DLQ_ORIGIN_HEADER
from common.dlq import DLQ_REASON_HEADER as DLQ_REASON_HEADER
from common.dlq import DLQ_STAGE_HEADER as DLQ_STAGE_HEADER
from common.dlq import dlq_headers as dlq_headers
from schemas.events import Envelope


def encode_event(event: Envelope) -> bytes:
    """The wire form of an event: compact JSON without null fields."""
    return event.model_dump_json(exclude_none=True).encode()


@dataclass
class DeliveryCounts:
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


#: Producer batch compression. LZ4 measured fastest end to end on the 2-core bench machine
#: (bench/ingest.py: above "none", zstd and snappy); consumers need an LZ4 codec, which
#: Spark's Kafka client and librdkafka include (kafka-python needs the ``lz4`` package).
class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached, or the topic has no partition leaders."""


#: Sends between two polls of the delivery-report queue (flush() polls until it is empty).
POLL_EVERY = 1_000


class EventProducer:
    """A batching producer with ``acks=all`` and idempotence (no duplicates on retry)."""

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str],
        events_topic: str,
        dlq_topic: str,
        **overrides: Any,
    ) -> None:
        config = producer_config(
            bootstrap_servers,
            **{
                "linger.ms": 20,
                "queue.buffering.max.messages": 1_000_000,
                # Delivery reports for failures only: a Python callback per delivered
                # message was a tenth of the client's time at 100k events/s; failures
                # still reach ``_delivered`` and ``counts``.
                "delivery.report.only.error": True,
                **overrides,
            },
        )
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.counts = DeliveryCounts()
        self._producer = Producer(config)
        self._unpolled = 0

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Connect and learn the events topic's partition leaders, or raise ``KafkaUnavailable``.

        Why: librdkafka connects lazily, so without this an unreachable broker shows up only
        as messages timing out minutes later; a caller that checks first fails fast and clearly.
        """
        deadline = time.monotonic() + timeout
        problem = "no answer"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaUnavailable(
                    f"Kafka topic {self.events_topic!r} not ready after {timeout:g}s: {problem}"
                )
            try:
                metadata = self._producer.list_topics(self.events_topic, timeout=left)
            except KafkaException as exc:
                problem = str(exc.args[0] if exc.args else exc)
                continue
            topic = metadata.topics.get(self.events_topic)
            if topic is not None and topic.error is None and topic.partitions:
                if all(p.leader >= 0 for p in topic.partitions.values()):
                    return
                problem = "partitions without a leader"
            else:
                problem = str(topic.error) if topic is not None else "topic missing"
            time.sleep(0.05)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.counts.failed += 1
            if len(self.counts.errors) < 10:
                self.counts.errors.append(str(error))

    def _produce(self, topic: str, value: bytes, **kwargs: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value, on_delivery=self._delivered, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.05)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:  # serve failure reports now and then, not per send
            self._unpolled = 0
            self._producer.poll(0)

    def send_event(self, event: Envelope) -> None:
        self._produce(self.events_topic, encode_event(event), key=event.sensor_id.encode())
        self.counts.sent += 1

    def send_raw(self, key: str, value: bytes) -> None:
        """Send bytes that are already a serialized event (used by benchmarks and tests)."""
        self._produce(self.events_topic, value, key=key.encode())
        self.counts.sent += 1

    def send_reject(self, raw: bytes, reason: str, origin: str, stage: str = "ingest") -> None:
        self._produce(self.dlq_topic, raw, headers=dlq_headers(reason, origin, stage))
        self.counts.rejected += 1

    def flush(self, timeout: float | None = 60.0) -> None:
        """Wait until every message is delivered (or failed: see ``counts``)."""
        remaining = self._producer.flush(60.0 if timeout is None else timeout)
        if remaining:
            self.counts.failed += remaining
            self.counts.errors.append(f"{remaining} messages not delivered before the timeout")

    def close(self) -> None:
        self.flush()

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
