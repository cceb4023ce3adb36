"""The streaming correlation stage with timers, as `sigstream detect` runs it: no Spark job
without data, clock ticks on the matches topic for the timers, and the state partitions
the job asks for (real Kafka, Spark and Elasticsearch)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from detections.correlation.feed import CorrelationFeed
from detections.correlation.query import (
    CorrelationConfig,
    CorrelationTotals,
    load_content,
    start_correlations,
)
from detections.stream.derived import DerivedPublisher
from schemas.events import parse_event
from tests.e2e.harness import job_config
from tests.integration.test_correlations import correlation_findings

pytestmark = pytest.mark.integration

BASE_ID = "22222222-0000-4000-8000-00000000000a"
SUM_ID = "22222222-0000-4000-8000-0000000000d5"
RULES = f"""
title: Sends bytes
id: {BASE_ID}
name: sends_bytes
logsource: {{category: process_creation, product: windows}}
detection: {{sel: {{Image|endswith: '\\\\send.exe'}}, condition: sel}}
level: low
---
title: Ten bytes or more from one host in ten seconds
id: {SUM_ID}
level: high
correlation:
  type: value_sum
  rules: sends_bytes
  group-by: host
  timespan: 10s
  condition: {{field: Bytes, gte: 10}}
"""


def sent(host: str, eid: str, size: int) -> dict[str, Any]:
    return parse_event(
        {
            "event_type": "process_creation",
            "sensor_id": f"sensor-{host}",
            "host": host,
            "event_id": eid,
            "event_time": datetime.now(UTC).isoformat(),
            "Image": "C:\\Tools\\send.exe",
            "extra": {"Bytes": str(size)},
            "logsource": {"category": "process_creation", "product": "windows"},
        }
    ).model_dump(mode="json")


def test_quiet_keys_are_decided_by_ticks_without_idle_batches(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "sum.yml").write_text(RULES)
    content = load_content([folder])
    assert not content.rejections and [s.id for s in content.specs] == [SUM_ID]
    cfg = job_config(tmp_path, unique, available_now=False, trigger_seconds=0.5, state_partitions=3)
    ccfg = CorrelationConfig(lateness_s=1, tick_s=1.0)
    totals = CorrelationTotals()
    query = start_correlations(spark, cfg, content, ccfg, totals)
    assert query is not None
    try:
        # A value sum is decided when its window closes, never by a later match: only a
        # timer can fire it, and no match arrives after these two.
        feed = CorrelationFeed.of(content.specs)
        records = [
            r
            for i, size in enumerate((6, 7))
            for r in feed.records(BASE_ID, sent("h1", f"s-{i}", size))
        ]
        DerivedPublisher(cfg.producer_config()).publish(cfg.matches_topic, records)
        deadline = time.monotonic() + 120
        while totals.firings < 1 and time.monotonic() < deadline:
            assert query.exception() is None, query.exception()
            time.sleep(0.5)
        assert totals.firings == 1, "the timer never decided the window"
        (finding,) = correlation_findings(cfg)
        assert finding["rule"]["id"] == SUM_ID
        assert finding["sigstream"]["correlation"]["value"] == 13

        # Idle: batches still run (the ticks), and none of them without data.
        since = time.time()
        time.sleep(6)
        idle = [
            p
            for p in query.recentProgress
            if datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp() >= since
        ]
        assert idle, "no batch ran while idle: the timers would never be decided"
        assert all(p["numInputRows"] > 0 for p in idle), [p["numInputRows"] for p in idle]
        assert totals.rejected == 0 and totals.late == 0  # ticks are neither
    finally:
        query.stop()
    # The state partitions the job asked for, not the session's (2).
    offsets = ccfg.checkpoint(cfg) / "offsets" / "0"
    metadata = json.loads(offsets.read_text().splitlines()[1])
    assert metadata["conf"]["spark.sql.shuffle.partitions"] == "3"
