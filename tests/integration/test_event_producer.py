"""The ingest client against the real broker: delivered events land, refused ones are counted.

``EventProducer`` asks librdkafka for delivery reports of failures only (a Python callback
per delivered message cost a tenth of its throughput), so this checks that a refusal still
reaches ``counts`` and that successes need no report to be in the topic."""

from __future__ import annotations

import random
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from common.settings import get_settings
from infra.kafka import ensure_topics
from ingest.producer import COMPRESSION, POLL_EVERY, EventProducer

pytestmark = pytest.mark.integration


def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partition = TopicPartition(topic, 0)
        return int(consumer.end_offsets([partition])[partition])
    finally:
        consumer.close()


def test_sent_events_land_and_a_refused_one_is_counted(services: Any, unique: str) -> None:
    settings = get_settings()
    topic = f"sigstream-test-producer-{unique}"
    ensure_topics(settings, [topic], 1)
    producer = EventProducer(settings.kafka_bootstrap, topic, f"{topic}.dlq")
    count = POLL_EVERY + 7  # past one poll of the report queue
    for i in range(count):
        producer.send_raw(f"s{i % 3}", b'{"n": %d}' % i)
    # Above the broker's 1 MiB record limit, below the client's own (8 MiB): the broker
    # refuses it, so only a delivery report can tell. Random bytes, so LZ4 cannot shrink
    # the batch under the limit.
    producer.send_raw("s0", random.Random(0).randbytes(2 * 1024 * 1024))
    producer.flush(60)
    assert producer.counts.sent == count + 1
    assert producer.counts.failed == 1, producer.counts.errors
    assert "too large" in producer.counts.errors[0].lower(), producer.counts.errors
    assert _end_offset(settings.kafka_bootstrap, topic) == count


def test_ready_client_writes_lz4_batches_that_kafka_python_reads(
    services: Any, unique: str
) -> None:
    """Batches are LZ4 (``COMPRESSION``): the project's other Kafka client must read them."""
    settings = get_settings()
    topic = f"sigstream-test-producer-lz4-{unique}"
    ensure_topics(settings, [topic], 1)
    producer = EventProducer(settings.kafka_bootstrap, topic, f"{topic}.dlq")
    assert COMPRESSION == "lz4"  # what this test is about
    producer.wait_ready(30)
    sent = [b'{"n": %d, "command_line": "%s"}' % (i, b"cmd.exe /c whoami " * 20) for i in range(50)]
    for value in sent:
        producer.send_raw("s1", value)
    producer.flush(60)
    assert producer.counts.failed == 0, producer.counts.errors
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        got = [record.value for record in consumer]
    finally:
        consumer.close()
    assert got == sent
