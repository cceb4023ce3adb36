"""The spooling sensor client against a real uvicorn gateway (memory sink, no Kafka):
it keeps order, survives the gateway and "Kafka" being away, splits refused batches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.client import CredentialRejected, GatewayClient
from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import Limits
from ingest.gateway.server import GatewayServer, free_port
from tests.unit.gateway_helpers import event
from tests.unit.memory_sink import MemorySink


def line(n: int, **fields: object) -> bytes:
    return json.dumps(event(n, **fields), separators=(",", ":")).encode()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GatewayServer, MemorySink, CredentialStore, str]]:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    opts = GatewayOptions(limits=Limits(max_event_bytes=2048))
    server = GatewayServer(lambda: create_app(store, sink, opts), "127.0.0.1", free_port())
    server.start()
    yield server, sink, store, token
    server.stop()


def test_gateway_outage_loses_nothing_and_keeps_order(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, sink, _, token = setup
    client = GatewayClient(
        server.url, token, tmp_path / "spool", batch_events=50, max_backoff_s=0.5
    ).start()
    client.submit(line(i) for i in range(200))
    assert client.flush(30)
    server.stop()
    client.submit(line(i) for i in range(200, 500))  # spooled while the gateway is down
    time.sleep(1.5)
    assert len(sink.events) == 200
    server.start()
    assert client.flush(30)
    client.close()
    assert [e.seq for e in sink.events] == list(range(500))
    assert client.stats.retries > 0


def test_kafka_away_then_back(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, sink, _, token = setup
    sink.down = True
    with GatewayClient(server.url, token, tmp_path / "spool", max_backoff_s=0.5) as client:
        client.submit(line(i) for i in range(10))
        assert client.drain(timeout_s=1.5) is False  # 503 + Retry-After: still spooled
        sink.down = False
        assert client.drain(timeout_s=30)
    assert [e.seq for e in sink.events] == list(range(10))


def test_refused_single_event_is_set_aside_and_the_rest_goes_on(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, sink, _, token = setup
    with GatewayClient(
        server.url, token, tmp_path / "spool", compression="identity", batch_bytes=1 << 20
    ) as client:
        client.submit([line(0), line(1, CommandLine="A" * 4000), line(2), b"not json"])
        assert client.drain(timeout_s=30)
        stats = client.stats
    # the oversized event is rejected per line (reason event_too_large), not per batch
    assert [e.seq for e in sink.events] == [0, 2]
    assert stats.reasons == {"event_too_large": 1, "invalid_json": 1}


def test_revoked_credential_stops_delivery_and_keeps_the_spool(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, sink, store, token = setup
    store.revoke("ws01")
    client = GatewayClient(server.url, token, tmp_path / "spool")
    client.submit([line(0)])
    with pytest.raises(CredentialRejected):
        client.drain(timeout_s=10)
    assert client.spool.pending() and sink.events == []
    client.close()


def test_batches_too_big_for_the_gateway_are_halved(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    opts = GatewayOptions(limits=Limits(max_body_bytes=4000))
    server = GatewayServer(lambda: create_app(store, sink, opts), "127.0.0.1", free_port())
    with server, GatewayClient(server.url, token, tmp_path / "spool", compression="identity") as c:
        c.submit([line(i) for i in range(40)] + [line(40, CommandLine="B" * 5000), line(41)])
        assert c.drain(timeout_s=60)
        assert c.stats.dropped == 1  # one event alone is bigger than a whole body may be
    assert [e.seq for e in sink.events] == [*range(40), 41]
    assert b"B" * 5000 in (tmp_path / "spool" / "rejected.ndjson").read_bytes()
