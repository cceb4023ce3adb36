"""The normalizing stage on the real Kafka and Spark: shippers' records of three layouts
(Winlogbeat ECS, NXLog from the OTRF recordings, Winlogbeat 6 on an ``auto`` topic) and
garbage written to raw topics come out as exactly as many schema events on the events
topic and DLQ records with their reasons; a re-read gives the same event ids; the job
started with it (``--once``) finds what the raw records hold; an idle stage runs no batch."""

from __future__ import annotations

import json
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from detections.normalize import query as normalize_query
from detections.normalize.stage import NormalizeStage
from detections.stream.derived import DerivedPublisher
from detections.stream.job import JobConfig, run
from ingest.producer import describe_reject
from schemas.events import parse_event
from tests.conftest import SHARED_DATA
from tests.e2e.harness import job_config, read_findings

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
OTRF = SHARED_DATA / "otrf"
NXLOG_ARCHIVE = OTRF / "credential_access/host/cmd_sam_copy_esentutl.zip"
BEAT_ARCHIVE = OTRF / "credential_access/host/empire_mimikatz_opth.tar.gz"
SIGMA_RULES = SHARED_DATA / "sigma" / "rules" / "windows" / "builtin"
needs_otrf = pytest.mark.skipif(not OTRF.is_dir(), reason=f"shared corpus absent: {OTRF}")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def otrf_lines(path: Path, limit: int) -> list[bytes]:
    import tarfile

    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".json"))
            lines = archive.read(name).splitlines()
    else:
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(".json"))
            extracted = archive.extractfile(member)
            assert extracted is not None
            lines = extracted.read().splitlines()
    return [line for line in lines if line.strip()][:limit]


def ecs_records(count: int) -> list[bytes]:
    """The ECS fixture as ``count`` distinct records (record ids 1..count)."""
    out = []
    for i in range(count):
        obj = fixture("ecs_sysmon_process_creation")
        obj["winlog"]["record_id"] = str(i + 1)
        out.append(json.dumps(obj).encode())
    return out


def produce(
    bootstrap: str, topic: str, values: list[bytes], headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value, key=b"shipper", headers=headers)
    assert producer.flush(30) == 0


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes, dict[str, str]]]:
    """Every record of ``topic``, every partition read to its end."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        out = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                message = consumer.poll(30)
                assert message is not None, f"{topic} partition {partition} not read to its end"
                assert message.error() is None, message.error()
                out.append((message.key(), message.value(), describe_reject(message.headers())))
                if message.offset() >= high - 1:
                    break
        return out
    finally:
        consumer.close()


def raw_topics(cfg: JobConfig, unique: str, *formats: str) -> dict[str, str]:
    topics = {fmt: f"test.{unique}.raw.{fmt}" for fmt in formats}
    DerivedPublisher(cfg.producer_config()).ensure_topics(list(topics.values()), 2)
    return topics


def stage_for(unique: str) -> NormalizeStage:
    return NormalizeStage(pattern=rf"test\.{unique}\.raw\..+", default_tenant="fleet")


@needs_otrf
def test_three_layouts_and_garbage_give_exact_counts(
    services: Any, spark: Any, unique: str, tmp_path: Path
) -> None:
    cfg = job_config(tmp_path, unique)
    topics = raw_topics(cfg, unique, "ecs", "nxlog", "auto", "syslog")
    ecs, nxlog = ecs_records(20), otrf_lines(NXLOG_ARCHIVE, 150)
    beat = otrf_lines(BEAT_ARCHIVE, 80)
    garbage = [b"{truncated", b'{"hello": "world"}', b"\xff\xfe", b"[1]"]
    produce(cfg.kafka_bootstrap, topics["ecs"], ecs, [("sigstream.tenant", b"acme")])
    produce(cfg.kafka_bootstrap, topics["nxlog"], nxlog)
    produce(cfg.kafka_bootstrap, topics["auto"], beat + garbage)
    produce(cfg.kafka_bootstrap, topics["syslog"], [b"<13>Dec  6 host app: hi"])
    produce(cfg.kafka_bootstrap, topics["ecs"], nxlog[:3])  # the wrong layout for its topic

    query = stage_for(unique).start(spark, cfg)
    assert query is not None
    query.awaitTermination(300)
    assert not query.isActive and query.exception() is None

    events = read_topic(cfg.kafka_bootstrap, cfg.events_topic)
    rejects = read_topic(cfg.kafka_bootstrap, cfg.dlq_topic)
    assert len(events) == len(ecs) + len(nxlog) + len(beat)
    assert len(rejects) == len(garbage) + 1 + 3
    parsed = [parse_event(value) for _, value, _ in events]
    tenants = Counter(e.tenant_id for e in parsed)
    assert tenants == {"acme": len(ecs), "fleet": len(nxlog) + len(beat)}
    for (key, _, headers), event in zip(events, parsed, strict=True):
        assert key == event.sensor_id.encode()
        assert headers == {"tenant": event.tenant_id, "event_id": event.event_id}
    # One id per distinct record: the recording holds a few byte-identical duplicates,
    # which get the same id (the detection side collapses them).
    distinct = len(set(ecs)) + len(set(nxlog)) + len(set(beat))
    assert distinct < len(parsed)
    assert len({(e.sensor_id, e.event_id) for e in parsed}) == distinct
    reasons = Counter(h["reason"].split(":")[0] for _, _, h in rejects)
    assert reasons == {
        "invalid_json": 1,
        "unknown layout": 1,
        "invalid_utf8": 1,
        "not_an_object": 1,
        "unknown_format": 1,
        "adapter_invalid": 3,
    }, rejects
    assert {h["stage"] for _, _, h in rejects} == {"normalize"}
    by_value = {value: h for _, value, h in rejects}
    assert by_value[b'{"hello": "world"}']["reason"].endswith("(keys: hello)")
    assert by_value[b"{truncated"]["origin"].startswith(f"{topics['auto']}:")

    # After a crash the raw records are read again: the same events, the same ids.
    again = stage_for(unique).start(spark, job_config(tmp_path / "fresh", unique))
    assert again is not None
    again.awaitTermination(300)
    twice = [parse_event(v) for _, v, _ in read_topic(cfg.kafka_bootstrap, cfg.events_topic)]
    assert len(twice) == 2 * len(parsed)
    once = Counter((e.sensor_id, e.event_id) for e in parsed)
    assert Counter((e.sensor_id, e.event_id) for e in twice) == once + once


def test_the_job_finds_what_raw_records_hold_with_once(
    services: Any, spark: Any, unique: str, tmp_path: Path
) -> None:
    from detections.compiler.plan import load_plan

    rules = [
        SIGMA_RULES / "security/win_security_audit_log_cleared.yml",
        SIGMA_RULES / "wmi/win_wmi_activity_nteventlogfile_cleareventlog.yml",
    ]
    if not all(r.exists() for r in rules):
        pytest.skip(f"shared corpus absent: {SIGMA_RULES}")
    cfg = job_config(tmp_path, unique)
    topics = raw_topics(cfg, unique, "ecs", "evtx_json")
    produce(
        cfg.kafka_bootstrap,
        topics["ecs"],
        [json.dumps(fixture("ecs_security_1102_user_data")).encode()],
    )
    produce(
        cfg.kafka_bootstrap,
        topics["evtx_json"],
        [json.dumps(fixture("evtx_json_wmi_client_failure")).encode(), b"garbage"],
    )
    totals = run(spark, load_plan(rules), cfg, upstream=[stage_for(unique)])
    assert (totals.events, totals.rejected) == (2, 0)
    findings = read_findings(cfg)
    assert sorted(f["rule"]["id"] for f in findings) == sorted(
        ["d99b79d2-0a6f-4f46-ad8b-260b6e17f982", "d4f1a2b3-7c8e-4d5f-b6a9-1e0c2d3f4e5b"]
    )
    assert len(read_topic(cfg.kafka_bootstrap, cfg.dlq_topic)) == 1


def test_an_idle_stage_runs_no_batch(
    services: Any, spark: Any, unique: str, tmp_path: Path
) -> None:
    cfg = job_config(tmp_path, unique, available_now=False, trigger_seconds=0.2)
    topics = raw_topics(cfg, unique, "ecs")
    query = stage_for(unique).start(spark, cfg)
    assert query is not None
    try:
        produce(cfg.kafka_bootstrap, topics["ecs"], ecs_records(5))
        query.processAllAvailable()
        batch = query.lastProgress["batchId"]
        tracker = spark.sparkContext.statusTracker()
        jobs = tracker.getJobIdsForGroup(query.runId)
        assert jobs  # the query's Spark jobs are in its run's group
        time.sleep(3)  # fifteen triggers without data
        assert query.lastProgress["batchId"] == batch
        assert all(p["batchId"] <= batch for p in query.recentProgress)
        assert tracker.getJobIdsForGroup(query.runId) == jobs  # no Spark job ran
        assert len(read_topic(cfg.kafka_bootstrap, cfg.events_topic)) == 5
    finally:
        query.stop()
    assert normalize_query.checkpoint_for(cfg.checkpoint_dir).is_dir()


def test_once_without_raw_topics_starts_no_query(services: Any, spark: Any, tmp_path: Path) -> None:
    cfg = job_config(tmp_path)  # available_now, as `sigstream detect --once`
    assert stage_for(f"none-{tmp_path.name}").start(spark, cfg) is None
