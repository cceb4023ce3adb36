"""Sensor health on the real Kafka, Spark and Elasticsearch: a small synthetic fleet
(some sensors go silent, drop events, restart or have a wrong clock), summarized per
sensor as the detect tasks do (``SensorSummaries``) and produced to the summaries topic
-> exactly the expected health findings in the findings index and its triage groups, the
right state per sensor in the sensors index, `sigstream sensors` listing them, and a
replay of the topic adding no finding. Then the whole path: `detect --once` summarizing
the fleet's raw events and the health query finding the resets and skew from them."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from typer.testing import CliRunner

from detections.health.feed import SummaryFeed
from detections.health.finding_docs import HEALTH_RULES
from detections.health.query import start
from detections.health.state import HealthConfig
from detections.sinks.elasticsearch import drop_findings_index, groups_index
from ingest.fleet import Fleet, FleetSpec, run_fleet
from ingest.producer import EventProducer
from sigstream.cli import app
from tests.e2e.harness import job_config

pytestmark = pytest.mark.integration

KIND_BY_RULE = {r.id: kind for kind, r in HEALTH_RULES.items()}


def _health_findings(es: Elasticsearch, index: str, tenant: str) -> dict[str, set[str]]:
    es.indices.refresh(index=index)
    resp = es.search(
        index=index,
        size=10_000,
        query={"term": {"sigstream.tenant_id": tenant}},
    )
    found: dict[str, set[str]] = defaultdict(set)
    for hit in resp["hits"]["hits"]:
        src = hit["_source"]
        found[KIND_BY_RULE[src["rule"]["id"]]].add(src["sigstream"]["sensor_id"])
    return dict(found)


def test_fleet_health_findings_and_sensors_index(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    spec = FleetSpec(
        sensors=40,
        events_per_round=3,
        heartbeat_every=2,
        round_s=1.0,
        silent=0.1,
        dropping=0.1,
        restarting=0.1,
        skewed=0.1,
        silent_after=3,
        incident_round=3,
        skew_s=900,
        tenant_id=f"fleet-{unique}",
    )
    fleet = Fleet.build(spec)
    expected = fleet.expected()
    # Heartbeats every 2 s -> silent after 6 s without anything; gaps reported after 3 s.
    health = HealthConfig(default_interval_s=60, skew_threshold_s=300, gap_grace_s=3)
    cfg = job_config(tmp_path, unique, available_now=False, trigger_seconds=1.0)
    sensors_index = f"test-{unique}-sensors"
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    producer = SummaryFeed(cfg.kafka_bootstrap, cfg.summaries_topic)  # as detect tasks do
    stop = threading.Event()
    query = None
    try:
        # Round 0 creates the topic, then the fleet keeps sending (healthy sensors stay
        # alive) until the query has seen everything it must.
        run_fleet(fleet, producer.send, 1, paced=False, flush=producer.flush)
        query = start(spark, cfg, health, sensors_index, checkpoint=tmp_path / "health-ckpt")
        sender = threading.Thread(
            target=run_fleet,
            args=(fleet, producer.send, 600),
            kwargs={"first_round": 1, "flush": producer.flush, "stop": stop.is_set},
            daemon=True,
        )
        sender.start()
        deadline = time.monotonic() + 300
        found: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            assert query.exception() is None, query.exception()
            found = _health_findings(es, cfg.findings_index, spec.tenant_id)
            if all(found.get(k, set()) >= v for k, v in expected.items()):
                break
            time.sleep(2)
        stop.set()
        sender.join(timeout=30)
        # The sensors index is written in the same batch as the findings.
        time.sleep(2)
    finally:
        stop.set()
        if query is not None:
            query.stop()
        producer.close()
    found = _health_findings(es, cfg.findings_index, spec.tenant_id)
    assert {k: found.get(k, set()) for k in expected} == expected
    assert set(found) <= set(expected)

    # Each finding is in the triage view (the groups index) under its own rule name.
    es.indices.refresh(index=groups_index(cfg.findings_index))
    groups = es.search(
        index=groups_index(cfg.findings_index),
        size=1000,
        query={"term": {"sigstream.tenant_id": spec.tenant_id}},
    )["hits"]["hits"]
    names = {g["_source"]["rule"]["name"] for g in groups}
    assert names == {
        "Sensor silent",
        "Sensor sequence gap",
        "Sensor sequence reset",
        "Sensor clock skew",
    }
    assert {g["_source"]["sigstream"]["sensor_id"] for g in groups} == set().union(
        *expected.values()
    )

    # Gap findings say what is missing: the drop_count seqs skipped at the incident.
    es.indices.refresh(index=cfg.findings_index)
    gaps = es.search(
        index=cfg.findings_index,
        size=100,
        query={"term": {"rule.id": HEALTH_RULES["gap"].id}},
    )["hits"]["hits"]
    assert {g["_source"]["sigstream"]["event"]["missing"] for g in gaps} == {spec.drop_count}

    # The sensors index: one document per sensor, silent ones silent, counters right.
    es.indices.refresh(index=sensors_index)
    docs = {
        h["_source"]["sensor_id"]: h["_source"]
        for h in es.search(index=sensors_index, size=1000)["hits"]["hits"]
    }
    assert set(docs) == {s.sensor_id for s in fleet.sensors}
    assert {s for s, d in docs.items() if d["state"] == "silent"} == expected["silent"]
    for sensor in expected["gap"]:
        assert docs[sensor]["missing"] == spec.drop_count and docs[sensor]["gaps"] == 1
        assert docs[sensor]["state"] == "degraded"
    for sensor in expected["reset"]:
        assert docs[sensor]["resets"] == 1
    for sensor in expected["skew"]:
        assert abs(abs(docs[sensor]["skew_s"]) - spec.skew_s) < 60
    healthy = {s.sensor_id for s in fleet.sensors} - set().union(*expected.values())
    assert {docs[s]["state"] for s in healthy} == {"healthy"}
    assert all(docs[s]["expected_interval_s"] == 2 for s in docs)

    # `sigstream sensors` lists them: silent ones with --state silent, everything as JSON.
    runner = CliRunner()
    result = runner.invoke(
        app, ["sensors", "--index", sensors_index, "--state", "silent", "--json"]
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert {d["sensor_id"] for d in listed["sensors"]} == expected["silent"]
    table = runner.invoke(app, ["sensors", "--index", sensors_index, "--tenant", spec.tenant_id])
    assert table.exit_code == 0, table.output
    assert f"Sensors: {spec.sensors}" in table.output
    first_silent = sorted(expected["silent"])[0]
    assert first_silent in table.output and "silent" in table.output
    missing = runner.invoke(app, ["sensors", "--index", f"test-{unique}-nope"])
    assert missing.exit_code == 1 and "no sensors index" in missing.output

    # Replaying the whole topic from scratch (new checkpoint, one pass) finds again what
    # it can without the clock (resets, skew) under the same ids: nothing is duplicated.
    def finding_ids() -> set[str]:
        es.indices.refresh(index=cfg.findings_index)
        hits = es.search(index=cfg.findings_index, size=10_000, query={"match_all": {}})
        return {h["_id"] for h in hits["hits"]["hits"]}

    before = finding_ids()
    replay = start(
        spark,
        dataclasses.replace(cfg, available_now=True),
        health,
        sensors_index,
        checkpoint=tmp_path / "replay-ckpt",
    )
    assert replay.awaitTermination(600), "replay did not finish"
    assert replay.exception() is None
    assert finding_ids() == before

    drop_findings_index(es, cfg.findings_index)
    es.options(ignore_status=404).indices.delete(index=sensors_index)
    es.close()


def test_health_companion_finishes_with_a_once_detect_run(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    """`detect --once` runs the health query as a companion: the job must end when Kafka
    is drained (no timers keep it alive) and the resets and skew must be found."""
    from common.settings import PROJECT_ROOT
    from detections.compiler.plan import load_plan
    from detections.stream.job import run

    spec = FleetSpec(
        sensors=20, silent=0.0, dropping=0.0, restarting=0.1, skewed=0.1,
        incident_round=2, tenant_id=f"once-{unique}",
    )  # fmt: skip
    fleet = Fleet.build(spec)
    cfg = job_config(tmp_path, unique)  # available_now
    sensors_index = f"test-{unique}-sensors"
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        run_fleet(fleet, producer.send_event, 4, paced=False, flush=producer.flush)
    health = HealthConfig(skew_threshold_s=300)

    def companion(session: Any, job_cfg: Any) -> Any:
        return start(session, job_cfg, health, sensors_index)

    plan = load_plan([PROJECT_ROOT / "detections" / "rules"])
    started = time.monotonic()
    totals = run(spark, plan, cfg, companions=[companion])
    assert time.monotonic() - started < 600
    assert totals.events == 20 * (4 * spec.events_per_round + 2)
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        found = _health_findings(es, cfg.findings_index, spec.tenant_id)
        assert found == {"reset": fleet.expected()["reset"], "skew": fleet.expected()["skew"]}
        es.indices.refresh(index=sensors_index)
        assert es.count(index=sensors_index)["count"] == spec.sensors
    finally:
        drop_findings_index(es, cfg.findings_index)
        es.options(ignore_status=404).indices.delete(index=sensors_index)
        es.close()


def test_fleet_command_sends_events_and_heartbeats(services: Any, unique: str) -> None:
    """`sigstream fleet` puts the fleet's records on the topic: events and heartbeats."""
    from kafka import KafkaConsumer

    from common.settings import get_settings

    topic = f"test.{unique}.fleet"
    result = CliRunner().invoke(
        app,
        ["fleet", "--sensors", "20", "--rounds", "2", "--round-s", "0.1", "--topic", topic],
    )
    assert result.exit_code == 0, result.output
    assert "sent 100 records from 20 sensors in 2 rounds" in result.output
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=get_settings().kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        types = [json.loads(m.value)["event_type"] for m in consumer]
    finally:
        consumer.close()
    assert types.count("heartbeat") == 20 and types.count("process_creation") == 80
