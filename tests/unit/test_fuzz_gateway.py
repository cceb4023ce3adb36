"""Property-based tests of the gateway parser: whatever the body, no crash; every line is
either an event or a rejection with a known reason; valid events always get through."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from ingest.gateway.parse import BatchError, Identity, Limits, parse_batch
from schemas.events import parse_event
from tests.unit.fuzz_support import json_values
from tests.unit.gateway_helpers import event

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
