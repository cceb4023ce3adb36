"""The adversarial corpus end to end: hostile sensors, hostile records written straight to
Kafka and hostile detection content, through the real gateway, Kafka, the detect job,
Elasticsearch and the triage API, at once and beside well-behaved tenants.

Every case was a real failure (issue 17). The assertions are exact counts: each good event
delivered exactly once and matched, each bad one in the dead-letter topic with a reason, no
5xx, no stall, no effect on the other tenant.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from common.settings import Settings, get_settings
from detections.compiler.plan import load_plan
from detections.stream.job import run
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import GatewayServer, TlsFiles, free_port, kafka_app
from ingest.gateway.tls import generate_self_signed
from ingest.producer import EventProducer, describe_reject
from tests.e2e.harness import job_config, read_findings
from tests.integration.test_gateway_kafka import read_topic
from tests.unit.gateway_helpers import event, ndjson
from triage.api import create_app
from triage.auth import KeyStore

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ECHO_RULE = """
title: Hostile suite - echo
id: 5e0a0000-0000-4000-8000-000000000001
status: test
level: medium
logsource: {category: process_creation, product: windows}
detection:
  sel: {CommandLine|contains: ' /c echo '}
  condition: sel
"""
#: The issue's ReDoS: exponential on a backtracking engine, linear on RE2.
REDOS_RULE = """
title: Hostile suite - nested quantifier
id: 5e0a0000-0000-4000-8000-000000000002
status: test
level: high
logsource: {category: process_creation, product: windows}
detection:
  sel: {CommandLine|re: '(a+)+$'}
  condition: sel
"""
#: A backreference: RE2 cannot run it, so it is refused at load, with a reason.
BACKREF_RULE = """
title: Hostile suite - backreference
id: 5e0a0000-0000-4000-8000-000000000003
status: test
level: high
logsource: {category: process_creation, product: windows}
detection:
  sel: {CommandLine|re: '(ab)\\1'}
  condition: sel
"""
ALIAS_BOMB = (
    "title: bomb\nid: 5e0a0000-0000-4000-8000-000000000004\nlogsource: {product: windows}\n"
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "detection: {sel: {CommandLine: x}, condition: sel}\n"
)
KEYS = KeyStore(
    {
        "acme-key": {"tenant": "acme", "role": "analyst", "user": "alice"},
        "globex-key": {"tenant": "globex", "role": "analyst", "user": "gina"},
    }
)


def _surrogate_line(n: int) -> bytes:
    """A JSON line whose CommandLine is a lone UTF-16 surrogate escape (valid JSON)."""
    doc = event(n)
    doc["CommandLine"] = "SURROGATE"
    return json.dumps(doc).replace('"SURROGATE"', '"\\ud800 cmd"').encode()


def _huge_int_line(n: int) -> bytes:
    doc = event(n)
    doc["seq"] = 0
    return json.dumps(doc).replace('"seq": 0', '"seq": ' + "9" * 5000).encode()


def _deep_line() -> bytes:
    return b'{"event_type": "process_creation", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def _nan_line(n: int) -> bytes:
    doc = event(n)
    doc["seq"] = 0
    return json.dumps(doc).replace('"seq": 0', '"seq": NaN').encode()


class Stack:
    """One gateway (TLS) on the real Kafka; its events topic is the job's input."""

    def __init__(self, server: GatewayServer, store: CredentialStore, ca: Path, cfg: Any):
        self.server, self.store, self.ca, self.cfg = server, store, ca, cfg

    def post(self, token: str, body: bytes, **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}/v1/events",
            content=body,
            headers={"Authorization": f"Bearer {token}", **headers},
            verify=str(self.ca),
            timeout=120,
        )


@pytest.fixture
def stack(services: Any, tmp_path: Path, unique: str) -> Iterator[Stack]:
    s = get_settings()
    cfg = job_config(tmp_path, suffix=f"{unique}.hostile", dlq_topic=f"test.{unique}.job.dlq")
    tls = TlsFiles(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    generate_self_signed(tls.cert, tls.key, ["127.0.0.1"])
    store = CredentialStore(tmp_path / "creds.json")
    gateway_dlq = f"test.{unique}.gw.dlq"
    server = GatewayServer(
        lambda: kafka_app(store.path, s.kafka_bootstrap, cfg.events_topic, gateway_dlq),
        "127.0.0.1",
        free_port(),
        tls,
    )
    with server:
        stack = Stack(server, store, tls.cert, cfg)
        stack.gateway_dlq = gateway_dlq  # type: ignore[attr-defined]
        yield stack


def _rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in (
        ("echo.yml", ECHO_RULE),
        ("redos.yml", REDOS_RULE),
        ("backref.yml", BACKREF_RULE),
        ("bomb.yml", ALIAS_BOMB),
        ("deep.yml", "detection: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ):
        (rules / name).write_text(text)
    return rules


def test_hostile_sensors_records_and_rules_beside_good_tenants(
    stack: Stack, spark: Any, tmp_path: Path
) -> None:
    _, acme_ws01 = stack.store.enroll("acme", "ws01")
    _, acme_ws02 = stack.store.enroll("acme", "ws02")
    _, globex_ws01 = stack.store.enroll("globex", "ws01")

    # 1. Two tenants at once: acme's batch carries four poison lines among ten good events.
    poison = [_surrogate_line(100), _huge_int_line(101), _deep_line(), _nan_line(102)]
    acme_batch = ndjson([event(i) for i in range(5)]) + b"\n".join(poison) + b"\n"
    acme_batch += ndjson([event(i) for i in range(5, 10)])
    globex_batch = ndjson([event(i) for i in range(10)])
    globex_batch += ndjson(
        [
            event(10, CommandLine="a" * 41 + "!"),  # the ReDoS input: no match, no hang
            event(11, CommandLine="a" * 50),  # matches (a+)+$
            event(12, CommandLine="a" * 100_000 + "!"),  # 100 KB of it
        ]
    )
    answers: dict[str, httpx.Response] = {}

    def send(name: str, token: str, body: bytes) -> None:
        answers[name] = stack.post(token, body)

    threads = [
        threading.Thread(target=send, args=("acme", acme_ws01, acme_batch)),
        threading.Thread(target=send, args=("globex", globex_ws01, globex_batch)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert answers["acme"].status_code == 200, answers["acme"].text
    assert answers["globex"].status_code == 200, answers["globex"].text
    assert (answers["acme"].json()["accepted"], answers["acme"].json()["rejected"]) == (10, 4)
    assert (answers["globex"].json()["accepted"], answers["globex"].json()["rejected"]) == (13, 0)

    # 2. Id squatting: ws02 sends ws01's next event id first; both events are kept.
    squat = event(20, sensor="ws02", event_id="ws01-000020")
    assert stack.post(acme_ws02, ndjson([squat])).json()["accepted"] == 1
    real = stack.post(acme_ws01, ndjson([event(20)])).json()
    assert (real["accepted"], real["duplicates"]) == (1, 0)

    # 3. Two gzip members: both are read.
    two_members = gzip.compress(ndjson([event(i) for i in range(30, 33)]))
    two_members += gzip.compress(ndjson([event(i) for i in range(33, 36)]))
    answer = stack.post(acme_ws01, two_members, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.json()["accepted"] == 6, answer.text

    # 4. A compression bomb of blank lines is refused as a whole, quickly, with a reason.
    bomb = gzip.compress(b"\n" * (64 << 20), compresslevel=9)
    assert len(bomb) < 100_000
    answer = stack.post(acme_ws01, bomb, **{"Content-Encoding": "gzip"})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.status_code == 413 and answer.json()["reason"] == "too_many_events", answer.text

    # 5. Records written straight to Kafka, around the gateway.
    raw_bad = [
        json.dumps(event(199)).encode().replace(b"cmd.exe /c", b"cmd.exe \xff\xfe /c"),
        _surrogate_line(200),
        _huge_int_line(201),
        _nan_line(202),
        _deep_line(),
    ]
    with EventProducer(stack.cfg.kafka_bootstrap, stack.cfg.events_topic, "unused") as p:
        for line in raw_bad:
            p.send_raw("raw", line)

    # Gateway side: exactly the good events in the topic, the poison in its DLQ.
    topic = read_topic(stack.cfg.events_topic)
    records = [json.loads(r.value) for r in topic if r.key != b"raw"]  # the gateway's
    by_sensor = Counter((d["tenant_id"], d["sensor_id"]) for d in records)
    assert by_sensor == {("acme", "ws01"): 10 + 1 + 6, ("acme", "ws02"): 1, ("globex", "ws01"): 13}
    gateway_dlq = read_topic(stack.gateway_dlq)  # type: ignore[attr-defined]
    assert sorted(r.value for r in gateway_dlq) == sorted(poison)
    gateway_reasons = Counter(describe_reject(r.headers)["reason"] for r in gateway_dlq)
    assert gateway_reasons["invalid_unicode"] == 1 and gateway_reasons["number_out_of_range"] == 2

    # The job: bad content refused at load with reasons, good rules run, poison to its DLQ.
    plan = load_plan([_rules(tmp_path)])
    assert {r.rule.id for r in plan.rules} == {
        "5e0a0000-0000-4000-8000-000000000001",
        "5e0a0000-0000-4000-8000-000000000002",
    }
    reasons = {Path(r.path).name: r for r in plan.rejections}
    assert set(reasons) == {"backref.yml", "bomb.yml", "deep.yml"}
    assert "RE2" in str(reasons["backref.yml"]), reasons["backref.yml"]
    assert "alias" in str(reasons["bomb.yml"]), reasons["bomb.yml"]
    assert "deeper" in str(reasons["deep.yml"]), reasons["deep.yml"]

    totals = run(spark, plan, stack.cfg)
    assert totals.events == len(records)  # valid events; rejected ones are counted apart
    assert totals.rejected == len(raw_bad)
    assert not totals.quarantined
    job_dlq = read_topic(stack.cfg.dlq_topic)
    assert sorted(r.value for r in job_dlq) == sorted(raw_bad)
    reason_of = {r.value: describe_reject(r.headers)["reason"] for r in job_dlq}
    expected = ("invalid UTF-8", "surrogate", "64-bit range", "NaN", "deeper than 16")
    for line, words in zip(raw_bad, expected, strict=True):
        assert words in reason_of[line], (words, reason_of[line])

    findings = read_findings(stack.cfg)
    per_rule = Counter((f["rule"]["name"], f["sigstream"]["tenant_id"]) for f in findings)
    assert per_rule == {
        ("Hostile suite - echo", "acme"): 18,  # 10 + squatter's + ws01's 20 + 6 gzip
        ("Hostile suite - echo", "globex"): 10,
        ("Hostile suite - nested quantifier", "globex"): 1,
    }
    squatted = {
        (f["sigstream"]["sensor_id"], f["event"]["id"])
        for f in findings
        if f["event"]["id"] == "ws01-000020"
    }
    assert squatted == {("ws01", "ws01-000020"), ("ws02", "ws01-000020")}

    # The triage API: each tenant sees its own findings; hostile requests get 4xx, fast.
    settings = Settings(findings_index=stack.cfg.findings_index)
    with TestClient(create_app(settings, KEYS)) as api:
        for key, tenant, matches in (("acme-key", "acme", 18), ("globex-key", "globex", 11)):
            listed = api.get("/api/findings?size=100", headers={"X-API-Key": key}).json()
            assert {f["sigstream"]["tenant_id"] for f in listed["findings"]} == {tenant}
            assert sum(f["sigstream"]["group"]["count"] for f in listed["findings"]) == matches
        huge_q = " ".join(f"term{i}~2" for i in range(2000))
        answer = api.get("/api/findings", params={"q": huge_q}, headers={"X-API-Key": "acme-key"})
        assert answer.status_code == 400, answer.text
        answer = api.post("/api/findings/x/notes", content=b"x" * (8 << 20))
        assert answer.status_code in (401, 413), answer.text
