"""The gateway's batch parser: every line accepted or rejected with a reason code."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest
import zstandard

from ingest.gateway.parse import BatchError, Identity, Limits, parse_batch, parse_line
from schemas.events import parse_event
from tests.unit.gateway_helpers import event, ndjson

NOW = datetime(2026, 11, 27, tzinfo=UTC)
ACME = Identity("acme", "ws01")
LIMITS = Limits()


def reason(raw: bytes, identity: Identity = ACME, limits: Limits = LIMITS) -> str:
    result = parse_line(raw, identity, limits, NOW)
    assert isinstance(result, tuple), f"expected a rejection, got {result!r}"
    return result[0]


def test_valid_event_gets_tenant_from_credential_and_received_time() -> None:
    result = parse_line(json.dumps(event(1)).encode(), ACME, LIMITS, NOW)
    assert not isinstance(result, tuple)
    assert result.tenant_id == "acme"
    sent = parse_event(result.value)  # the bytes Kafka gets
    assert sent.received_time == NOW and sent.tenant_id == "acme"
    assert result.event_id == sent.event_id == "ws01-000001"


def test_event_naming_the_same_tenant_is_accepted() -> None:
    result = parse_line(json.dumps(event(1, tenant_id="acme")).encode(), ACME, LIMITS, NOW)
    assert not isinstance(result, tuple)


def test_event_claiming_another_tenant_is_rejected() -> None:
    assert reason(json.dumps(event(1, tenant_id="globex")).encode()) == "tenant_mismatch"


def test_sensor_may_only_send_its_own_sensor_id_unless_relay() -> None:
    raw = json.dumps(event(1, sensor="ws99")).encode()
    assert reason(raw) == "sensor_mismatch"
    relayed = parse_line(raw, Identity("acme", "collector", relay=True), LIMITS, NOW)
    assert not isinstance(relayed, tuple) and relayed.sensor_id == "ws99"


def test_missing_sensor_id_is_filled_from_credential() -> None:
    doc = event(1)
    del doc["sensor_id"]
    result = parse_line(json.dumps(doc).encode(), ACME, LIMITS, NOW)
    assert not isinstance(result, tuple) and result.sensor_id == "ws01"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"event_type": "process_creation", "sensor_id": "ws01"', "invalid_json"),
        (b"not json at all", "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b'{"event_type": "process_creation", "host": "\xff\xfe"}', "invalid_utf8"),
        (json.dumps(event(1, schema_version=2)).encode(), "schema_version"),
        (json.dumps(event(1, schema_version="1")).encode(), "schema_version"),
        (json.dumps(event(1, event_type="teleport")).encode(), "unknown_event_type"),
        (json.dumps(event(1, seq="many")).encode(), "schema_invalid"),
        (json.dumps(event(1, event_time="yesterday")).encode(), "schema_invalid"),
        (
            json.dumps({k: v for k, v in event(1).items() if k != "event_id"}).encode(),
            "schema_invalid",
        ),
        (json.dumps(event(1, extra={"a": {"b": 1}})).encode(), "schema_invalid"),
    ],
)
def test_malformed_lines_have_reasons(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_deep_nesting_is_refused_before_validation() -> None:
    deep: object = "x"
    for _ in range(50):
        deep = {"k": deep}
    assert reason(json.dumps(event(1, extra=deep)).encode()) == "too_deep"
    # deeper than Python's recursion limit: still a reason, not a crash
    assert reason(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}") == "too_deep"


def test_huge_event_is_refused_without_parsing() -> None:
    raw = json.dumps(event(1, CommandLine="A" * 300_000)).encode()
    assert reason(raw) == "event_too_large"


def test_huge_field_under_the_event_limit_is_a_schema_error() -> None:
    raw = json.dumps(event(1, event_id="e" * 5000)).encode()
    assert reason(raw) == "schema_invalid"


def test_batch_mixes_accepted_and_rejected_with_line_numbers() -> None:
    body = ndjson([event(1), {"nope": 1}]) + b"\n\nnot json\n" + ndjson([event(2)])
    batch = parse_batch(body, ACME, LIMITS, NOW)
    assert [e.line for e in batch.events] == [1, 6]
    assert [(r.line, r.reason) for r in batch.rejects] == [
        (2, "schema_invalid"),
        (5, "invalid_json"),
    ]
    assert batch.rejects[1].raw == b"not json"


@pytest.mark.parametrize("encoding", ["gzip", "zstd", None])
def test_compressed_bodies(encoding: str | None) -> None:
    body = ndjson([event(i) for i in range(50)])
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    batch = parse_batch(body, ACME, LIMITS, NOW, encoding)
    assert len(batch.events) == 50 and not batch.rejects


def test_compression_bomb_is_413_not_out_of_memory() -> None:
    bomb = gzip.compress(b" " * (80 * 1024 * 1024))
    with pytest.raises(BatchError) as info:
        parse_batch(bomb, ACME, Limits(max_decoded_bytes=1024 * 1024), NOW, "gzip")
    assert info.value.status == 413 and info.value.reason == "decoded_too_large"


@pytest.mark.parametrize(
    ("body", "encoding", "status", "why"),
    [
        (b"\x1f\x8b garbage", "gzip", 400, "bad_compression"),
        (gzip.compress(ndjson([event(1)]))[:-12], "gzip", 400, "bad_compression"),
        (b"not zstd", "zstd", 400, "bad_compression"),
        (b"{}", "brotli", 415, "unsupported_encoding"),
    ],
)
def test_unreadable_bodies(body: bytes, encoding: str, status: int, why: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(body, ACME, LIMITS, NOW, encoding)
    assert (info.value.status, info.value.reason) == (status, why)


def test_too_many_events_is_413() -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(ndjson([event(i) for i in range(11)]), ACME, Limits(max_events=10), NOW)
    assert (info.value.status, info.value.reason) == (413, "too_many_events")


def test_the_batch_sent_time_header_becomes_each_events_sent_time() -> None:
    """The client's clock when it sent the batch: what sensor health judges skew on. An
    event's own sent_time wins; an unreadable header is ignored, never fatal."""
    from datetime import timedelta

    from ingest.gateway.app import sent_time_header

    sent = sent_time_header(f"{(NOW - timedelta(seconds=5)).timestamp():.6f}")
    assert sent == NOW - timedelta(seconds=5)
    own = NOW - timedelta(hours=1)
    body = ndjson([event(1), event(2, sent_time=own.isoformat())])
    batch = parse_batch(body, ACME, LIMITS, NOW, sent=sent)
    first, second = (parse_event(e.value) for e in batch.events)
    assert first.sent_time == sent and second.sent_time == own
    assert first.received_time == NOW
    assert (
        parse_event(parse_batch(ndjson([event(3)]), ACME, LIMITS, NOW).events[0].value).sent_time
        is None
    )
    for bad in (None, "", "soon", "nan", "inf", "-5", "1e30", "9" * 40):
        assert sent_time_header(bad) is None


def test_the_client_sends_its_clock_with_every_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    import httpx

    from ingest.client import SENT_TIME_HEADER, GatewayClient

    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(float(request.headers[SENT_TIME_HEADER]))
        return httpx.Response(200, json={"accepted": 1})

    with GatewayClient(
        "http://gw", "t", tmp_path, transport=httpx.MockTransport(handler), compression="identity"
    ) as client:
        client.submit([json.dumps(event(1)).encode()])
        assert client.drain(10)
    assert len(seen) == 1 and abs(seen[0] - time.time()) < 60
