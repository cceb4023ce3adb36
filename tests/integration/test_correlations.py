"""Correlation rules on the real Kafka, Spark and Elasticsearch: hand-built event sequences
through Kafka, the detection pass (the only reader of the events) and the matches topic to
correlation findings, late matches reported on each group's own clock, a reconnecting
sensor's old burst correlated, and a restart from the checkpoint in the middle of a window
firing exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from detections.correlation.model import correlation_finding_id
from detections.correlation.query import (
    CorrelationConfig,
    CorrelationContent,
    CorrelationTotals,
    feeding,
    load_content,
    start_correlations,
)
from detections.stream.job import JobConfig, JobTotals
from detections.stream.job import start as start_detect
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
TEMPORAL_ID = "11111111-0000-4000-8000-0000000000c3"
VALUES_ID = "11111111-0000-4000-8000-0000000000c4"
LOGON_ID = "11111111-0000-4000-8000-0000000000c5"
FAILED_ID = "11111111-0000-4000-8000-00000000000f"

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
title: Failed logon
id: {FAILED_ID}
name: failed_logon
logsource: {{product: windows, service: security}}
detection: {{sel: {{EventID: 4625}}, condition: sel}}
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
---
title: a.exe and b.exe in any order
id: {TEMPORAL_ID}
level: high
correlation:
  type: temporal
  rules: [runs_a, runs_b]
  group-by: host
  timespan: 60s
---
title: Three different a.exe command lines on one host
id: {VALUES_ID}
level: medium
correlation:
  type: value_count
  rules: runs_a
  group-by: host
  timespan: 60s
  condition: {{field: CommandLine, gte: 3}}
---
title: Three failed logons for one account, any host
id: {LOGON_ID}
level: medium
correlation:
  type: event_count
  rules: failed_logon
  group-by: TargetUserName
  timespan: 60s
  condition: {{gte: 3}}
"""


def event(host: str, seconds: float, image: str, eid: str, cmd: str | None = None) -> Any:
    return parse_event(
        {
            "event_type": "process_creation",
            "sensor_id": f"sensor-{host}",
            "host": host,
            "event_id": eid,
            "event_time": (T0 + timedelta(seconds=seconds)).isoformat(),
            "Image": f"C:\\Tools\\{image}",
            "CommandLine": cmd,
            "logsource": {"category": "process_creation", "product": "windows"},
        }
    )


def failed_logon(host: str, seconds: float, user: str, eid: str) -> Any:
    """A Security 4625: ``TargetUserName`` is not a schema column, it lives in ``extra``."""
    return parse_event(
        {
            "event_type": "windows_event",
            "sensor_id": f"sensor-{host}",
            "host": host,
            "event_id": eid,
            "event_time": (T0 + timedelta(seconds=seconds)).isoformat(),
            "EventID": 4625,
            "extra": {"TargetUserName": user},
            "logsource": {"product": "windows", "service": "security"},
        }
    )


def send(cfg: JobConfig, events: list[Any]) -> None:
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        for e in events:
            producer.send_event(e)
    assert producer.counts.failed == 0, producer.counts.errors


def detect(spark: Any, cfg: JobConfig, content: CorrelationContent) -> JobTotals:
    """The detection pass over everything in Kafka (availableNow), publishing the base
    rules' matches to the matches topic."""
    totals = JobTotals()
    query = start_detect(spark, content.plan, feeding(cfg, content), totals)
    query.awaitTermination(600)
    assert query.exception() is None
    return totals


def drain(
    spark: Any, cfg: JobConfig, content: CorrelationContent, ccfg: CorrelationConfig
) -> CorrelationTotals:
    """Run the detection pass, then the correlation stage, until Kafka is drained
    (availableNow), like ``sigstream detect --once``."""
    detect(spark, cfg, content)
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
    assert not loaded.rejections and len(loaded.specs) == 5
    return loaded


def test_sequences_through_kafka_become_correlation_findings(
    services: Any, spark: Any, content: CorrelationContent, tmp_path: Path, unique: str
) -> None:
    cfg = job_config(tmp_path, unique)
    ccfg = CorrelationConfig(lateness_s=10)
    send(
        cfg,
        [
            # h1: three a.exe (three command lines) in a minute -> event_count and
            # value_count fire (window edge: the third is exactly 60 s after the first)
            event("h1", 1, "a.exe", "h1-1", "a 1"),
            event("h1", 30, "a.exe", "h1-2", "a 2"),
            event("h1", 61, "a.exe", "h1-3", "a 3"),
            # h2 and h3: two a.exe each; five in total, never three on one host
            event("h2", 2, "a.exe", "h2-1", "a 1"),
            event("h2", 3, "a.exe", "h2-2", "a 1"),
            event("h3", 4, "b.exe", "h3-1"),  # b before a: temporal fires, ordered refuses
            event("h3", 5, "a.exe", "h3-2"),
            # h4: a then b -> temporal and temporal_ordered fire
            event("h4", 10, "a.exe", "h4-1"),
            event("h4", 20, "b.exe", "h4-2"),
            # failed logons grouped by account (an `extra` field), across hosts
            failed_logon("h5", 1, "alice", "l-1"),
            failed_logon("h6", 2, "alice", "l-2"),
            failed_logon("h7", 3, "alice", "l-3"),
            failed_logon("h5", 4, "bob", "l-4"),
            failed_logon("h6", 5, "bob", "l-5"),
            # no rule matches it: it moves no correlation's clock
            event("clock", 300, "notepad.exe", "clock-1"),
            # moves h2's own clock (every correlation over runs_a) past its windows
            event("h2", 300, "a.exe", "h2-clock", "a 1"),
        ],
    )
    totals = drain(spark, cfg, content, ccfg)
    found = correlation_findings(cfg)
    assert sorted((f["rule"]["id"], f["sigstream"]["correlation"]["group_key"]) for f in found) == [
        (COUNT_ID, "h1"),
        (ORDERED_ID, "h4"),
        (TEMPORAL_ID, "h3"),
        (TEMPORAL_ID, "h4"),
        (VALUES_ID, "h1"),
        (LOGON_ID, "alice"),
    ]
    values = next(f for f in found if f["rule"]["id"] == VALUES_ID)
    assert values["sigstream"]["correlation"]["value"] == 3
    logons = next(f for f in found if f["rule"]["id"] == LOGON_ID)
    assert logons["sigstream"]["correlation"]["group_by"] == {"TargetUserName": "alice"}
    assert logons["sigstream"]["correlation"]["base_events"] == ["l-1", "l-2", "l-3"]
    count = next(f for f in found if f["rule"]["id"] == COUNT_ID)
    corr = count["sigstream"]["correlation"]
    assert corr["type"] == "event_count" and corr["value"] == 3
    assert corr["group_by"] == {"host": "h1"}
    assert corr["base_events"] == ["h1-1", "h1-2", "h1-3"]
    assert corr["base_findings"] == [
        finding_id(A_ID, "default", "sensor-h1", e) for e in ("h1-1", "h1-2", "h1-3")
    ]
    assert count["rule"]["level"] == "high" and count["threat"]["technique"]["id"] == ["T1059"]
    assert totals.created == 6 and totals.late == 0

    # A match behind its group's clock (h2 is at 300 s; lateness 10 s) is reported as
    # late, once per correlation that would have counted it, and never counted.
    send(cfg, [event("h2", 5, "a.exe", "h2-late", "a 9")])
    again = drain(spark, cfg, content, ccfg)
    assert again.late == 4 and again.firings == 0
    reports = late_reports(ccfg.late(cfg), cfg)
    assert sorted(r["correlation_id"] for r in reports) == sorted(
        [COUNT_ID, ORDERED_ID, TEMPORAL_ID, VALUES_ID]
    )
    assert {(r["event_id"], r["lateness_ms"]) for r in reports} == {("h2-late", 285_000)}
    assert len(correlation_findings(cfg)) == 6


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


def test_a_base_rule_failing_at_run_time_loses_only_its_own_matches(
    services: Any, spark: Any, content: CorrelationContent, tmp_path: Path, unique: str
) -> None:
    """One bad base rule must not stop the correlations: the detection pass quarantines it
    (its error reaches the job's totals) and the other base rules' matches flow on to
    their correlations. (The engine refuses this regex when it compiles the rules; an error
    raised while matching takes the same path.)"""
    import dataclasses

    from detections.compiler import Pred
    from detections.compiler.plan import plan_rules

    rules = [p.rule for p in content.plan.rules]
    broken = [
        dataclasses.replace(r, ir=Pred("Image", "regex", r"\p{NoSuchProperty}", True))
        if str(r.id) == B_ID
        else r
        for r in rules
    ]
    bad = dataclasses.replace(content, plan=plan_rules(broken))
    cfg = job_config(tmp_path, unique)
    send(
        cfg,
        [
            event("h1", 1, "a.exe", "t-1"),
            event("h1", 2, "b.exe", "t-2"),
            event("h1", 3, "a.exe", "t-3"),
            event("h1", 4, "a.exe", "t-4"),
        ],
    )
    totals = detect(spark, cfg, bad)
    assert list(totals.quarantined) == [B_ID]
    assert "RegexRefused" in totals.quarantined[B_ID]
    assert "NoSuchProperty" in totals.quarantined[B_ID]
    query = start_correlations(spark, cfg, bad, CorrelationConfig(lateness_s=10))
    assert query is not None
    query.awaitTermination(600)
    assert query.exception() is None
    found = correlation_findings(cfg)
    # a.exe x3 fires the count; b.exe's matches are lost, so neither temporal type fires.
    assert [(f["rule"]["id"], f["sigstream"]["correlation"]["base_events"]) for f in found] == [
        (COUNT_ID, ["t-1", "t-3", "t-4"])
    ]


def test_a_reconnecting_sensors_old_burst_still_correlates_exactly_once(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    """Issue 18's scenario with the project's own rule: a live sensor sends current
    events, then a laptop that was offline uploads six failed logons from 45 minutes ago.
    With one global watermark the upload was late and never correlated; on its own
    group's clock it fires "Burst Of Failed Logons On One Host", once, even when the
    spool is uploaded again."""
    from sigstream.commands.correlations import OWN_CORRELATIONS

    content = load_content([OWN_CORRELATIONS])
    burst_id = "5b1f2c40-7a3e-4d2b-9c11-0c0f7a1e9a10"
    assert burst_id in {s.id for s in content.specs}
    cfg = job_config(tmp_path, unique)
    now = datetime.now(UTC)
    live = [
        parse_event(
            {
                "event_type": "windows_event",
                "sensor_id": "sensor-live",
                "host": "server-1",
                "event_id": f"live-{i}",
                "event_time": (now - timedelta(seconds=5 - i)).isoformat(),
                "EventID": 4625,
                "extra": {"TargetUserName": "svc"},
                "logsource": {"product": "windows", "service": "security"},
            }
        )
        for i in range(3)
    ]
    send(cfg, live)
    ccfg = CorrelationConfig()  # the defaults: 60 s lateness
    first = drain(spark, cfg, content, ccfg)
    assert first.firings == 0 and first.late == 0
    spool = [failed_logon("laptop-7", 0, "alice", f"spool-{i}") for i in range(6)]
    old = now - timedelta(minutes=45)
    spool = [
        e.model_copy(update={"event_time": old + timedelta(seconds=20 * i)})
        for i, e in enumerate(spool)
    ]
    send(cfg, spool)
    second = drain(spark, cfg, content, ccfg)
    assert second.late == 0 and second.created == 1
    (finding,) = [f for f in correlation_findings(cfg) if f["rule"]["id"] == burst_id]
    corr = finding["sigstream"]["correlation"]
    assert corr["group_by"] == {"host": "laptop-7"} and corr["value"] == 6
    assert corr["base_events"] == [f"spool-{i}" for i in range(6)]
    # The laptop uploads the same spool again (it never saw the acknowledgement).
    send(cfg, spool)
    third = drain(spark, cfg, content, ccfg)
    assert third.created == 0 and third.late == 0
    assert len([f for f in correlation_findings(cfg) if f["rule"]["id"] == burst_id]) == 1


def test_correlations_follow_the_deployment_kill_switch_and_shadow(
    services: Any, spark: Any, content: CorrelationContent, tmp_path: Path, unique: str
) -> None:
    """A correlation id takes the store's modes like a base rule: disabled writes nothing,
    shadow writes to the shadow index, the others stay active."""
    import dataclasses

    from detections.content.deploy.modes import RuleMode
    from detections.content.deploy.store import DeploymentStore
    from detections.sinks.elasticsearch import connect, ensure_findings_index

    deploy = tmp_path / "deploy"
    store = DeploymentStore(deploy)
    store.set_mode(COUNT_ID, RuleMode(mode="disabled", reason="noisy"))
    store.set_mode(VALUES_ID, RuleMode(mode="shadow"))
    cfg = dataclasses.replace(
        job_config(tmp_path, unique), deploy_dir=deploy, shadow_index=f"test-{unique}-shadow"
    )
    es = connect(cfg.es_hosts)
    try:
        ensure_findings_index(es, f"test-{unique}-shadow")
    finally:
        es.close()
    send(
        cfg,
        [
            event("h1", 1, "a.exe", "k-1", "a 1"),
            event("h1", 2, "a.exe", "k-2", "a 2"),
            event("h1", 3, "a.exe", "k-3", "a 3"),
            event("h1", 4, "b.exe", "k-4"),
        ],
    )
    drain(spark, cfg, content, CorrelationConfig(lateness_s=10))
    active = sorted(f["rule"]["id"] for f in correlation_findings(cfg))
    assert active == sorted([ORDERED_ID, TEMPORAL_ID])  # COUNT disabled, VALUES in shadow
    shadow = read_findings(dataclasses.replace(cfg, findings_index=f"test-{unique}-shadow"))
    assert [f["rule"]["id"] for f in shadow] == [VALUES_ID]


CHAIN_ID = "11111111-0000-4000-8000-0000000000d1"
CHAIN = f"""
title: Two bursts of a.exe on one host within ten minutes
id: {CHAIN_ID}
level: critical
correlation:
  type: event_count
  rules: {COUNT_ID}
  group-by: host
  timespan: 10m
  condition: {{gte: 2}}
"""


def test_a_chained_correlation_fires_from_its_upstream_firings(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    """A correlation over a correlation, streamed: each firing of the upstream goes back
    to the matches topic as a match of the downstream (with --once the stage runs again
    until no firing feeds a chain)."""
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "corr.yml").write_text(RULES + "---" + CHAIN)
    content = load_content([folder])
    assert not content.rejections and CHAIN_ID in {s.id for s in content.specs}
    cfg = job_config(tmp_path, unique)
    send(
        cfg,
        [event("h1", t, "a.exe", f"c-{t}") for t in (1, 2, 3, 100, 101, 102)]
        + [event("h2", t, "a.exe", f"d-{t}") for t in (1, 2, 3)],
    )
    totals = drain(spark, cfg, content, CorrelationConfig(lateness_s=10))
    found = correlation_findings(cfg)
    # The chain does not say `generate: true`, so (Sigma v2) the bursts it reads write no
    # findings of their own; they still feed it: three bursts, one chain firing.
    assert [f["rule"]["id"] for f in found] == [CHAIN_ID]
    assert totals.firings == 4 and totals.chained == 3
    corr = found[0]["sigstream"]["correlation"]
    assert corr["group_by"] == {"host": "h1"} and corr["value"] == 2
    starts = [int((T0 + timedelta(seconds=t)).timestamp() * 1000) for t in (1, 100)]
    assert corr["base_findings"] == [correlation_finding_id(COUNT_ID, "h1", s) for s in starts]
