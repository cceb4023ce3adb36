"""The real services answer: Kafka round-trips a message, Elasticsearch indexes and finds a
document, a second ``up`` is instant, and Spark's connector matches the installed pyspark."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.settings import get_settings
from infra import fetch
from infra import services as infra

pytestmark = pytest.mark.integration


def test_both_services_report_ready(services: dict[str, Any]) -> None:
    current = infra.status()
    for name in ("kafka", "elasticsearch"):
        assert current[name].up, current[name]
    assert current["kafka"].address == get_settings().kafka_bootstrap


def test_pipeline_topics_exist_with_configured_partitions(services: dict[str, Any]) -> None:
    from kafka import KafkaConsumer

    settings = get_settings()
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for topic in (settings.events_topic, settings.dlq_topic):
            partitions = consumer.partitions_for_topic(topic)
            assert partitions is not None, f"{topic} missing"
            assert len(partitions) == settings.topic_partitions
    finally:
        consumer.close()


def test_kafka_produce_then_consume(services: dict[str, Any]) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    bootstrap = get_settings().kafka_bootstrap
    topic = f"infra-test-{uuid.uuid4().hex[:10]}"
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=b"sensor-1", value=b'{"hello": "kafka"}').get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"{topic}-reader",
    )
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend((r.key, r.value) for r in batch)
    finally:
        consumer.close()
    assert records == [(b"sensor-1", b'{"hello": "kafka"}')]


def test_elasticsearch_index_then_search(services: dict[str, Any]) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(get_settings().es_hosts, request_timeout=30)
    index = f"infra-test-{uuid.uuid4().hex[:10]}"
    try:
        client.index(
            index=index,
            id="finding-1",
            document={"rule": {"name": "infra smoke"}, "host": {"name": "ws-01"}},
            refresh="true",
        )
        hits = client.search(index=index, query={"term": {"host.name.keyword": "ws-01"}})
        assert hits["hits"]["total"]["value"] == 1
        assert hits["hits"]["hits"][0]["_id"] == "finding-1"
        assert client.cluster.health()["status"] in {"green", "yellow"}
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()


def test_second_up_is_instant_and_runs_no_maven(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_maven(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm up() must not run mvn")

    monkeypatch.setattr(fetch, "run_maven", no_maven)
    before = infra.status()
    started = time.monotonic()
    after = infra.up()
    assert time.monotonic() - started < 10
    for name, st in after.items():
        assert st.pid == before[name].pid, f"{name} was restarted"


def test_spark_kafka_jars_match_installed_pyspark(services: dict[str, Any]) -> None:
    pyspark_version = fetch.pyspark_version()
    if pyspark_version is None:
        pytest.skip("pyspark not installed")
    expected = get_settings().spark_kafka_version or pyspark_version
    jars = [Path(p) for p in infra.spark_kafka_jars()]
    names = {fetch.artifact_name(p.name): p.name for p in jars}
    assert set(names) == set(fetch.SPARK_KAFKA_ARTIFACTS)
    assert names["spark-sql-kafka-0-10_2.13"].endswith(f"-{expected}.jar")
    assert names["spark-token-provider-kafka-0-10_2.13"].endswith(f"-{expected}.jar")
    assert all(p.is_file() for p in jars)
