"""The gateway's fast validation path (pydantic-core's JSON parser + the schema's validator)
against its reference path (Python's json with strict number hooks, then the ordered checks):
whatever the line, the outcome must be the same: the same event bytes, or a fallback to the
reference, which names the reason. Tenant/sensor fill-in and received/sent time included."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.gateway.parse import (
    NUMBER_FIELDS,
    BatchError,
    Identity,
    Limits,
    fast_validate,
    parse_line,
    reference_validate,
    scan_lines,
    validate_line,
)
from ingest.producer import encode_event
from schemas.events import EVENT_MODELS, Heartbeat
from tests.unit.fuzz_support import json_values
from tests.unit.gateway_helpers import event

NOW = datetime(2026, 11, 27, 8, 30, 1, 123456, tzinfo=UTC)
SENT = datetime(2026, 11, 27, 8, 30, 0, tzinfo=UTC)
ME = Identity("acme", "ws01")
RELAY = Identity("acme", "wef1", relay=True)
LIMITS = Limits()
FIELDS = [
    *sorted(event(0)),
    "tenant_id",
    "schema_version",
    "extra",
    "received_time",
    "sent_time",
    "Hashes",
    "ParentImage",
]


def same_outcome(raw: bytes, identity: Identity = ME, sent: datetime | None = None) -> None:
    reference = reference_validate(raw, identity, LIMITS, NOW, sent)
    fast = fast_validate(raw, identity, NOW, sent)
    if fast is not None:  # the fast path only ever accepts what the reference accepts
        assert not isinstance(reference, tuple), (raw[:200], reference)
        assert encode_event(fast) == encode_event(reference)
    final = validate_line(raw, identity, LIMITS, NOW, sent)
    line = parse_line(raw, identity, LIMITS, NOW, sent)
    if isinstance(reference, tuple):
        assert final == reference
        assert line == reference
    else:
        assert not isinstance(final, tuple)
        assert encode_event(final) == encode_event(reference)
        assert not isinstance(line, tuple)  # the bytes Kafka gets are encode_event's
        assert line.value == encode_event(reference)
        assert (line.tenant_id, line.sensor_id, line.event_id) == (
            reference.tenant_id,
            reference.sensor_id,
            reference.event_id,
        )


def test_an_ordinary_event_takes_the_fast_path_with_the_fill_ins() -> None:
    raw = json.dumps(event(7)).encode()
    fast = fast_validate(raw, ME, NOW, SENT)
    assert fast is not None
    assert (fast.tenant_id, fast.sensor_id) == ("acme", "ws01")
    assert (fast.received_time, fast.sent_time) == (NOW, SENT)
    own = json.dumps(event(7, sent_time="2026-11-27T08:00:00Z", received_time=None)).encode()
    mine = fast_validate(own, ME, NOW, SENT)  # the event's own times win, null included
    assert mine is not None and mine.received_time is None
    assert mine.sent_time == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    same_outcome(own, sent=SENT)
    no_sensor = {k: v for k, v in event(8).items() if k != "sensor_id"}
    filled = fast_validate(json.dumps(no_sensor).encode(), ME, NOW)
    assert filled is not None and filled.sensor_id == "ws01"


@pytest.mark.parametrize(
    "change",
    [
        {"tenant_id": "other"},
        {"tenant_id": "acme"},
        {"tenant_id": None},
        {"sensor_id": "ws02"},
        {"schema_version": "1"},
        {"schema_version": True},
        {"schema_version": 1.0},
        {"schema_version": 2},
        {"event_type": "nope"},
        {"seq": 2**63},
        {"seq": "99999999999999999999"},
        {"EventID": -(2**63) - 1},
        {"EventID": 1.0},
        {"CommandLine": 1e3},
        {"CommandLine": 12345678901234567890123},
        {"CommandLine": 1.5e300},
        {"extra": {"a": 1e3, "b": 18446744073709551616, "c": -0.0}},
        {"extra": {"deep": {"x": 1}}},
        {"extra": {"h": "x,1e123", "n": 1e300, "m": -1.5e-300}},
        {"CommandLine": 10**64, "ParentImage": 10**65},
        {"Hashes": "MD5=1e123,SHA256=" + "9" * 70},
        {"logsource": {"product": "windows", "category": 5}},
        {"host": ""},
        {"Image": "\x00 nul and \u2028 separators"},
    ],
)
def test_edge_values_have_the_reference_outcome(change: dict[str, object]) -> None:
    same_outcome(json.dumps(event(1) | change).encode())
    same_outcome(json.dumps(event(1) | change).encode(), RELAY, SENT)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_type": "process_creation", "seq": NaN}',
        b'{"seq": Infinity}',
        json.dumps(event(1)).encode().replace(b'"EventID": 1', b'"EventID": 1e999'),
        json.dumps(event(1)).encode().replace(b'"seq": 1', b'"seq": ' + b"9" * 70),
        json.dumps(event(1)).encode().replace(b'"seq": 1', b'"seq": ' + b"9" * 5000),
        json.dumps(event(1)).encode().replace(b"echo 1", b"\\ud800"),
        json.dumps(event(1)).encode().replace(b"echo 1", b"\\ud83d\\ude00"),
        json.dumps(event(1)).encode().replace(b"echo 1", b"\xff"),
        json.dumps(event(1)).encode() + b" trailing",
        b"\xef\xbb\xbf" + json.dumps(event(1)).encode(),
        b"[" * 300 + b"]" * 300,
        b'{"a":' * 20 + b"1" + b"}" * 20,
        b"[]",
        b"42",
        b'"text"',
        json.dumps(event(1)).encode().replace(b'"seq": 1', b'"seq": 1, "seq": 2'),
    ],
)
def test_hostile_lines_have_the_reference_outcome(raw: bytes) -> None:
    same_outcome(raw)


def test_number_fields_come_from_the_schema() -> None:
    assert NUMBER_FIELDS[Heartbeat] == (
        "seq",
        "EventID",
        "expected_interval_s",
        "events_sent",
        "events_dropped",
        "events_spooled",
        "dropped_by_source",  # a map of counts (sigstream sensor), bounded by the schema
    )
    assert set(NUMBER_FIELDS) == set(EVENT_MODELS)


@pytest.mark.fuzz
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), st.integers(0, 10**6))
def test_mutated_events_have_the_reference_outcome(changes: dict[str, object], n: int) -> None:
    same_outcome(json.dumps(event(n) | changes).encode())
    same_outcome(json.dumps(event(n) | changes, ensure_ascii=False).encode(), RELAY, SENT)


@pytest.mark.fuzz
@given(st.binary(max_size=400))
def test_arbitrary_bytes_have_the_reference_outcome(raw: bytes) -> None:
    same_outcome(raw)


@pytest.mark.fuzz
@given(st.lists(st.sampled_from(FIELDS), max_size=4), st.binary(max_size=40))
def test_spliced_bytes_have_the_reference_outcome(drop: list[str], junk: bytes) -> None:
    doc = {k: v for k, v in event(3).items() if k not in drop}
    raw = json.dumps(doc).encode()
    cut = len(raw) // 2
    same_outcome(raw[:cut] + junk + raw[cut:])
    same_outcome(raw.replace(b": ", b":" + junk[:3], 1))


def reference_lines(body: bytes, limits: Limits) -> list[tuple[int, bytes, int, bool]] | str:
    """What ``scan_lines`` must yield, computed the obvious way (or the 413 reason)."""
    parts = body.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    if len(parts) > limits.max_events:
        return "too_many_events"
    keep = limits.max_event_bytes + 1
    return [(i + 1, p[:keep], len(p), not p.strip()) for i, p in enumerate(parts)]


@pytest.mark.fuzz
@given(
    st.lists(
        st.sampled_from([b"\n", b" ", b"\r", b"x", b"ab\ncd", b"\n\n", b"y" * 9]), max_size=60
    ),
    st.integers(1, 12),
    st.integers(1, 20),
    st.integers(1, 30),
)
def test_scan_lines_matches_a_plain_split(
    parts: list[bytes], chunk: int, max_events: int, max_event_bytes: int
) -> None:
    """However the decoded body is cut into chunks: the same lines, heads, lengths, blank
    flags and the same 413 at line ``max_events + 1``."""
    body = b"".join(parts)
    limits = Limits(max_events=max_events, max_event_bytes=max_event_bytes)
    chunks = iter([body[i : i + chunk] for i in range(0, len(body), chunk)])
    counter = [0]
    try:
        got: list[tuple[int, bytes, int, bool]] | str = [
            (ln.number, ln.head, ln.length, ln.blank) for ln in scan_lines(chunks, limits, counter)
        ]
    except BatchError as exc:
        got = exc.reason
    assert got == reference_lines(body, limits)
    if not isinstance(got, str):
        assert counter[0] == len(body)
