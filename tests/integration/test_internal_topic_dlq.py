"""Malformed records on the internal topics, on the real Kafka, Spark and Elasticsearch:
garbage written beside valid records into the correlation matches topic and the sensor
summaries topic (not JSON, JSON missing fields, a huge value) is refused on its own, to
the DLQ with its reason and original bytes, exactly once per record, while the valid
records still make their findings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from elasticsearch import Elasticsearch

from detections.correlation.query import CorrelationConfig, CorrelationContent, load_content
from detections.correlation.ticks import TICK_KEY, tick_value
from detections.health.feed import SummaryFeed
from detections.health.query import HealthBatch, start
from detections.health.state import HealthConfig
from detections.sinks.elasticsearch import drop_findings_index
from detections.stream.derived import DerivedPublisher
from detections.stream.job import JobConfig
from ingest.producer import describe_reject
from schemas.events import parse_event
from tests.e2e.harness import job_config
from tests.integration.test_correlations import (
    COUNT_ID,
    RULES,
    VALUES_ID,
    correlation_findings,
    drain,
    event,
    send,
)
from tests.integration.test_correlations import T0 as CORR_T0

pytestmark = pytest.mark.integration

HUGE = b"{" + b"x" * 900_000  # under the broker's record limit, far over any real record


def produce(cfg: JobConfig, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    DerivedPublisher(cfg.producer_config()).ensure_topics([topic, cfg.dlq_topic], 2)
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap})
    for key, value in records:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0


def dead_letters(cfg: JobConfig) -> list[tuple[bytes | None, bytes, dict[str, str]]]:
    """Every record of the DLQ topic, every partition read to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka_bootstrap,
            "group.id": f"dlq-reader-{cfg.dlq_topic}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(cfg.dlq_topic, timeout=30).topics[cfg.dlq_topic]
        out = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(cfg.dlq_topic, partition), 30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(cfg.dlq_topic, partition, low)])
            while True:
                message = consumer.poll(30)
                assert message is not None, f"DLQ partition {partition} not read to its end"
                assert message.error() is None, message.error()
                out.append((message.key(), message.value(), describe_reject(message.headers())))
                if message.offset() >= high - 1:
                    break
        return out
    finally:
        consumer.close()


@pytest.fixture
def content(tmp_path: Path) -> CorrelationContent:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "corr.yml").write_text(RULES)
    return load_content([folder])


def test_malformed_matches_go_to_the_dlq_and_the_valid_ones_still_correlate(
    services: Any, spark: Any, content: CorrelationContent, tmp_path: Path, unique: str
) -> None:
    cfg = job_config(tmp_path, unique)
    garbage = {
        b"not json \xff": "correlation_match_invalid: not JSON",
        b'{"corr":"%s","tenant_id":"default","time_ms":5,"rule":"r","event_id":"e"}'
        % COUNT_ID.encode(): "correlation_match_invalid: missing or invalid group_key",
        b'{"corr":"%s","group_key":"h1"}'
        % COUNT_ID.encode(): "correlation_match_invalid: missing or invalid time_ms",
        b"[1, 2, 3]": "correlation_match_invalid: not a JSON object",
        HUGE: "correlation_match_invalid: not JSON",
        # Keyed like the stage's clock tick but not a tick: refused, never silently dropped.
        b'{"tick": "soon", "corr": "x"}': "correlation_match_invalid: missing or invalid group_key",
    }
    # The garbage first, then the detection pass publishes the valid matches beside it.
    keys = [TICK_KEY.encode() if v.startswith(b'{"tick"') else b"junk-%d" % i
            for i, v in enumerate(garbage)]  # fmt: skip
    produce(cfg, cfg.matches_topic, list(zip(keys, garbage, strict=True)))
    # A real tick beside them is dropped quietly: it is the stage's own clock.
    produce(cfg, cfg.matches_topic, [(TICK_KEY.encode(), tick_value(1))])
    send(
        cfg,
        [
            event("h1", 1, "a.exe", "h1-1", "a 1"),
            event("h1", 30, "a.exe", "h1-2", "a 2"),
            event("h1", 61, "a.exe", "h1-3", "a 3"),
        ],
    )
    totals = drain(spark, cfg, content, CorrelationConfig(lateness_s=10))
    found = sorted((f["rule"]["id"], f["sigstream"]["correlation"]["group_key"])
                   for f in correlation_findings(cfg))  # fmt: skip
    assert found == sorted([(COUNT_ID, "h1"), (VALUES_ID, "h1")])
    assert totals.rejected == len(garbage) and totals.created == 2

    letters = dead_letters(cfg)
    assert Counter(v for _, v, _ in letters) == Counter(list(garbage))  # each exactly once
    for key, value, headers in letters:
        assert headers["reason"] == garbage[value]
        assert headers["stage"] == "correlate"
        topic, partition, offset = headers["origin"].rsplit(":", 2)
        assert topic == cfg.matches_topic and int(partition) >= 0 and int(offset) >= 0
        assert key is not None and (key.startswith(b"junk-") or key == TICK_KEY.encode())


def test_malformed_summaries_go_to_the_dlq_and_the_valid_ones_still_count(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    cfg = job_config(tmp_path, unique)
    sensors_index = f"test-{unique}-sensors"
    garbage = {
        b"\x00\x01 not json": "sensor_summary_invalid: not JSON",
        b'{"v": 1, "tenant": "t", "sensor": "s"}': "sensor_summary_invalid: malformed summary",
        b'{"v": 7}': "sensor_summary_invalid: unsupported summary version 7",
        HUGE: "sensor_summary_invalid: not JSON",
    }
    produce(cfg, cfg.summaries_topic, [(b"t\x1fbad-%d" % i, v) for i, v in enumerate(garbage)])
    feed = SummaryFeed(cfg.kafka_bootstrap, cfg.summaries_topic)
    for i, sensor in enumerate(("ok-1", "ok-2")):
        feed.send(
            parse_event(
                {
                    "event_type": "process_creation",
                    "tenant_id": f"dlq-{unique}",
                    "sensor_id": sensor,
                    "host": sensor.upper(),
                    "event_id": f"{sensor}-e{i}",
                    "seq": 0,
                    "event_time": CORR_T0.isoformat(),
                    "Image": "C:\\x.exe",
                    "logsource": {"category": "process_creation", "product": "windows"},
                }
            )
        )
    feed.close()

    batches: list[HealthBatch] = []
    health = HealthConfig()
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        for _ in range(2):  # the second run, from the checkpoint, sends nothing again
            query = start(
                spark, cfg, health, sensors_index, batches.append, checkpoint=tmp_path / "ckpt"
            )
            assert query.awaitTermination(600), "health query did not finish"
            assert query.exception() is None
        assert sum(b.rejected for b in batches) == len(garbage)
        es.indices.refresh(index=sensors_index)
        sensors = {
            h["_source"]["sensor_id"] for h in es.search(index=sensors_index)["hits"]["hits"]
        }
        assert sensors == {"ok-1", "ok-2"}

        letters = dead_letters(cfg)
        assert Counter(v for _, v, _ in letters) == Counter(list(garbage))  # each exactly once
        for key, value, headers in letters:
            assert headers["reason"].startswith(garbage[value]), headers
            assert headers["stage"] == "sensor-health"
            assert headers["origin"].startswith(f"{cfg.summaries_topic}:")
            assert key is not None and key.startswith(b"t\x1fbad-")
    finally:
        drop_findings_index(es, cfg.findings_index)
        es.options(ignore_status=404).indices.delete(index=sensors_index)
        es.close()
