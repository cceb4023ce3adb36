"""The bulk API's fast paths against the reference they replace: a source line parsed once
by pydantic-core (``parse.plain_object``) and, for schema events, validated from that parse
(``parse.accepted_object``); repeated action lines from a cache; the answer rendered from
a template (``bulk.answer_bytes``). Whatever the input, the outcome must be the same: the
same objects, the same Kafka bytes and reasons per item, the same answer bytes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import strategies as st

from ingest.gateway import bulk
from ingest.gateway.parse import (
    Identity,
    Limits,
    ParsedBatch,
    Reject,
    loads,
    plain_object,
)
from ingest.gateway.pipeline import Outcome, document_item
from tests.unit.fuzz_support import json_values
from tests.unit.gateway_helpers import event

NOW = datetime(2026, 11, 27, 8, 30, 1, 123456, tzinfo=UTC)
SENT = datetime(2026, 11, 27, 8, 30, 0, tzinfo=UTC)
ME = Identity("acme", "ws01")
RELAY = Identity("acme", "wef1", relay=True)
LIMITS = Limits()


def ecs(n: int, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@timestamp": "2026-11-20T10:00:00.000Z",
        "event": {"code": "1", "kind": "event"},
        "host": {"name": "ws01"},
        "winlog": {
            "channel": "Microsoft-Windows-Sysmon/Operational",
            "provider_name": "Microsoft-Windows-Sysmon",
            "computer_name": "WS01.acme.local",
            "record_id": n,
            "event_id": "1",
            "event_data": {"Image": "C:\\x.exe", "CommandLine": f"x {n}", "ProcessId": "7"},
        },
    }
    doc.update(changes)
    return doc


def reference_parsed(raw: bytes) -> dict[str, Any] | None:
    """What the bulk path used before ``plain_object``: Python's json, strict numbers."""
    try:
        obj = loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def reference_batch(ops: list[bulk.BulkOp], identity: Identity) -> ParsedBatch:
    """``bulk.to_batch`` as it was: every source parsed by ``loads``, then document_item."""
    batch = ParsedBatch()
    for op in ops:
        if not op.carries_event or op.source is None:
            continue
        raw = op.source
        if op.source_length > LIMITS.max_event_bytes:
            batch.rejects.append(Reject(op.number, raw, "event_too_large", "x"))
            continue
        result = document_item(raw, reference_parsed(raw), identity, LIMITS, NOW, SENT)
        if isinstance(result, tuple):
            batch.rejects.append(Reject(op.number, raw, *result))
        else:
            batch.events.append(replace(result, line=op.number))
    return batch


def same_batch(sources: list[bytes], identity: Identity = ME) -> None:
    body = b"".join(b'{"create":{}}\n' + s.replace(b"\n", b" ") + b"\n" for s in sources)
    ops = bulk.parse_bulk(body, None, LIMITS)
    fast = bulk.to_batch(ops, identity, LIMITS, NOW, SENT)
    ref = reference_batch(ops, identity)
    assert fast.events == ref.events
    assert [(r.line, r.raw, r.reason) for r in fast.rejects] == [
        (r.line, r.raw, r.reason) for r in ref.rejects
    ]
    assert [r.message for r in fast.rejects if r.reason != "event_too_large"] == [
        r.message for r in ref.rejects if r.reason != "event_too_large"
    ]


def same_object(raw: bytes) -> None:
    fast = plain_object(raw)
    if fast is not None:  # only ever what the reference parser makes of the bytes
        ref = reference_parsed(raw)
        assert ref is not None
        assert json.dumps(fast) == json.dumps(ref)
        assert repr(fast) == repr(ref)  # types too (1 vs 1.0, -0.0)


HOSTILE = [
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": 1e999}',
    b'{"a": -1E400}',
    b'{"a": 1e308, "b": 2.5e-320, "c": -0.0, "d": -0, "e": 0.1, "f": 1E5}',
    b'{"a": ' + b"9" * 64 + b"}",
    b'{"a": ' + b"9" * 65 + b"}",
    b'{"a": "\\ud800"}',
    b'{"a": "\\ud83d\\ude00", "b": "\\u00e9"}',
    b'{"a": "\xff"}',
    b'{"a": "\xc3\xa9 \xe2\x80\xa8"}',
    b"\xef\xbb\xbf{}",
    b'{"a": 1, "a": 2}',
    b'{"a": 1} trailing',
    b' \t{"a": [1, 2.0, true, null, {}]}  \r',
    b"[]",
    b"42",
    b"",
    b'{"a":' * 40 + b"1" + b"}" * 40,
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_plain_object_reads_what_the_reference_reads(raw: bytes) -> None:
    same_object(raw)


def test_schema_events_ecs_records_and_hostile_lines_have_the_reference_outcome() -> None:
    sources = [json.dumps(event(n)).encode() for n in range(3)]
    sources += [json.dumps(ecs(n)).encode() for n in range(3)]
    sources += [json.dumps(event(5) | {"sensor_id": "ws02"}).encode()]
    sources += [json.dumps(event(6) | {"tenant_id": "other"}).encode()]
    sources += [json.dumps(event(7) | {"seq": 2**64}).encode()]
    sources += [json.dumps(ecs(8, winlog={"channel": "x"})).encode()]
    sources += [json.dumps({"no": "layout"}).encode()]
    sources += [h for h in HOSTILE if h]
    same_batch(sources)
    same_batch(sources, RELAY)


@pytest.mark.fuzz
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_as_the_reference(raw: bytes) -> None:
    same_object(raw)
    if raw.strip() and b"\n" not in raw:
        same_batch([raw])


@pytest.mark.fuzz
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.integers(0, 10**6))
def test_mutated_documents_have_the_reference_outcome(changes: dict[str, Any], n: int) -> None:
    docs = [event(n) | changes, ecs(n, **changes), ecs(n) | {"winlog": changes}]
    raws = [json.dumps(d, ensure_ascii=a).encode() for d in docs for a in (True, False)]
    for raw in raws:
        same_object(raw)
    same_batch(raws)
    same_batch(raws, RELAY)


def test_repeated_action_lines_come_from_the_cache_unchanged() -> None:
    body = b'{"create":{"_index":"w-8","_id":"a"}}\n{"x":1}\n' * 3 + b'{"index":{}}\n{"y":2}\n'
    first = bulk.parse_bulk(body, None, LIMITS)
    again = bulk.parse_bulk(body, None, LIMITS)
    assert first == again
    assert [(o.action, o.index, o.doc_id) for o in first] == [
        ("create", "w-8", "a"),
        ("create", "w-8", "a"),
        ("create", "w-8", "a"),
        ("index", "sigstream", None),
    ]
    for _ in range(2):  # a bad action line is refused every time, never cached
        with pytest.raises(Exception, match="Malformed action"):
            bulk.parse_bulk(b'{"nope":{}}\n{}\n', None, LIMITS)
    # A cut action line (over max_event_bytes) is refused even if its head was seen.
    small = Limits(max_event_bytes=12)
    bulk.parse_bulk(b'{"index":{}}\n{}\n', None, small)
    with pytest.raises(Exception, match="over"):
        bulk.parse_bulk(b'{"index":{}}   \n{}\n', None, small)


def reference_answer(ops: list[bulk.BulkOp], outcomes: dict[int, Outcome], took: int) -> bytes:
    return bytes(JSONResponse(bulk.answer(ops, outcomes, took)).body)


def test_answer_bytes_are_the_json_response_bytes() -> None:
    ops = [
        bulk.BulkOp(1, "create", "sigstream", None, b"{}", 2),
        bulk.BulkOp(2, "index", 'we"ird\\ind\u00e9x\u2028', "given-id", b"{}", 2),
        bulk.BulkOp(3, "create", "sigstream", None, b"{}", 2),
        bulk.BulkOp(4, "create", "sigstream", None, b"{}", 2),
        bulk.BulkOp(5, "update", "sigstream", "u", error=(400, "x", "no updates")),
        bulk.BulkOp(6, "create", "sigstream", None, b"{}", 2),
        bulk.BulkOp(7, "create", "other", None, b"{}", 2),
        bulk.BulkOp(8, "create", "sigstream", None, b"{}", 2),
    ]
    outcomes = {
        1: Outcome(1, "accepted", "id-1"),
        2: Outcome(2, "duplicate", 'dup"\u00e9'),
        3: Outcome(3, "rejected", None, "schema_invalid", 'bad "x" \u00e9'),
        4: Outcome(4, "kafka_refused", None, "kafka_refused", "too large"),
        6: Outcome(6, "accepted", None),
        7: Outcome(7, "accepted", "id-7"),
    }  # 8: no outcome
    for took in (0, 3, 12345):
        assert bulk.answer_bytes(ops, outcomes, took) == reference_answer(ops, outcomes, took)
    written = {o.number: Outcome(o.number, "accepted", f"e{o.number}") for o in ops}
    clean = [o for o in ops if o.error is None]
    assert bulk.answer_bytes(clean, written, 1) == reference_answer(clean, written, 1)
    assert b'"errors":false' in bulk.answer_bytes(clean, written, 1)
    assert bulk.answer_bytes([], {}, 0) == reference_answer([], {}, 0)
