"""Issue 17's per-record and resource cases on the parser, the budgets and the ASGI app
(no services; the real gateway + Kafka versions are in tests/integration)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fastapi.testclient import TestClient

from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.limits import ByteBudget
from ingest.gateway.parse import BatchError, Identity, Limits, parse_batch, parse_line
from schemas.events import parse_event
from tests.unit.gateway_helpers import event, ndjson
from tests.unit.memory_sink import MemorySink

NOW = datetime(2026, 11, 27, tzinfo=UTC)
ME = Identity("acme", "ws01")
LIMITS = Limits()
BASE = json.dumps(event(1)).encode()


def reason(raw: bytes) -> str:
    result = parse_line(raw, ME, LIMITS, NOW)
    assert isinstance(result, tuple), f"expected a rejection, got {result!r}"
    return result[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (BASE.replace(b"echo 1", b"\\ud800"), "invalid_unicode"),
        (BASE.replace(b"echo 1", b"\\udfff tail"), "invalid_unicode"),
        (
            json.dumps(event(1, extra={"k": "v"})).encode().replace(b'"k"', b'"\\udc00"'),
            "invalid_unicode",
        ),
        (BASE.replace(b'"seq": 1', b'"seq": ' + b"9" * 5000), "number_out_of_range"),
        (BASE.replace(b'"seq": 1', b'"seq": ' + b"9" * 65), "number_out_of_range"),
        (BASE.replace(b'"seq": 1', b'"seq": ' + str(2**63).encode()), "number_out_of_range"),
        (
            BASE.replace(b'"EventID": 1', b'"EventID": -' + str(2**63 + 1).encode()),
            "number_out_of_range",
        ),
        (BASE.replace(b'"seq": 1', b'"seq": NaN'), "number_out_of_range"),
        (BASE.replace(b'"seq": 1', b'"seq": -Infinity'), "number_out_of_range"),
        (BASE.replace(b'"EventID": 1', b'"EventID": 1e999'), "number_out_of_range"),
        (BASE.replace(b'"seq": 1', b'"seq": NaNx'), "invalid_json"),
        (BASE.replace(b'"seq": 1', b'"seq": 1.5'), "schema_invalid"),
    ],
)
def test_bad_values_are_per_line_rejects(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_values_the_schema_can_hold_are_accepted_and_encoded() -> None:
    pair = BASE.replace(b"echo 1", b"\\ud83d\\ude00")  # a valid surrogate pair: an emoji
    big = (
        json.dumps(event(1, seq=2**63 - 1, extra={"n": "x"}))
        .encode()
        .replace(b'"x"', b"123456789012345678901234567890")
    )  # a big number in a text field stays text
    for raw in (pair, big):
        result = parse_line(raw, ME, LIMITS, NOW)
        assert not isinstance(result, tuple), result
        assert parse_event(result.value).event_id == "ws01-000001"
    big_result = parse_line(big, ME, LIMITS, NOW)
    assert not isinstance(big_result, tuple)
    assert parse_event(big_result.value).extra == {"n": "123456789012345678901234567890"}


def test_blank_lines_count_toward_the_line_cap() -> None:
    limits = Limits(max_events=10)
    body = ndjson([event(1)]) + b"\n" * 10
    with pytest.raises(BatchError) as info:
        parse_batch(body, ME, limits, NOW)
    assert (info.value.status, info.value.reason) == (413, "too_many_events")
    ok = parse_batch(ndjson([event(1)]) + b"\n" * 8, ME, limits, NOW)  # 10 lines: fits
    assert len(ok.events) == 1 and ok.decoded_bytes == len(ndjson([event(1)])) + 8


def test_newline_bomb_stops_at_the_cap_after_one_chunk() -> None:
    bomb = gzip.compress(b"\n" * (64 * 2**20), 9)
    counter = [0]
    with pytest.raises(BatchError) as info:
        parse_batch(bomb, ME, LIMITS, NOW, "gzip", counter)
    assert info.value.reason == "too_many_events"
    assert counter[0] <= 128 * 1024  # charged what it decoded, far from 64 MiB


def test_overlong_line_is_neither_buffered_nor_sent_whole() -> None:
    limits = Limits(max_event_bytes=1000)
    body = b"A" * 5_000_000 + b"\n" + ndjson([event(2)])
    batch = parse_batch(body, ME, limits, NOW)
    assert [e.event_id for e in batch.events] == ["ws01-000002"]
    (r,) = batch.rejects
    assert (r.line, r.reason, len(r.raw)) == (1, "event_too_large", 1000)
    assert "5000000 bytes" in r.message


def test_every_gzip_member_and_zstd_frame_is_read() -> None:
    members = [ndjson([event(m * 10 + i) for i in range(3)]) for m in range(3)]
    gz = b"".join(gzip.compress(m) for m in members)
    assert len(parse_batch(gz, ME, LIMITS, NOW, "gzip").events) == 9
    assert len(parse_batch(gz + b"\0" * 8, ME, LIMITS, NOW, "gzip").events) == 9  # padding
    zs = b"".join(zstandard.ZstdCompressor().compress(m) for m in members)
    assert len(parse_batch(zs, ME, LIMITS, NOW, "zstd").events) == 9


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(ndjson([event(1)])) + b"trailing garbage", "gzip"),
        (gzip.compress(ndjson([event(1)])) + gzip.compress(ndjson([event(2)]))[:-8], "gzip"),
        (zstandard.ZstdCompressor().compress(ndjson([event(1)] * 50))[:-3], "zstd"),
        (b"", "gzip"),
    ],
)
def test_corrupt_or_truncated_streams_are_400(body: bytes, encoding: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(body, ME, LIMITS, NOW, encoding)
    assert (info.value.status, info.value.reason) == (400, "bad_compression")


def test_byte_budget_goes_into_debt_and_is_paid_back() -> None:
    budget = ByteBudget(bytes_per_second=100, burst=1000)
    assert budget.debt("k", 0.0) == 0
    budget.charge("k", 1500, 0.0)  # a body larger than what was left: allowed once
    assert budget.debt("k", 0.0) == pytest.approx(5.0)
    assert budget.debt("k", 2.0) == pytest.approx(3.0)
    assert budget.debt("k", 5.0) == 0
    assert budget.debt("other", 0.0) == 0  # per key


# -- the app ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> CredentialStore:
    return CredentialStore(tmp_path / "creds.json")


def client(store: CredentialStore, sink: MemorySink, **options: Any) -> Iterator[TestClient]:
    with TestClient(create_app(store, sink, GatewayOptions(**options))) as http:
        yield http


def post(http: TestClient, token: str, body: bytes, **headers: str) -> Any:
    headers["Authorization"] = f"Bearer {token}"
    return http.post("/v1/events", content=body, headers=headers)


def test_sensor_cannot_squat_another_sensors_ids_relay_keys_on_event_sensor(
    store: CredentialStore,
) -> None:
    _, ws01 = store.enroll("acme", "ws01")
    _, ws02 = store.enroll("acme", "ws02")
    _, relay = store.enroll("acme", "wef", relay=True)
    sink = MemorySink()
    for http in client(store, sink):
        assert (
            post(http, ws02, ndjson([event(5, sensor="ws02", event_id="ws01-000005")])).json()[
                "accepted"
            ]
            == 1
        )
        assert post(http, ws01, ndjson([event(5)])).json()["accepted"] == 1
        relayed = post(http, relay, ndjson([event(5), event(6, sensor="ws09")])).json()
        assert (relayed["accepted"], relayed["duplicates"]) == (1, 1)
    assert [(e.sensor_id, e.event_id) for e in sink.events] == [
        ("ws02", "ws01-000005"),
        ("ws01", "ws01-000005"),
        ("ws09", "ws09-000006"),
    ]


def test_kafka_refusing_one_record_makes_it_a_reject_not_a_503(store: CredentialStore) -> None:
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    sink.refuse = {"ws01-000002"}
    for http in client(store, sink):
        resp = post(http, token, ndjson([event(i) for i in range(4)]))
        assert resp.status_code == 200
        a = resp.json()
        assert (a["accepted"], a["rejected"], a["reasons"]) == (3, 1, {"kafka_refused": 1})
        assert a["rejects"][0]["line"] == 3
        sink.refuse = set()  # not remembered as delivered: a re-send is accepted
        assert post(http, token, ndjson([event(2)])).json()["accepted"] == 1
    assert [r.reason for _, r in sink.rejects] == ["kafka_refused"]


def test_decoded_bytes_are_rate_limited_before_decoding(store: CredentialStore) -> None:
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    limits = Limits(max_decoded_bytes=4096)
    for http in client(store, sink, limits=limits, bytes_per_second=1, burst_bytes=4096):
        blanks = b"\n" * 4000  # no events at all, still charged
        assert post(http, token, blanks).status_code == 200
        resp = post(http, token, blanks)
        assert resp.status_code == 200  # 96 bytes left: this one puts the key in debt
        resp = post(http, token, ndjson([event(1)]))
        assert resp.status_code == 429 and resp.json()["reason"] == "rate_limited"
        assert int(resp.headers["retry-after"]) > 3000
    assert sink.events == [] and sink.deliveries == 2


def test_authentication_happens_before_any_body_byte_is_read(store: CredentialStore) -> None:
    """Drive the ASGI app directly: with a bad token it answers 401 without ever calling
    ``receive`` (the body is never read); with a good one it reads the body."""
    _, token = store.enroll("acme", "ws01")
    app = create_app(store, MemorySink())

    async def call(auth: bytes) -> tuple[int, int]:
        reads = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": ndjson([event(1)]), "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/events",
            "raw_path": b"/v1/events",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"authorization", auth), (b"content-length", b"1073741824")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        return sent[0]["status"], reads

    assert asyncio.run(call(b"Bearer sst_0000000000000000_" + b"x" * 43)) == (401, 0)
    assert asyncio.run(call(b"")) == (401, 0)
    assert asyncio.run(call(f"Bearer {token}".encode())) == (413, 0)  # declared over the cap
