"""The gateway on a real uvicorn server (TLS, self-signed) writing to the real Kafka.

Proves: valid events land in Kafka with the credential's tenant and invalid ones in the DLQ
with reasons; a sensor of tenant A cannot write as tenant B; a re-sent batch is not written
twice, even across a gateway restart; and a 30 s gateway outage during a replay loses and
duplicates nothing (every event id exactly once, each sensor's events in order).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from common.settings import get_settings
from ingest.client import GatewayClient
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import GatewayServer, TlsFiles, free_port, kafka_app
from ingest.gateway.tls import generate_self_signed
from ingest.producer import describe_reject
from ingest.replay import replay_to_gateway
from tests.conftest import shared_path
from tests.unit.gateway_helpers import event, ndjson

pytestmark = pytest.mark.integration

MALFORMED = Path(__file__).resolve().parent.parent / "fixtures" / "malformed_events.txt"


@dataclass
class Gateway:
    server: GatewayServer
    store: CredentialStore
    ca: Path
    events_topic: str
    dlq_topic: str

    def post(self, token: str, body: bytes) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}/v1/events",
            content=body,
            headers={"Authorization": f"Bearer {token}"},
            verify=str(self.ca),
            timeout=60,
        )


@pytest.fixture
def gateway(services: Any, tmp_path: Path, unique: str) -> Iterator[Gateway]:
    s = get_settings()
    tls = TlsFiles(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    generate_self_signed(tls.cert, tls.key, ["127.0.0.1"])
    store = CredentialStore(tmp_path / "creds.json")
    events, dlq = f"test.{unique}.gw.events", f"test.{unique}.gw.dlq"
    server = GatewayServer(
        lambda: kafka_app(store.path, s.kafka_bootstrap, events, dlq),
        "127.0.0.1",
        free_port(),
        tls,
    )
    with server:
        yield Gateway(server, store, tls.cert, events, dlq)


def read_topic(topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of a topic, partition by partition in offset order."""
    consumer = KafkaConsumer(
        bootstrap_servers=get_settings().kafka_bootstrap, enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: dict[int, list[Any]] = defaultdict(list)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for tp, recs in consumer.poll(timeout_ms=500).items():
                out[tp.partition].extend(recs)
        return [r for p in sorted(out) for r in out[p]]
    finally:
        consumer.close()


def test_valid_events_to_kafka_invalid_to_dlq_with_reasons(gateway: Gateway) -> None:
    _, token = gateway.store.enroll("acme", "ws01")
    malformed = [ln for ln in MALFORMED.read_bytes().split(b"\n") if ln.strip()]
    body = ndjson([event(i) for i in range(20)]) + b"\n".join(malformed) + b"\n"
    resp = gateway.post(token, body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["accepted"] == 20
    assert answer["rejected"] == len(malformed)
    records = read_topic(gateway.events_topic)
    docs = [json.loads(r.value) for r in records]
    assert sorted(d["event_id"] for d in docs) == [f"ws01-{i:06d}" for i in range(20)]
    assert {d["tenant_id"] for d in docs} == {"acme"}
    assert {r.key for r in records} == {b"ws01"}
    assert [d["seq"] for d in docs] == list(range(20))  # one key, one partition, in order
    dlq = read_topic(gateway.dlq_topic)
    assert sorted(r.value for r in dlq) == sorted(malformed)  # the original bytes
    headers = [describe_reject(r.headers) for r in dlq]
    assert all(h["reason"] and h["stage"] == "gateway" and h["tenant"] == "acme" for h in headers)
    assert Counter(h["reason"] for h in headers) == Counter(answer["reasons"])


def test_sensor_of_tenant_a_cannot_write_as_tenant_b(gateway: Gateway) -> None:
    _, sensor_a = gateway.store.enroll("tenant-a", "ws01")
    _, relay_a = gateway.store.enroll("tenant-a", "collector", relay=True)
    _, sensor_b = gateway.store.enroll("tenant-b", "ws01")
    claims_b = ndjson([event(i, tenant_id="tenant-b") for i in range(5)])
    for token in (sensor_a, relay_a):
        answer = gateway.post(token, claims_b).json()
        assert (answer["accepted"], answer["reasons"]) == (0, {"tenant_mismatch": 5})
    assert gateway.post(sensor_a, ndjson([event(100)])).json()["accepted"] == 1
    assert gateway.post(sensor_b, ndjson([event(200)])).json()["accepted"] == 1
    by_tenant = Counter(json.loads(r.value)["tenant_id"] for r in read_topic(gateway.events_topic))
    assert by_tenant == {"tenant-a": 1, "tenant-b": 1}
    tenant_of = {
        json.loads(r.value)["event_id"]: json.loads(r.value)["tenant_id"]
        for r in read_topic(gateway.events_topic)
    }
    assert tenant_of == {"ws01-000100": "tenant-a", "ws01-000200": "tenant-b"}
    assert [describe_reject(r.headers)["tenant"] for r in read_topic(gateway.dlq_topic)] == [
        "tenant-a"
    ] * 10


def test_tls_is_on_and_verified(gateway: Gateway) -> None:
    _, token = gateway.store.enroll("acme", "ws01")
    assert gateway.server.url.startswith("https://")
    with pytest.raises(httpx.HTTPError):
        httpx.post(gateway.server.url.replace("https", "http") + "/v1/events", content=b"x")
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the cert
        httpx.post(gateway.server.url + "/v1/events", content=b"x")
    assert gateway.post(token, ndjson([event(1)])).status_code == 200


def test_resent_batch_is_not_written_twice_even_after_a_restart(gateway: Gateway) -> None:
    _, token = gateway.store.enroll("acme", "ws01")
    body = ndjson([event(i) for i in range(50)])
    assert gateway.post(token, body).json()["accepted"] == 50
    gateway.server.stop()
    gateway.server.start()  # a fresh gateway: its window is seeded from the topic
    answer = gateway.post(token, body).json()
    assert (answer["accepted"], answer["duplicates"]) == (0, 50)
    assert len(read_topic(gateway.events_topic)) == 50


class LosesEveryThirdAnswer(httpx.HTTPTransport):
    """The network drops the gateway's answer (after the gateway acted on the request)."""

    def __init__(self, verify: str) -> None:
        super().__init__(verify=verify)
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        self.calls += 1
        if self.calls % 3 == 0:
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_lost_answers_are_resent_and_stored_once(gateway: Gateway, tmp_path: Path) -> None:
    """Batches the gateway stored but whose answer never reached the sensor are sent again;
    Kafka still has every event id exactly once."""
    _, token = gateway.store.enroll("acme", "ws01")
    lossy = LosesEveryThirdAnswer(str(gateway.ca))
    with GatewayClient(
        gateway.server.url, token, tmp_path / "spool", batch_events=25, transport=lossy
    ) as client:
        client.submit(json.dumps(event(i), separators=(",", ":")).encode() for i in range(500))
        assert client.drain(timeout_s=120)
        stats = client.stats
    assert stats.duplicates > 0, "some batches were re-sent after a lost answer"
    docs = [json.loads(r.value) for r in read_topic(gateway.events_topic)]
    assert [d["seq"] for d in docs] == list(range(500))  # once each, in order


OUTAGE_S = float(os.environ.get("SIGSTREAM_GATEWAY_OUTAGE_S", "30"))


def test_gateway_down_30s_during_replay_every_event_once(gateway: Gateway, tmp_path: Path) -> None:
    """The issue's drill: replay real telemetry through the spooling client while the
    gateway is down for 30 s; every event id arrives exactly once, in order per sensor."""
    otrf = shared_path("otrf")
    inputs = sorted(otrf.rglob("*.zip"))[:3]
    _, token = gateway.store.enroll("acme", "replayer", relay=True)
    client = GatewayClient(
        gateway.server.url,
        token,
        tmp_path / "spool",
        verify=str(gateway.ca),
        batch_events=200,
        max_backoff_s=2.0,
    ).start()
    rate = 150.0
    result: dict[str, Any] = {}

    def run() -> None:
        result["ids"], result["skipped"] = replay_to_gateway(
            inputs, client, rate=rate, limit=int(rate * (OUTAGE_S + 15))
        )

    replayer = threading.Thread(target=run)
    replayer.start()
    time.sleep(5)
    gateway.server.stop()
    down_at = time.monotonic()
    time.sleep(OUTAGE_S)
    assert client.stats.retries > 0, "the client never noticed the outage"
    gateway.server.start()
    outage = time.monotonic() - down_at
    replayer.join(timeout=OUTAGE_S + 120)
    assert client.flush(timeout_s=180)
    client.close()
    ids: list[str] = result["ids"]
    assert len(ids) > rate * OUTAGE_S / 2, "the replay must span the outage"
    assert outage >= OUTAGE_S

    records = read_topic(gateway.events_topic)
    arrived = Counter(json.loads(r.value)["event_id"] for r in records)
    assert set(arrived) == set(ids), "every replayed event arrives"
    assert max(arrived.values()) == 1, "no event id twice"
    assert len(records) == len(set(ids))
    last_seq: dict[str, int] = {}
    for r in records:  # partition by partition, offset order
        doc = json.loads(r.value)
        assert doc["seq"] > last_seq.get(doc["sensor_id"], -1), "per-sensor order kept"
        last_seq[doc["sensor_id"]] = doc["seq"]
    print(
        f"\noutage {outage:.0f}s: {len(ids)} events replayed, {len(records)} in Kafka, "
        f"{client.stats.duplicates} duplicates answered, {client.stats.retries} retries"
    )
