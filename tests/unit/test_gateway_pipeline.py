"""The protocol-neutral part of the gateway: one document -> item, and a batch of items ->
per-item outcomes (rate limit, de-duplication, delivery), with an in-memory sink."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.gateway import pipeline
from ingest.gateway.credentials import Credential, CredentialStore
from ingest.gateway.parse import Accepted, Identity, Limits, ParsedBatch, Reject
from ingest.gateway.pipeline import GatewayOptions, Refusal, document_item
from tests.unit.gateway_helpers import event
from tests.unit.memory_sink import MemorySink

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SENSOR = Identity("acme", "ws01")


def _raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_schema_document_goes_through_the_schema_rules() -> None:
    doc = event(1)
    item = document_item(_raw(doc), doc, SENSOR, Limits(), NOW)
    assert isinstance(item, Accepted)
    assert (item.tenant_id, item.sensor_id, item.event_id) == ("acme", "ws01", "ws01-000001")
    other = event(2, sensor="ws02")
    assert document_item(_raw(other), other, SENSOR, Limits(), NOW)[0] == "sensor_mismatch"
    foreign = event(3, tenant_id="evil")
    assert document_item(_raw(foreign), foreign, SENSOR, Limits(), NOW)[0] == "tenant_mismatch"
    # no parsed object: the bytes alone decide (what /v1/events does)
    assert document_item(b"{nope", None, SENSOR, Limits(), NOW)[0] == "invalid_json"


def test_foreign_document_too_large_is_rejected_before_any_adapter() -> None:
    doc = {"log_name": "Security", "event_id": 4624, "pad": "x" * 400}
    reason, _ = document_item(_raw(doc), doc, SENSOR, Limits(max_event_bytes=100), NOW)
    assert reason == "event_too_large"


def _state(tmp_path: Path, sink: MemorySink) -> pipeline.GatewayState:
    return pipeline.new_state(CredentialStore(tmp_path / "creds.json"), sink, GatewayOptions())


def _cred(state: pipeline.GatewayState) -> Credential:
    _, token = state.store.enroll("acme", "ws01")
    cred = state.store.verify(token)
    assert cred is not None
    return cred


def _accepted(index: int, event_id: str) -> Accepted:
    doc = event(index, event_id=event_id)
    item = document_item(_raw(doc), doc, SENSOR, Limits(), NOW)
    assert isinstance(item, Accepted)
    return Accepted(index, item.value, "acme", "ws01", event_id)


def test_deliver_answers_every_item(tmp_path: Path) -> None:
    sink = MemorySink()
    state = _state(tmp_path, sink)
    cred = _cred(state)
    doc = event(7)
    first = document_item(_raw(doc), doc, SENSOR, Limits(), NOW)
    assert isinstance(first, Accepted)
    batch = ParsedBatch(
        events=[
            Accepted(0, first.value, "acme", "ws01", first.event_id),
            Accepted(2, first.value, "acme", "ws01", first.event_id),  # same id again
        ],
        rejects=[Reject(1, b"{nope", "invalid_json", "bad")],
    )

    async def go() -> pipeline.Result:
        async with pipeline.turn(state, cred):
            return await pipeline.deliver(state, cred, batch, "b1")

    result = asyncio.run(go())
    assert [(o.index, o.status, o.reason) for o in result.outcomes()] == [
        (0, "accepted", None),
        (1, "rejected", "invalid_json"),
        (2, "duplicate", None),
    ]
    assert len(sink.events) == 1 and len(sink.rejects) == 1
    again = asyncio.run(go())  # a re-sent batch: everything Kafka has is a duplicate
    assert [o.status for o in again.outcomes()] == ["duplicate", "rejected", "duplicate"]
    assert len(sink.events) == 1


def test_kafka_refusals_are_per_item_and_kafka_down_refuses_the_batch(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.refuse = {"e2"}
    state = _state(tmp_path, sink)
    cred = _cred(state)
    batch = ParsedBatch(events=[_accepted(0, "e1"), _accepted(1, "e2")])

    async def go() -> pipeline.Result:
        async with pipeline.turn(state, cred):
            return await pipeline.deliver(state, cred, batch, "b1")

    assert [o.status for o in asyncio.run(go()).outcomes()] == ["accepted", "kafka_refused"]
    sink.down = True
    with pytest.raises(Refusal) as info:
        asyncio.run(go())
    assert info.value.status == 503 and info.value.retry_after


def test_rate_limit_refuses_the_whole_batch(tmp_path: Path) -> None:
    sink = MemorySink()
    opts = GatewayOptions(events_per_second=1.0, burst_events=10_000.0)
    state = pipeline.new_state(CredentialStore(tmp_path / "c.json"), sink, opts)
    cred = _cred(state)
    one = _accepted(0, "e0")
    big = ParsedBatch(
        events=[Accepted(i, one.value, "acme", "ws01", f"e{i}") for i in range(6_000)]
    )

    async def go() -> pipeline.Result:
        async with pipeline.turn(state, cred):
            return await pipeline.deliver(state, cred, big, "b")

    asyncio.run(go())
    with pytest.raises(Refusal) as info:
        asyncio.run(go())
    assert info.value.status == 429 and info.value.retry_after and not sink.rejects
