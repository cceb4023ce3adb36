"""Correlation rules on the real Kafka, Spark and Elasticsearch: hand-built event sequences
through Kafka to correlation findings, late matches reported, and a restart from the
checkpoint in the middle of a window firing exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from detections.correlation.query import (
    CorrelationConfig,
    CorrelationContent,
    CorrelationTotals,
    load_content,
    start_correlations,
)
from detections.job import JobConfig
from ingest.producer import EventProducer
from schemas.events import parse_event
from schemas.findings import finding_id
from tests.e2e.harness import job_config, read_findings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
A_ID = "11111111-0000-4000-8000-00000000000a"
B_ID = "11111111-0000-4000-8000-00000000000b"
COUNT_ID = "11111111-0000-4000-8000-0000000000c1"
ORDERED_ID = "11111111-0000-4000-8000-0000000000c2"

RULES = f"""
title: Runs a.exe
id: {A_ID}
name: runs_a
logsource: {{category: process_creation, product: windows}}
detection: {{sel: {{Image|endswith: '\\\\a.exe'}}, condition: sel}}
level: low
---
title: Runs b.exe
id: {B_ID}
name: runs_b
logsource: {{category: process_creation, product: windows}}
detection: {{sel: {{Image|endswith: '\\\\b.exe'}}, condition: sel}}
level: low
---
title: Three a.exe on one host
id: {COUNT_ID}
level: high
tags: [attack.execution, attack.t1059]
correlation:
  type: event_count
  rules: runs_a
  group-by: host
  timespan: 60s
  condition: {{gte: 3}}
---
title: a.exe then b.exe
id: {ORDERED_ID}
level: critical
correlation:
  type: temporal_ordered
  rules: [runs_a, runs_b]
  group-by: host
  timespan: 60s
"""


def event(host: str, seconds: float, image: str, eid: str) -> Any:
    return parse_event(
        {
            "event_type": "process_creation",
            "sensor_id": f"sensor-{host}",
            "host": host,
            "event_id": eid,
            "event_time": (T0 + timedelta(seconds=seconds)).isoformat(),
            "Image": f"C:\\Tools\\{image}",
            "logsource": {"category": "process_creation", "product": "windows"},
        }
    )


def send(cfg: JobConfig, events: list[Any]) -> None:
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        for e in events:
            producer.send_event(e)
    assert producer.counts.failed == 0, producer.counts.errors


def drain(
    spark: Any, cfg: JobConfig, content: CorrelationContent, ccfg: CorrelationConfig
) -> CorrelationTotals:
    """Run the correlation query until Kafka is drained (availableNow), like --once."""
    totals = CorrelationTotals()
    query = start_correlations(spark, cfg, content, ccfg, totals)
    assert query is not None
    query.awaitTermination(600)
    assert query.exception() is None
    return totals


def correlation_findings(cfg: JobConfig) -> list[dict[str, Any]]:
    return [f for f in read_findings(cfg) if f["event"]["category"] == "correlation"]


def late_reports(index: str, cfg: JobConfig) -> list[dict[str, Any]]:
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        es.indices.refresh(index=index)
        return [h["_source"] for h in es.search(index=index, size=100)["hits"]["hits"]]
    finally:
        es.close()


@pytest.fixture
def content(tmp_path: Path) -> CorrelationContent:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "corr.yml").write_text(RULES)
    loaded = load_content([folder])
    assert not loaded.rejections and len(loaded.specs) == 2
    return loaded


def test_sequences_through_kafka_become_correlation_findings(
    services: Any, spark: Any, content: CorrelationContent, tmp_path: Path, unique: str
) -> None:
    cfg = job_config(tmp_path, unique)
    ccfg = CorrelationConfig(lateness_s=10)
    send(
        cfg,
        [
            # h1: three a.exe in a minute -> event_count fires (window edge: the third
            # is exactly 60 s after the first and still counts)
            event("h1", 1, "a.exe", "h1-1"),
            event("h1", 30, "a.exe", "h1-2"),
            event("h1", 61, "a.exe", "h1-3"),
            # h2 and h3: two a.exe each; five in total, never three on one host
            event("h2", 2, "a.exe", "h2-1"),
            event("h2", 3, "a.exe", "h2-2"),
            event("h3", 4, "b.exe", "h3-1"),  # b before a: temporal_ordered refuses
            event("h3", 5, "a.exe", "h3-2"),
            # h4: a then b -> temporal_ordered fires
            event("h4", 10, "a.exe", "h4-1"),
            event("h4", 20, "b.exe", "h4-2"),
            # moves the watermark past every window (no rule matches it)
            event("clock", 300, "notepad.exe", "clock-1"),
        ],
    )
    totals = drain(spark, cfg, content, ccfg)
    found = correlation_findings(cfg)
    assert sorted((f["rule"]["id"], f["host"]["name"]) for f in found) == [
        (COUNT_ID, "h1"),
        (ORDERED_ID, "h4"),
    ]
    count = next(f for f in found if f["rule"]["id"] == COUNT_ID)
    corr = count["sigstream"]["correlation"]
    assert corr["type"] == "event_count" and corr["value"] == 3
    assert corr["group_by"] == {"host": "h1"}
    assert corr["base_events"] == ["h1-1", "h1-2", "h1-3"]
    assert corr["base_findings"] == [finding_id(A_ID, e) for e in ("h1-1", "h1-2", "h1-3")]
    assert count["rule"]["level"] == "high" and count["threat"]["technique"]["id"] == ["T1059"]
    assert totals.created == 2 and totals.late == 0

    # A match behind the watermark (300 s - 10 s) is reported as late, once per
    # correlation that would have counted it, and never counted.
    send(cfg, [event("h2", 5, "a.exe", "h2-late")])
    again = drain(spark, cfg, content, ccfg)
    assert again.late == 2 and again.firings == 0
    reports = late_reports(ccfg.late(cfg), cfg)
    assert sorted(r["correlation_id"] for r in reports) == [COUNT_ID, ORDERED_ID]
    assert {(r["event_id"], r["lateness_ms"]) for r in reports} == {("h2-late", 285_000)}
    assert len(correlation_findings(cfg)) == 2


def test_restart_from_checkpoint_mid_window_fires_exactly_once(
    services: Any, spark: Any, content: CorrelationContent, tmp_path: Path, unique: str
) -> None:
    cfg = job_config(tmp_path, unique)
    ccfg = CorrelationConfig(lateness_s=5)
    # First half of h1's window: two a.exe, and the watermark moves to 15 s (inside it).
    send(
        cfg,
        [
            event("h1", 1, "a.exe", "r-1"),
            event("h1", 2, "a.exe", "r-2"),
            event("x", 20, "n.exe", "c1"),
        ],
    )
    first = drain(spark, cfg, content, ccfg)
    assert first.firings == 0 and correlation_findings(cfg) == []
    # The query stopped; restart from the same checkpoint and send the rest.
    send(
        cfg,
        [
            event("h1", 40, "a.exe", "r-3"),
            event("h1", 50, "a.exe", "r-4"),
            event("x", 200, "n.exe", "c2"),
        ],
    )
    second = drain(spark, cfg, content, ccfg)
    (f,) = correlation_findings(cfg)
    assert f["rule"]["id"] == COUNT_ID and f["sigstream"]["correlation"]["value"] == 4
    assert second.created == 1
    # Once more from the checkpoint with nothing new: no second firing.
    third = drain(spark, cfg, content, ccfg)
    assert third.firings == 0 and len(correlation_findings(cfg)) == 1
