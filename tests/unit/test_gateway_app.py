"""The gateway's HTTP answers: auth, counts, reasons, limits, duplicates, Kafka away."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import Limits
from tests.unit.gateway_helpers import event, ndjson
from tests.unit.memory_sink import MemorySink


@dataclass
class Gw:
    http: TestClient
    sink: MemorySink
    store: CredentialStore
    token: str

    def post(self, body: bytes, token: str | None = None, **headers: str):  # type: ignore[no-untyped-def]
        headers["Authorization"] = f"Bearer {token or self.token}"
        return self.http.post("/v1/events", content=body, headers=headers)


def make(tmp_path: Path, **options: object) -> Iterator[Gw]:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    app = create_app(store, sink, GatewayOptions(**options))  # type: ignore[arg-type]
    with TestClient(app) as http:
        yield Gw(http, sink, store, token)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gw]:
    yield from make(tmp_path)


def test_batch_answer_counts_and_reasons(gw: Gw) -> None:
    body = ndjson([event(1), event(2, tenant_id="globex"), event(3)]) + b"{oops\n"
    resp = gw.post(gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert (answer["accepted"], answer["rejected"], answer["duplicates"]) == (2, 2, 0)
    assert answer["tenant"] == "acme"
    assert answer["reasons"] == {"tenant_mismatch": 1, "invalid_json": 1}
    assert [r["line"] for r in answer["rejects"]] == [2, 4]
    assert [e.event_id for e in gw.sink.events] == ["ws01-000001", "ws01-000003"]
    assert {e.tenant_id for e in gw.sink.events} == {"acme"}
    assert [r.reason for _, r in gw.sink.rejects] == ["tenant_mismatch", "invalid_json"]


def test_unauthenticated_and_revoked(gw: Gw) -> None:
    resp = gw.http.post("/v1/events", content=ndjson([event(1)]))
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert gw.post(ndjson([event(1)]), token="sst_0000000000000000_" + "x" * 43).status_code == 401
    gw.store.revoke("ws01")
    assert gw.post(ndjson([event(1)])).status_code == 401
    assert gw.sink.events == []


def test_replayed_batch_is_answered_as_duplicates(gw: Gw) -> None:
    body = ndjson([event(i) for i in range(5)] + [event(0)])
    first = gw.post(body).json()
    again = gw.post(body).json()
    assert (first["accepted"], first["duplicates"]) == (5, 1)
    assert (again["accepted"], again["duplicates"]) == (0, 6)
    assert len(gw.sink.events) == 5


def test_same_event_id_in_two_tenants_is_not_a_duplicate(gw: Gw) -> None:
    _, other = gw.store.enroll("globex", "ws01")
    assert gw.post(ndjson([event(1)])).json()["accepted"] == 1
    answer = gw.post(ndjson([event(1)]), token=other).json()
    assert answer["accepted"] == 1 and answer["tenant"] == "globex"
    assert [e.tenant_id for e in gw.sink.events] == ["acme", "globex"]


def test_kafka_unavailable_is_503_with_retry_after_and_nothing_remembered(gw: Gw) -> None:
    gw.sink.down = True
    resp = gw.post(ndjson([event(1)]))
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
    gw.sink.down = False
    assert gw.post(ndjson([event(1)])).json()["accepted"] == 1  # not taken for a duplicate


def test_bad_bodies_are_4xx_not_crashes(gw: Gw) -> None:
    resp = gw.post(b"garbage", **{"Content-Encoding": "zstd"})
    assert resp.status_code == 400 and resp.json()["reason"] == "bad_compression"
    resp = gw.post(b"{}", **{"Content-Encoding": "br"})
    assert resp.status_code == 415
    assert gw.http.get("/healthz").json()["status"] == "ok"


def test_size_limits_are_413(tmp_path: Path) -> None:
    limits = Limits(max_body_bytes=2000, max_events=3)
    for gw in make(tmp_path, limits=limits, burst_events=10):
        resp = gw.post(b"x" * 3000)
        assert resp.status_code == 413 and resp.json()["reason"] == "body_too_large"
        resp = gw.post(ndjson([{"a": i} for i in range(4)]))
        assert resp.status_code == 413 and resp.json()["reason"] == "too_many_events"


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    options = {"events_per_second": 1, "burst_events": 1_000, "limits": Limits(max_events=1_000)}
    for gw in make(tmp_path, **options):
        body = ndjson([event(i) for i in range(1_000)])
        assert gw.post(body).status_code == 200
        resp = gw.post(ndjson([event(10_001)]))
        assert resp.status_code == 429
        assert resp.json()["reason"] == "rate_limited"
        assert int(resp.headers["retry-after"]) >= 1


def test_options_refuse_a_burst_smaller_than_a_batch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="burst"):
        create_app(
            CredentialStore(tmp_path / "c.json"), MemorySink(), GatewayOptions(burst_events=5)
        )


def test_answer_lists_at_most_100_rejects_but_counts_all(gw: Gw) -> None:
    answer = gw.post(b"x\n" * 150).json()
    assert answer["rejected"] == 150 and len(answer["rejects"]) == 100
    assert json.dumps(answer)  # plain JSON


def test_kafka_unreachable_is_503_within_seconds(tmp_path: Path) -> None:
    """The real Kafka sink pointed at a port nobody listens on: 503, not a hang or crash."""
    from ingest.gateway.server import free_port
    from ingest.gateway.sink import KafkaSink

    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = KafkaSink(f"127.0.0.1:{free_port()}", "t", "t.dlq", timeout_s=5)
    with TestClient(create_app(store, sink, GatewayOptions())) as http:
        started = time.monotonic()
        resp = http.post(
            "/v1/events", content=ndjson([event(1)]), headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code == 503 and resp.json()["reason"] == "kafka_unavailable"
        assert int(resp.headers["retry-after"]) >= 1
        assert time.monotonic() - started < 20
        assert http.get("/healthz").json()["totals"]["kafka_unavailable"] == 1
