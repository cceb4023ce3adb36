"""The streaming detection job on the real Kafka, Spark and Elasticsearch: findings,
dead letters with reasons, and no duplicates when data or batches are replayed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from common.settings import PROJECT_ROOT, Settings
from detections.compiler.plan import load_plan
from detections.stream.job import run
from ingest.producer import EventProducer, describe_reject
from sigstream.cli import SAMPLE_EVENTS
from tests.e2e.harness import job_config, read_findings
from triage.queries import summary_rows

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OWN_RULES = PROJECT_ROOT / "detections" / "rules"

EXPECTED = {
    ("0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d01", "fixture-001"),  # LSASS read by procdump
    ("0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d02", "fixture-003"),  # powershell -enc
    ("0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d03", "fixture-005"),  # WINWORD -> cmd
    ("0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04", "fixture-006"),  # sc stop sysmon
    ("0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04", "fixture-007"),  # fltmc unload
}


def _produce(cfg: Any, lines: list[bytes]) -> None:
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        for line in lines:
            producer.send_raw("fixture", line)


def _dead_letters(cfg: Any) -> list[tuple[bytes, dict[str, str]]]:
    consumer = KafkaConsumer(
        cfg.dlq_topic,
        bootstrap_servers=cfg.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        enable_auto_commit=False,
    )
    try:
        return [(m.value, describe_reject(m.headers)) for m in consumer]
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def plan() -> Any:
    return load_plan([OWN_RULES])


def test_findings_dead_letters_and_replays(
    services: Any, spark: Any, plan: Any, tmp_path: Path
) -> None:
    good = SAMPLE_EVENTS.read_bytes().splitlines()
    bad = (FIXTURES / "malformed_events.txt").read_bytes().splitlines()
    cfg = job_config(tmp_path)
    _produce(cfg, good + bad)

    totals = run(spark, plan, cfg)
    assert (totals.events, totals.rejected, totals.created) == (len(good), len(bad), len(EXPECTED))

    findings = read_findings(cfg)
    assert {(f["rule"]["id"], f["event"]["id"]) for f in findings} == EXPECTED
    lsass = next(f for f in findings if f["event"]["id"] == "fixture-001")
    assert lsass["rule"]["name"] == "LSASS Memory Read By Non-System Process"
    assert lsass["rule"]["level"] == "high"
    assert lsass["threat"]["technique"]["id"] == ["T1003.001"]
    assert lsass["host"]["name"] == "WS01"
    assert lsass["sigstream"]["tenant_id"] == "acme"
    assert lsass["sigstream"]["event"]["GrantedAccess"] == "0x1FFFFF"

    rows, total = summary_rows(Settings(findings_index=cfg.findings_index), top=10)
    assert total == len(EXPECTED)
    assert rows[0]["level"] == "critical"  # most severe first
    assert rows[0]["rule"] == "Endpoint Sensor Tampering Command"
    assert sum(r["count"] for r in rows) == len(EXPECTED)

    letters = _dead_letters(cfg)
    assert sorted(value for value, _ in letters) == sorted(bad)  # original bytes, unchanged
    reasons = {value: headers["reason"] for value, headers in letters}
    assert all(headers["stage"] == "detect" for _, headers in letters)
    assert "malformed" in reasons[b"not json at all"]
    assert "malformed" in reasons[bad[0]]
    assert "schema_version 2" in reasons[bad[1]]
    assert "event_id" in reasons[bad[2]]
    assert "unknown event_type teleport" in reasons[bad[3]]

    # The same records again, through the same checkpoint: only the new offsets are read,
    # and every finding they produce already exists.
    _produce(cfg, good)
    again = run(spark, plan, cfg)
    assert (again.events, again.created, again.duplicates) == (len(good), 0, len(EXPECTED))

    # A fresh checkpoint re-reads the whole topic (as after losing the checkpoint):
    # still no duplicate findings.
    fresh = job_config(tmp_path / "fresh", suffix=None)
    fresh = type(fresh)(
        **{
            **fresh.__dict__,
            "events_topic": cfg.events_topic,
            "dlq_topic": cfg.dlq_topic,
            "findings_index": cfg.findings_index,
        }
    )
    replayed = run(spark, plan, fresh)
    assert replayed.created == 0 and replayed.duplicates == 2 * len(EXPECTED)
    assert len(read_findings(cfg)) == len(EXPECTED)


def test_dead_letter_reasons_are_json_safe(services: Any) -> None:
    """Reasons survive a round trip through Kafka headers as text."""
    assert json.loads(json.dumps(describe_reject([("sigstream.reason", "bad \u00e9".encode())])))


def test_job_stores_events_for_triage_context_and_backtests(
    services: Any, spark: Any, plan: Any, tmp_path: Path
) -> None:
    """With an events index, every valid event is searchable next to the findings, as the
    analyst's context view (related events, process ancestry) reads them; with an
    archive, every valid event is in the Parquet history `rules backtest` reads."""
    from elasticsearch import Elasticsearch

    from detections.content.workflow.backtest import archive_events

    good = SAMPLE_EVENTS.read_bytes().splitlines()
    bad = (FIXTURES / "malformed_events.txt").read_bytes().splitlines()
    base = job_config(tmp_path)
    cfg = job_config(
        tmp_path,
        events_index=f"{base.findings_index}-events",
        archive_dir=tmp_path / "archive",
    )
    _produce(cfg, good + bad)
    totals = run(spark, plan, cfg)
    assert (totals.events, totals.rejected) == (len(good), len(bad))
    archived = archive_events(spark, tmp_path / "archive", None)
    assert {r["event_id"] for r in archived.select("event_id").collect()} == {
        json.loads(line)["event_id"] for line in good
    }

    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        assert cfg.events_index is not None
        es.indices.refresh(index=cfg.events_index)
        hits = es.search(index=cfg.events_index, size=100)["hits"]["hits"]
        ids = {h["_source"]["event_id"] for h in hits}
        assert ids == {json.loads(line)["event_id"] for line in good}
        lsass = next(h["_source"] for h in hits if h["_source"]["event_id"] == "fixture-001")
        assert lsass["event_type"] == "process_access" and lsass["host"]
    finally:
        es.indices.delete(index=cfg.events_index, ignore_unavailable=True)
        es.close()
