"""Derived streams: what the detection pass publishes for the stateful stages.

The detection pass is the only reader and parser of the raw events topic. Each task
returns, beside its counts, the compact records the later stages need (correlation
matches keyed by correlation group, per-sensor summaries keyed by sensor); the driver
publishes them here before the micro-batch ends, so Spark commits the batch's offsets
only once they are in Kafka. After a crash the batch is replayed and its records are
published again: the stages that read them are idempotent (a match is counted once by
its identity, a summary's sequence numbers once), so a replay costs nothing but bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from common.client_options import RELIABLE_PRODUCER

log = logging.getLogger("sigstream.derived")

#: Producer defaults: the project's reliable producer (``common.client_options``: acks
#: from all replicas, idempotent, LZ4), with a small linger (the records go out in one
#: burst per micro-batch).
PRODUCER_DEFAULTS: dict[str, Any] = {
    **RELIABLE_PRODUCER,
    "linger.ms": 5,
    "message.timeout.ms": 120_000,
}


#: One record to publish: (key, value) or (key, value, headers).
Record = (
    tuple[bytes | None, bytes | None]
    | tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
)


class DerivedPublishError(RuntimeError):
    """Records could not be published: the micro-batch fails and is replayed."""


class DerivedPublisher:
    """Publishes derived records from the driver with one Kafka producer (librdkafka)."""

    def __init__(self, options: Mapping[str, Any], flush_timeout_s: float = 120.0) -> None:
        self._options = {**PRODUCER_DEFAULTS, **options}
        self._flush_timeout_s = flush_timeout_s
        self._producer: Any = None

    def _client(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self._options)
        return self._producer

    def ensure_topics(self, topics: Iterable[str], partitions: int) -> None:
        """Create missing topics (brokers that do not auto-create them, like ``secure``)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        wanted = sorted(set(topics))
        admin = AdminClient({k: v for k, v in self._options.items() if k not in PRODUCER_DEFAULTS})
        existing = set(admin.list_topics(timeout=30).topics)
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return
        futures = admin.create_topics([NewTopic(t, num_partitions=partitions) for t in missing])
        for topic, future in futures.items():
            try:
                future.result(30)
                log.info("created Kafka topic %s (%d partitions)", topic, partitions)
            except Exception as exc:  # created meanwhile by another job: fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise

    def publish(self, topic: str, records: Iterable[Record]) -> int:
        """Send ``records`` and wait until every one is acknowledged; raise if any failed.
        A record is (key, value), or (key, value, headers) (a DLQ record: its reason in
        ``common.dlq`` headers)."""
        producer = self._client()
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        sent = 0
        for key, value, *more in records:
            extra = {"headers": list(more[0])} if more and more[0] else {}
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=delivered, **extra)
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.1)
            sent += 1
        remaining = producer.flush(self._flush_timeout_s)
        if remaining or failures:
            detail = failures[0] if failures else f"{remaining} records still queued"
            raise DerivedPublishError(f"could not publish {sent} records to {topic}: {detail}")
        return sent

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
