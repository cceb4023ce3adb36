"""Field drift on the real Kafka, Spark and Elasticsearch: the detect job observes the
SigmaHQ regression events, a baseline is set, then the same events arrive with
``CommandLine`` renamed to ``CommandLin3`` (as a sensor update renaming the field would
send them), and the drift finding and report name exactly the plan's rules that read
``CommandLine`` on that route. Then per sensor version: a fleet where only the sensors of
a NEW version rename the field while the old version's keep sending it; the drift names
the new version and the same rules, and the old version shows no drift."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from detections.compiler.plan import load_plan
from detections.drift import store
from detections.drift.finding_docs import FIELD_DRIFT_RULE
from detections.drift.report import build_report, rule_fields, rules_using
from detections.drift.stage import FieldDriftStage
from detections.drift.state import DriftConfig
from detections.drift.versions import SensorVersions
from detections.stream.job import run
from ingest.adapters.sigma_regression import iter_json_documents, record_from_document
from ingest.adapters.windows import to_event
from ingest.producer import EventProducer
from schemas.events import Heartbeat
from tests.conftest import SHARED_DATA
from tests.e2e.harness import job_config

pytestmark = pytest.mark.integration

# Paths only: each test skips with a clear message when the corpora are absent (a skip at
# import time would fail the whole run's collection).
REGRESSION = SHARED_DATA / "sigma-regression"
RULES = SHARED_DATA / "sigma" / "rules" / "windows" / "process_creation"
SYSMON_PC = ("windows", "process_creation", "sysmon")
SYSMON_ROUTE = "windows/process_creation/sysmon"
#: Small thresholds: the corpus has a few dozen process creations, not a day of a fleet.
CFG = DriftConfig(expected=5, min_events=10)


def _events(rename: str | None, tag: str = "") -> Iterator[Any]:
    """The regression corpus as schema events; with ``rename``, ``CommandLine`` is sent
    as that name instead (new event ids: these are new events; so with ``tag``)."""
    for path in sorted(REGRESSION.rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        for index, document in enumerate(iter_json_documents(text)):
            data = (document.get("Event") or {}).get("EventData")
            if rename and isinstance(data, dict) and "CommandLine" in data:
                data[rename] = data.pop("CommandLine")
            try:
                record = record_from_document(document)
            except ValueError:
                continue
            origin = f"{path}#{index}#{rename or ''}" + (f"#{tag}" if tag else "")
            try:
                yield to_event(record, origin=origin)
            except ValueError:
                continue


def _produce(cfg: Any, rename: str | None) -> int:
    sent = 0
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        for event in _events(rename):
            producer.send_event(event)
            sent += 1
    return sent


def _drift_findings(es: Elasticsearch, index: str) -> list[dict[str, Any]]:
    es.indices.refresh(index=index)
    resp = es.search(
        index=index, size=100, query={"term": {"rule.id": FIELD_DRIFT_RULE.id}}, sort=["_doc"]
    )
    return [h["_source"] | {"_id": h["_id"]} for h in resp["hits"]["hits"]]


def test_a_renamed_field_names_exactly_the_rules_that_read_it(
    services: Any, spark: Any, tmp_path: Path
) -> None:
    if not REGRESSION.is_dir() or not RULES.is_dir():
        pytest.skip("the shared SigmaHQ corpora are absent (../shared/data)")
    suffix = uuid.uuid4().hex[:10]
    cfg = job_config(tmp_path, suffix=suffix, observations_topic=f"test.{suffix}.observations")
    cfg = dataclasses.replace(cfg, summaries_topic=None)
    index = f"test-{suffix}-field-drift"
    plan = load_plan([RULES])
    stage = FieldDriftStage(plan, CFG, index)
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        # 1. The corpus as the sensors send it today: observed, nothing to judge yet.
        sent = _produce(cfg, None)
        totals = run(spark, plan, cfg, companions=[stage])
        assert totals.events == sent
        assert _drift_findings(es, cfg.findings_index) == []
        baseline = store.set_baseline(es, index, time.time(), "manual")
        assert list(baseline) == ["default"]

        # 2. The same events after a "sensor update" renamed CommandLine.
        _produce(cfg, "CommandLin3")
        run(spark, plan, cfg, companions=[stage])
        findings = _drift_findings(es, cfg.findings_index)

        rules = rule_fields(plan)
        expected = [r.rule_id for r in rules_using(rules, SYSMON_PC, "CommandLine", True)]
        by_route = {f["sigstream"]["event"]["route"]: f["sigstream"]["event"] for f in findings}
        assert set(by_route) == {"windows/process_creation/sysmon"}, by_route.keys()
        event = by_route["windows/process_creation/sysmon"]
        assert event["field"] == "CommandLine"
        assert [r["id"] for r in event["rules"]] == expected
        assert event["rule_count"] == len(expected) > 900  # most process_creation rules
        titles = {r["title"] for r in event["rules"]}
        assert "Suspicious Encoded PowerShell Command Line" in titles
        assert "Shadow Copies Deletion Using Operating Systems Utilities" in titles
        # A rule of the route that does not read CommandLine is not named.
        others = [r for r in rules if r.covers(SYSMON_PC) and "CommandLine" not in r.fields]
        assert others and not {r.rule_id for r in others} & {r["id"] for r in event["rules"]}
        assert event["sensor_versions"] == ["unknown"]  # the corpus sends no heartbeats

        # 3. A third pass (the same renamed events again): the finding is not raised twice.
        _produce(cfg, "CommandLin3")
        run(spark, plan, cfg, companions=[stage])
        assert len(_drift_findings(es, cfg.findings_index)) == 1

        # 4. The report `sigstream rules drift` prints, from the stored state.
        states = store.search(es, index, "route")
        tenants = {d["tenant_id"]: d for d in store.search(es, index, "tenant")}
        baselines = store.current_baselines(es, index, tenants, store.route_buckets(states))
        report = build_report(rules, states, baselines, tenants, CFG)
        gone = {(d.route, d.field): [r.rule_id for r in users] for d, users in report.gone}
        named = {k: v for k, v in gone.items() if v}
        assert named == {("windows/process_creation/sysmon", "CommandLine"): expected}
        print(
            json.dumps(
                {
                    "renamed": "CommandLine -> CommandLin3",
                    "events": sent,
                    "rules_named": len(expected),
                    "rules_on_route": sum(1 for r in rules if r.covers(SYSMON_PC)),
                }
            )
        )
    finally:
        es.options(ignore_status=404).indices.delete(index=index)
        es.close()


OLD, NEW = "sigstream-sensor/1.4.0", "sigstream-sensor/2.0.0"


def _produce_from(cfg: Any, sensor: str, version: str | None, rename: str | None, tag: str) -> int:
    """The corpus as one sensor sends it: a heartbeat naming its version first (none
    when ``version`` is None: the job must know it from before), then the events."""
    sent = 0
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        if version is not None:
            beat = Heartbeat(
                sensor_id=sensor,
                host=sensor,
                event_id=f"heartbeat-{tag}",
                event_time=datetime.now(UTC),
                agent_version=version,
            )
            producer.send_event(beat)
        for event in _events(rename, tag):
            producer.send_event(event.model_copy(update={"sensor_id": sensor, "host": sensor}))
            sent += 1
    return sent


def test_only_the_new_sensor_version_renames_and_only_it_drifts(
    services: Any, spark: Any, tmp_path: Path
) -> None:
    if not REGRESSION.is_dir() or not RULES.is_dir():
        pytest.skip("the shared SigmaHQ corpora are absent (../shared/data)")
    suffix = uuid.uuid4().hex[:10]
    cfg = job_config(tmp_path, suffix=suffix, observations_topic=f"test.{suffix}.observations")
    cfg = dataclasses.replace(cfg, summaries_topic=None)
    index = f"test-{suffix}-field-drift"
    plan = load_plan([RULES])
    stage = FieldDriftStage(plan, CFG, index)
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        # 1. The fleet on the old version: observed per version, then the baseline.
        per_pass = _produce_from(cfg, "ws-old", OLD, None, "old-1")
        run(spark, plan, cfg, companions=[stage])
        assert _drift_findings(es, cfg.findings_index) == []
        store.set_baseline(es, index, time.time(), "manual")
        states = store.search(es, index, "route")
        assert {d["version"] for d in states} == {OLD}

        # 2. A restarted job (an empty sensor -> version map, seeded from the drift state):
        # the new version's sensor (heartbeat first) sends CommandLine as CommandLin3; the
        # old one, with no heartbeat this time, keeps sending CommandLine.
        cfg = dataclasses.replace(cfg, sensor_versions=SensorVersions())
        _produce_from(cfg, "ws-new", NEW, "CommandLin3", "new-2")
        _produce_from(cfg, "ws-old", None, None, "old-2")
        run(spark, plan, cfg, companions=[stage])
        findings = _drift_findings(es, cfg.findings_index)

        rules = rule_fields(plan)
        expected = [r.rule_id for r in rules_using(rules, SYSMON_PC, "CommandLine", True)]
        assert len(expected) > 900
        events = [f["sigstream"]["event"] for f in findings]
        assert [(e["route"], e["field"], e["sensor_version"]) for e in events] == [
            ("windows/process_creation/sysmon", "CommandLine", NEW)
        ]
        event = events[0]
        assert [r["id"] for r in event["rules"]] == expected
        assert event["rule_count"] == len(expected)
        assert event["compared_with"] == "route"  # 2.0 has no baseline of its own
        assert event["still_sent_by"] == [OLD]  # the old sensors, labelled by the seed
        assert event["sensors"] == ["ws-new"]

        # 3. The report: the new version's drift names exactly those rules; the old
        # version shows no drift at all, and its events stayed in its own bucket.
        states = store.search(es, index, "route")
        tenants = {d["tenant_id"]: d for d in store.search(es, index, "tenant")}
        assert tenants["default"]["versions"] == {"ws-old": OLD, "ws-new": NEW}
        baselines = store.current_baselines(es, index, tenants, store.route_buckets(states))
        report = build_report(rules, states, baselines, tenants, CFG)
        named = {(d.route, d.field, d.version): [r.rule_id for r in u] for d, u in report.gone if u}
        assert named == {("windows/process_creation/sysmon", "CommandLine", NEW): expected}
        assert not [d for d, _ in report.gone + report.type_changed if d.version != NEW]
        pc = {d["version"]: d["rows"] for d in states if d["route"] == SYSMON_ROUTE}
        assert pc[OLD] == 2 * pc[NEW] > 0 and set(pc) == {OLD, NEW}
        print(
            json.dumps(
                {
                    "renamed_by": NEW,
                    "still_sending": OLD,
                    "events_per_sensor_pass": per_pass,
                    "rules_named": len(expected),
                    "process_creation_sysmon_events": pc,
                }
            )
        )
    finally:
        es.options(ignore_status=404).indices.delete(index=index)
        es.close()
