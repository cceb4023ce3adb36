"""Property-based tests of the gateway parser and of its whole request path (headers,
encodings, bodies through the ASGI app): whatever the request, no crash and no 5xx; every
line is either an event or a rejection with a known reason; valid events always get
through; the shared sink is only ever handed records it can send."""

from __future__ import annotations

import gzip
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import BatchError, Identity, Limits, parse_batch
from schemas.events import parse_event
from tests.unit.fuzz_support import json_values
from tests.unit.gateway_helpers import event
from tests.unit.memory_sink import MemorySink

pytestmark = pytest.mark.fuzz

NOW = datetime(2026, 11, 27, tzinfo=UTC)
ME = Identity("acme", "ws01")
LIMITS = Limits(max_event_bytes=4096, max_depth=8)
REASONS = {
    "event_too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "too_deep",
    "schema_version",
    "tenant_mismatch",
    "sensor_mismatch",
    "unknown_event_type",
    "schema_invalid",
    # issue 17's reasons (docs/gateway.md): NaN/Infinity/huge numbers, lone surrogates,
    # values the Kafka record cannot carry
    "number_out_of_range",
    "invalid_unicode",
    "unencodable",
}
FIELDS = [*sorted(event(0)), "tenant_id", "schema_version", "extra", "received_time", "Hashes"]


def lines_of(body: bytes) -> int:
    return sum(1 for ln in body.split(b"\n") if ln.strip())


def check(body: bytes, encoding: str | None = None) -> None:
    try:
        batch = parse_batch(body, ME, LIMITS, NOW, encoding)
    except BatchError as exc:
        assert exc.status in (400, 413, 415) and exc.reason
        return
    assert batch.lines == lines_of(body if encoding is None else batch_body(body, encoding))
    for r in batch.rejects:
        assert r.reason in REASONS and r.message
    for e in batch.events:
        assert e.tenant_id == "acme" and e.sensor_id == "ws01"
        assert parse_event(e.value).event_id == e.event_id  # the bytes sent re-validate


def batch_body(body: bytes, encoding: str) -> bytes:
    return gzip.decompress(body) if encoding == "gzip" else zstandard.decompress(body)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes(body: bytes) -> None:
    check(body)


@given(st.binary(max_size=500), st.sampled_from(["gzip", "zstd", "br", None]))
def test_arbitrary_compressed_bytes(body: bytes, encoding: str | None) -> None:
    try:
        parse_batch(body, ME, LIMITS, NOW, encoding)
    except BatchError as exc:
        assert exc.reason


@given(st.lists(json_values, max_size=10))
def test_arbitrary_json_lines(values: list[object]) -> None:
    check(b"\n".join(json.dumps(v).encode() for v in values))


@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), st.integers(0, 10**6))
def test_mutated_events(changes: dict[str, object], n: int) -> None:
    """A valid event with some fields replaced by anything: an event or a reason."""
    check(json.dumps(event(n) | changes).encode())


@given(
    st.lists(st.one_of(st.integers(0, 10**6), st.binary(max_size=300)), max_size=30),
    st.sampled_from(["gzip", "zstd", None]),
)
def test_every_valid_event_still_arrives(items: list[int | bytes], encoding: str | None) -> None:
    """Valid events mixed with garbage lines: all valid ones are accepted, in order."""
    lines = [
        json.dumps(event(i)).encode() if isinstance(i, int) else i.replace(b"\n", b" ")
        for i in items
    ]
    body = b"\n".join(lines)
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    batch = parse_batch(body, ME, LIMITS, NOW, encoding)
    want = [f"ws01-{i:06d}" for i in items if isinstance(i, int)]
    got = [e.event_id for e in batch.events]
    # a garbage line can itself be a valid event only if hypothesis wrote one; never lost
    assert [g for g in got if g in want] == want
    assert all(r.reason in REASONS for r in batch.rejects)


# -- the whole request path: headers, encodings, bodies through the ASGI app -------------

REQUEST_REASONS = REASONS | {"number_out_of_range", "invalid_unicode", "unencodable"}
SURROGATE = (
    b'{"event_type":"process_creation","host":"h","event_id":"s","event_time":'
    b'"2026-11-20T10:00:00Z","CommandLine":"\\ud800"}'
)


class CheckingSink(MemorySink):
    """A sink that fails the test if it is ever handed a record it could not send: every
    value must be an event that re-validates from its bytes, with the ids it claims."""

    def deliver(self, events, rejects, identity, batch):  # type: ignore[no-untyped-def]
        for e in events:
            doc = parse_event(e.value)
            assert (doc.tenant_id, doc.sensor_id, doc.event_id) == e.dedupe_key
        for r in rejects:
            assert r.reason in REQUEST_REASONS and r.message and isinstance(r.raw, bytes)
        return super().deliver(events, rejects, identity, batch)


_APP: dict[str, Any] = {}


def gateway_app() -> dict[str, Any]:
    """One app for all examples (as in production: one shared sink for every request)."""
    if not _APP:
        folder = Path(tempfile.mkdtemp(prefix="fuzz-gw-"))
        store = CredentialStore(folder / "creds.json")
        _, sensor = store.enroll("acme", "ws01")
        _, relay = store.enroll("acme", "wef", relay=True)
        _, revoked = store.enroll("acme", "old")
        store.revoke("old")
        sink = CheckingSink()
        limits = Limits(
            max_body_bytes=64 * 1024,
            max_decoded_bytes=256 * 1024,
            max_events=200,
            max_event_bytes=4096,
            max_depth=8,
        )
        options = GatewayOptions(limits=limits, events_per_second=0, bytes_per_second=0)
        http = TestClient(create_app(store, sink, options), raise_server_exceptions=False)
        _APP.update(http=http, sink=sink, sensor=sensor, relay=relay, revoked=revoked)
    return _APP


line_strategy = st.one_of(
    st.integers(0, 300).map(lambda i: json.dumps(event(i)).encode()),
    st.integers(0, 300).map(lambda i: json.dumps(event(i, sensor="ws07")).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    st.just(b""),
    st.just(b"   \r"),
    st.just(SURROGATE),
    st.integers(1, 6000).map(lambda n: b'{"seq": ' + b"9" * n + b"}"),
    st.sampled_from([b"NaN", b"Infinity", b"-1e999", b"[" * 5000, b"x" * 5000]),
)


@given(
    lines=st.lists(line_strategy, max_size=25),
    auth=st.sampled_from(["sensor", "relay", "revoked", "none", "basic", "bearer-empty", "junk"]),
    encoding=st.sampled_from(
        [
            "identity",
            "gzip",
            "gzip-multi",
            "x-gzip",
            "zstd",
            "deflate",
            "br",
            "garbage",
            "mislabelled-gzip",
            None,
            "GZIP",
            "gzip, zstd",
        ]
    ),
    content_type=st.sampled_from([None, "application/x-ndjson", "text/plain", "\x7f junk"]),
    crlf=st.booleans(),
)
def test_whole_request_path(
    lines: list[bytes], auth: str, encoding: str | None, content_type: str | None, crlf: bool
) -> None:
    """Never a 5xx; a 200 accounts for every line (delivered + duplicate + rejected with a
    reason == lines); the shared sink only ever gets sendable records and never fails."""
    gw = gateway_app()
    http, sink = gw["http"], gw["sink"]
    decoded = (b"\r\n" if crlf else b"\n").join(lines)
    headers: dict[str, str] = {}
    body = decoded
    if encoding in ("gzip", "x-gzip", "GZIP"):
        body = gzip.compress(decoded)
    elif encoding == "gzip-multi":
        half = len(decoded) // 2
        body = gzip.compress(decoded[:half]) + gzip.compress(decoded[half:])
    elif encoding == "zstd":
        body = zstandard.ZstdCompressor().compress(decoded)
    if encoding is not None:
        headers["Content-Encoding"] = {"gzip-multi": "gzip", "mislabelled-gzip": "gzip"}.get(
            encoding, encoding
        )
    if content_type is not None:
        headers["Content-Type"] = content_type
    tokens = {"sensor": gw["sensor"], "relay": gw["relay"], "revoked": gw["revoked"]}
    if auth in tokens:
        headers["Authorization"] = f"Bearer {tokens[auth]}"
    elif auth == "basic":
        headers["Authorization"] = "Basic dXNlcjpwYXNz"
    elif auth == "bearer-empty":
        headers["Authorization"] = "Bearer "
    elif auth == "junk":
        headers["Authorization"] = "Bearer sst_zz"
    before_events, before_rejects = len(sink.events), len(sink.rejects)
    resp = http.post("/v1/events", content=body, headers=headers)
    assert resp.status_code < 500, resp.text
    if auth not in ("sensor", "relay"):
        assert resp.status_code == 401
        return
    answer = resp.json()
    if resp.status_code != 200:
        assert resp.status_code in (400, 413, 415) and answer["reason"], answer
        return
    non_blank = [ln for ln in decoded.split(b"\n") if ln.strip()]
    assert answer["lines"] == len(non_blank)
    assert answer["accepted"] + answer["duplicates"] + answer["rejected"] == answer["lines"]
    assert sum(answer["reasons"].values()) == answer["rejected"]
    assert set(answer["reasons"]) <= REQUEST_REASONS
    assert len(sink.events) - before_events == answer["accepted"]
    assert len(sink.rejects) - before_rejects == answer["rejected"]
    if SURROGATE in non_blank:
        assert answer["reasons"].get("invalid_unicode", 0) >= 1
