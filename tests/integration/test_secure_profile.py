"""The ``secure`` profile on real processes: Kafka SASL_SSL with ACLs, Elasticsearch with
security and TLS, and one pipeline run through them with each component's own user.

Runs on its own ports (Kafka 19492/19493, Elasticsearch 19400/19500) and folder
(``<run_dir>/secure``), never the shared services.
"""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import AuthenticationException, AuthorizationException, Elasticsearch

from common.client_options import (
    confluent_kafka_config,
    elasticsearch_kwargs,
    spark_kafka_options,
)
from common.settings import PROJECT_ROOT, Settings
from detections.compiler.plan import load_plan
from detections.stream.job import JobConfig, run
from infra import secure
from infra import security as sec
from ingest.gateway.parse import Identity
from ingest.gateway.sink import KafkaSink
from schemas.events import parse_event
from sigstream.cli import SAMPLE_EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.secure]

SPEC = sec.SecureSpec()
EXPECTED_FINDINGS = 5  # the sample events against the project's rules (test_detect_job)


@pytest.fixture(scope="module")
def profile() -> Iterator[Settings]:
    """The profile up for this module with unique topic and index names; always stopped.
    Its data and secrets are wiped afterwards unless it held some before the test."""
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        events_topic=f"secure.{suffix}.events",
        dlq_topic=f"secure.{suffix}.dlq",
        findings_index=f"secure-{suffix}-findings",
        events_index=f"secure-{suffix}-events",
        shadow_findings_index=f"secure-{suffix}-findings-shadow",
    )
    where = secure.SecureLayout.of(settings)
    had_data = where.passwords.exists()
    try:
        secure.up(settings, SPEC, timeout=240)
        yield settings
    finally:
        secure.down(settings, SPEC, wipe=not had_data)


def as_user(settings: Settings, kafka_user: str | None, es_user: str | None) -> Settings:
    return secure.client_settings(settings, SPEC, kafka_user=kafka_user, es_user=es_user)


def es_client(settings: Settings, user: str, password: str | None = None) -> Elasticsearch:
    s = as_user(settings, None, user)
    kwargs = elasticsearch_kwargs(s)
    if password is not None:
        kwargs["basic_auth"] = (user, password)
    return Elasticsearch(list(s.es_hosts), request_timeout=30, **kwargs)


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    where = secure.SecureLayout.of(Settings())
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=secure.ssl_context(where)) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# Elasticsearch -------------------------------------------------------------------------


def test_es_rejects_anonymous_wrong_password_and_plain_http(profile: Settings) -> None:
    health = f"{SPEC.es_url}/_cluster/health"
    assert status_of(health) == 401
    assert status_of(health, {"Authorization": "Basic c2lnc3RyZWFtX2pvYjp3cm9uZw=="}) == 401
    es = es_client(profile, sec.ES_ANALYST, password="not-the-password")
    try:
        with pytest.raises(AuthenticationException):
            es.search(index=profile.findings_index)
    finally:
        es.close()
    plain = f"http://{SPEC.host}:{SPEC.es_http_port}/_cluster/health"
    with pytest.raises((OSError, http.client.HTTPException)):
        urllib.request.urlopen(plain, timeout=10)
    # And the server certificate is checked: without the profile's CA, TLS fails.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(health, timeout=10, context=ssl.create_default_context())


def test_analyst_cannot_write_findings_the_job_can(profile: Settings) -> None:
    analyst = es_client(profile, sec.ES_ANALYST)
    job = es_client(profile, sec.ES_JOB)
    doc = {"@timestamp": "2026-11-27T00:00:00Z"}
    try:
        with pytest.raises(AuthorizationException):
            analyst.index(index=f"{profile.findings_index}-groups", document=doc)
        asked = {"index": [{"names": [profile.findings_index], "privileges": ["create_doc"]}]}
        assert not analyst.security.has_privileges(**asked)["has_all_requested"]
        assert job.security.has_privileges(**asked)["has_all_requested"]
        # The job writes groups (counts, first/last seen) but only reads suppressions.
        groups = {
            "index": [{"names": [f"{profile.findings_index}-groups"], "privileges": ["write"]}]
        }
        assert job.security.has_privileges(**groups)["has_all_requested"]
        with pytest.raises(AuthorizationException):
            job.index(index=f"{profile.findings_index}-suppressions", document={"id": "x"})
    finally:
        analyst.close()
        job.close()


# Kafka ---------------------------------------------------------------------------------


def _errors_of(config: dict[str, Any]) -> list[KafkaError]:
    """Try a metadata request; return the errors the client reported."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=6)
    admin.poll(1.0)  # error callbacks are served by poll
    return errors


def test_kafka_rejects_plaintext_and_bad_passwords(profile: Settings) -> None:
    _errors_of({"bootstrap.servers": SPEC.kafka_bootstrap, "security.protocol": "plaintext"})
    bad = confluent_kafka_config(as_user(profile, sec.KAFKA_JOB, None))
    bad["sasl.password"] = "wrong"
    errors = _errors_of(bad)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_gateway_cannot_read_events_or_write_another_topic(profile: Settings) -> None:
    gateway = confluent_kafka_config(as_user(profile, sec.KAFKA_GATEWAY, None))
    consumer = Consumer(
        {**gateway, "group.id": "gateway-snoop", "enable.auto.commit": False, "log_level": 0}
    )
    try:
        consumer.assign([TopicPartition(profile.events_topic, 0, 0)])
        # The group lookup may be refused first (no group ACL either); keep polling until
        # the fetch itself is refused.
        codes: set[int] = set()
        deadline = time.monotonic() + 30
        while KafkaError.TOPIC_AUTHORIZATION_FAILED not in codes and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is not None:
                codes.add(msg.error().code())
            assert msg is None or msg.error() is not None, "the gateway read an event"
        assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, codes
    finally:
        consumer.close()

    admin_pw = secure.load_passwords(secure.SecureLayout.of(profile))["kafka"]["admin"]
    admin = AdminClient(secure.admin_config(SPEC, secure.SecureLayout.of(profile), admin_pw))
    other = f"{profile.events_topic}.other"
    admin.create_topics([NewTopic(other, num_partitions=1)])[other].result(30)
    results: list[KafkaError | None] = []
    producer = Producer({**gateway, "message.timeout.ms": 15000, "log_level": 0})
    producer.produce(other, b"x", on_delivery=lambda error, _msg: results.append(error))
    producer.flush(20)
    assert len(results) == 1 and results[0] is not None
    assert results[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


# Pipeline ------------------------------------------------------------------------------


def test_gateway_to_job_to_findings_read_by_the_analyst(
    profile: Settings, spark: Any, tmp_path: Path
) -> None:
    """Sample events through the gateway's Kafka writer (user gateway) -> SASL_SSL -> the
    detect job (Kafka user job, ES user sigstream_job) -> findings the analyst reads."""
    gateway = as_user(profile, sec.KAFKA_GATEWAY, None)
    sink = KafkaSink(
        gateway.kafka_bootstrap,
        profile.events_topic,
        profile.dlq_topic,
        timeout_s=30,
        client_config=confluent_kafka_config(gateway),
    )
    lines = SAMPLE_EVENTS.read_bytes().splitlines()
    events = [parse_event(line) for line in lines]
    try:
        assert sink.ready()
        sink.deliver(events, [], Identity("acme", "ws01"), "secure-test")
    finally:
        sink.close()

    job = as_user(profile, sec.KAFKA_JOB, sec.ES_JOB)
    cfg = JobConfig(
        kafka_bootstrap=job.kafka_bootstrap,
        events_topic=profile.events_topic,
        dlq_topic=profile.dlq_topic,
        es_hosts=tuple(job.es_hosts),
        findings_index=profile.findings_index,
        checkpoint_dir=tmp_path / "checkpoint",
        available_now=True,
        kafka_options=spark_kafka_options(job, bootstrap=False),
        es_options=elasticsearch_kwargs(job),
        # the derived stream sensor health reads, published as the job user over SASL_SSL
        summaries_topic=profile.summaries_topic,
        producer_options=confluent_kafka_config(job),
    )
    totals = run(spark, load_plan([PROJECT_ROOT / "detections" / "rules"]), cfg)
    assert (totals.events, totals.rejected) == (len(events), 0)
    assert totals.created == EXPECTED_FINDINGS

    analyst = es_client(profile, sec.ES_ANALYST)
    try:
        hits = analyst.search(index=profile.findings_index, size=100)["hits"]["hits"]
    finally:
        analyst.close()
    assert len(hits) == EXPECTED_FINDINGS
    assert {h["_source"]["sigstream"]["tenant_id"] for h in hits} == {"acme"}


def test_rotated_passwords_replace_the_old_ones_live(profile: Settings) -> None:
    old_kafka = confluent_kafka_config(as_user(profile, sec.KAFKA_GATEWAY, None))
    old_es = as_user(profile, None, sec.ES_ANALYST)
    secure.rotate_passwords(profile, SPEC, [sec.KAFKA_GATEWAY, sec.ES_ANALYST])
    errors = _errors_of(old_kafka)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    new_kafka = confluent_kafka_config(as_user(profile, sec.KAFKA_GATEWAY, None))
    assert profile.events_topic in AdminClient(new_kafka).list_topics(timeout=10).topics
    assert old_es.es_password is not None
    stale = es_client(profile, sec.ES_ANALYST, password=old_es.es_password.get_secret_value())
    fresh = es_client(profile, sec.ES_ANALYST)
    try:
        with pytest.raises(AuthenticationException):
            stale.search(index=profile.findings_index)
        assert fresh.search(index=profile.findings_index)["hits"]["total"]["value"] >= 0
    finally:
        stale.close()
        fresh.close()
