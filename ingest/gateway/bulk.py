"""The Elasticsearch bulk API's wire format: a body -> operations, outcomes -> the answer.

Pure (no I/O, no clock). A bulk body is NDJSON: an action line (``{"index": {...}}``,
``create``, ``update`` or ``delete``) followed, except for ``delete``, by one source line.
It is decoded with the same bounded streaming decoder and line scanner as ``/v1/events``
(``parse.decoded_chunks`` / ``parse.scan_lines``): gzip/zstd with a decoded-size cap,
lines never buffered past ``max_event_bytes``, at most ``max_events`` operations.

Only ``index`` and ``create`` carry events. ``update`` and ``delete`` are answered per item
as errors (the gateway is an append-only front door), never failing their neighbours. An
action line that is not an action is a 400 for the whole body, as Elasticsearch answers it:
without it the pairing of the following lines is unknown.

The answer's per-item statuses are chosen for how shippers decide what to retry (see
docs/shippers.md): 201 written, 200 ``noop`` for a duplicate (every client counts 2xx as
done, while several count 409 as a failure), 400 with a reason for a document that went to
the DLQ (no client retries a 400), and whole-request 429/503 with ``Retry-After`` when the
batch was not taken (every client retries those).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ingest.adapters.eslogger import is_eslogger
from ingest.gateway.parse import (
    BatchError,
    Identity,
    Limits,
    Line,
    ParsedBatch,
    Reject,
    accepted_object,
    decoded_chunks,
    loads,
    plain_object,
    scan_lines,
)
from ingest.gateway.pipeline import Outcome, document_item

ACTIONS = ("index", "create", "update", "delete")
#: Index named in the answer when neither the URL nor the action names one.
DEFAULT_INDEX = "sigstream"
#: The Elasticsearch version announced to clients (``GET /``): Beats and Elastic Agent 8
#: refuse a cluster older than themselves unless ``allow_older_versions`` is set.
ES_VERSION = "8.17.0"


@dataclass(frozen=True)
class BulkOp:
    """One operation of a bulk body. ``number``: its position (1-based) among the body's
    operations, which is its place in the answer's ``items``. ``source`` is the source
    line for index/create (its first ``max_event_bytes + 1`` bytes), ``error`` a per-item
    refusal decided from the body alone: (status, Elasticsearch error type, reason)."""

    number: int
    action: str
    index: str
    doc_id: str | None = None
    source: bytes | None = None
    source_length: int = 0  # the source line's full length (``source`` may be cut)
    error: tuple[int, str, str] | None = None

    @property
    def carries_event(self) -> bool:
        return self.error is None and self.source is not None


#: Action lines seen lately -> (name, metadata): a shipper repeats the same few
#: (``{"create":{}}``, ``{"create":{"_index":"winlogbeat-8.15.0"}}``) on every operation.
#: Only valid ones of at most ``_CACHED_ACTION_BYTES`` bytes; cleared when full.
_ACTIONS_SEEN: dict[bytes, tuple[str, dict[str, Any]]] = {}
_CACHED_ACTION_BYTES = 512
_CACHED_ACTIONS = 256


def _action(line: Line, limits: Limits) -> tuple[str, dict[str, Any]]:
    """(action name, metadata) of an action line; BatchError 400 when it is not one. The
    metadata is shared between equal lines: read it, never change it."""
    seen = _ACTIONS_SEEN.get(line.head)
    if seen is not None and line.length == len(line.head):
        return seen
    name, meta = _parse_action(line, limits)
    if line.length <= _CACHED_ACTION_BYTES and line.length == len(line.head):
        if len(_ACTIONS_SEEN) >= _CACHED_ACTIONS:
            _ACTIONS_SEEN.clear()
        _ACTIONS_SEEN[line.head] = (name, meta)
    return name, meta


def _parse_action(line: Line, limits: Limits) -> tuple[str, dict[str, Any]]:
    where = f"Malformed action/metadata line [{line.number}]"
    if line.length > limits.max_event_bytes:
        raise BatchError(400, "illegal_argument_exception", f"{where}: over {line.length} bytes")
    try:
        obj = json.loads(line.head)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BatchError(400, "x_content_parse_exception", f"{where}: {exc}") from None
    if not isinstance(obj, dict) or len(obj) != 1:
        raise BatchError(400, "illegal_argument_exception", f"{where}, expected one action")
    ((name, meta),) = obj.items()
    if name not in ACTIONS:
        raise BatchError(
            400,
            "illegal_argument_exception",
            f"{where}, expected one of [create, delete, index, update] but found [{name[:40]}]",
        )
    if not isinstance(meta, dict):
        raise BatchError(400, "illegal_argument_exception", f"{where}, expected an object")
    return name, meta


def _text(value: Any, default: str | None) -> str | None:
    return value[:512] if isinstance(value, str) and value else default


def parse_bulk(
    body: bytes,
    encoding: str | None,
    limits: Limits,
    default_index: str | None = None,
    counter: list[int] | None = None,
) -> list[BulkOp]:
    """Every operation of a bulk body, in order; raises BatchError for the whole body
    (corrupt compression, too large, too many operations, a malformed action line).
    ``counter[0]`` accumulates the decoded bytes (also when it raises)."""
    # Lines are at most two per operation; the operation count is checked below.
    scan = replace(limits, max_events=2 * limits.max_events)
    lines: Iterator[Line] = scan_lines(decoded_chunks(body, encoding, limits), scan, counter)
    fallback = default_index or DEFAULT_INDEX
    ops: list[BulkOp] = []
    for line in lines:
        if line.blank:
            continue
        name, meta = _action(line, limits)
        if len(ops) >= limits.max_events:
            raise BatchError(
                413, "too_many_events", f"over the limit of {limits.max_events} operations"
            )
        number = len(ops) + 1
        index = _text(meta.get("_index"), fallback) or fallback
        doc_id = _text(meta.get("_id"), None)
        if name == "delete":
            ops.append(BulkOp(number, name, index, doc_id, error=_refused(name)))
            continue
        source = next(lines, None)
        if source is None:
            error = (400, "action_request_validation_exception", "source is missing")
            ops.append(BulkOp(number, name, index, doc_id, error=error))
            break
        if name == "update":
            ops.append(BulkOp(number, name, index, doc_id, error=_refused(name)))
            continue
        cap = limits.max_event_bytes
        whole = source.length <= cap or (source.length == cap + 1 and source.head.endswith(b"\r"))
        raw = source.head.rstrip(b"\r") if whole else source.head[:cap]
        length = len(raw) if whole else source.length
        ops.append(BulkOp(number, name, index, doc_id, raw, length))
    return ops


def to_batch(
    ops: Sequence[BulkOp],
    identity: Identity,
    limits: Limits,
    now: datetime,
    sent: datetime | None = None,
) -> ParsedBatch:
    """The events of index/create operations as pipeline items, numbered by operation: an
    encoded event or a reject with its reason (the DLQ's). CPU-bound: run it off the loop."""
    batch = ParsedBatch()
    cap = limits.max_event_bytes
    for op in ops:
        if not op.carries_event or op.source is None:
            continue
        raw = op.source
        if op.source_length > cap:
            message = f"event of {op.source_length} bytes over {cap} (the DLQ keeps {cap})"
            batch.rejects.append(Reject(op.number, raw, "event_too_large", message))
            continue
        obj = plain_object(raw)
        if (
            obj is not None
            and ("event_type" in obj or "schema_version" in obj)
            and not is_eslogger(obj)  # eslogger's event_type is an integer, not a schema's
        ):
            # A schema event parsed once: document_item would parse it again.
            result = accepted_object(op.number, raw, obj, identity, limits, now, sent)
        else:
            if obj is None:
                obj = _parsed(raw)
            result = document_item(raw, obj, identity, limits, now, sent, op.number)
        if isinstance(result, tuple):
            batch.rejects.append(Reject(op.number, raw, *result))
        else:
            batch.events.append(result)
    return batch


def _parsed(raw: bytes) -> dict[str, Any] | None:
    """The source as an object, or None to let the schema path name what is wrong (the
    reference parser; ``plain_object`` answers the common case the same, faster)."""
    try:
        obj = loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # number errors too
        return None
    return obj if isinstance(obj, dict) else None


def _refused(action: str) -> tuple[int, str, str]:
    return (
        400,
        "action_request_validation_exception",
        f"the sigstream gateway only appends events: '{action}' is not supported",
    )


def item(op: BulkOp, outcome: Outcome | None) -> dict[str, Any]:
    """One entry of the answer's ``items`` for an operation and what became of it."""
    body: dict[str, Any] = {"_index": op.index, "_id": op.doc_id}
    if op.error is not None or outcome is None:
        status, kind, reason = op.error or (500, "exception", "operation not processed")
        body.update(status=status, error={"type": kind, "reason": reason})
    elif outcome.status == "accepted":
        body.update(
            _id=outcome.event_id,
            _version=1,
            result="created",
            status=201,
            _shards={"total": 1, "successful": 1, "failed": 0},
        )
    elif outcome.status == "duplicate":
        body.update(_id=outcome.event_id, _version=1, result="noop", status=200)
    else:  # rejected or refused by Kafka: in the DLQ with its reason, not worth a retry
        body.update(
            status=400,
            error={
                "type": "document_parsing_exception",
                "reason": f"{outcome.reason}: {outcome.message}",
                "sigstream_reason": outcome.reason,
                "dead_letter": True,
            },
        )
    return {op.action: body}


def answer(ops: Sequence[BulkOp], outcomes: dict[int, Outcome], took_ms: int) -> dict[str, Any]:
    """The bulk API's answer: ``outcomes`` by operation number."""
    items = [item(op, outcomes.get(op.number)) for op in ops]
    errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
    return {"took": took_ms, "errors": errors, "items": items}


def _dumps(doc: Any) -> bytes:
    """JSON as the gateway's answers are rendered (Starlette's ``JSONResponse``)."""
    return json.dumps(
        doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


_CREATED = (
    b',"_version":1,"result":"created","status":201,'
    b'"_shards":{"total":1,"successful":1,"failed":0}}}'
)
_NOOP = b',"_version":1,"result":"noop","status":200}}'


def answer_bytes(ops: Sequence[BulkOp], outcomes: dict[int, Outcome], took_ms: int) -> bytes:
    """``answer(...)`` rendered as ``JSONResponse`` renders it (the same bytes), with the
    written and duplicate items, nearly all of them, from a template instead of a dict
    each (tests/unit/test_gateway_bulk_fast.py checks the bytes)."""
    parts: list[bytes] = []
    errors = False
    heads: dict[tuple[str, str], bytes] = {}
    for op in ops:
        outcome = outcomes.get(op.number)
        if (
            op.error is None
            and outcome is not None
            and outcome.status in ("accepted", "duplicate")
            and type(outcome.event_id) is str
        ):
            head = heads.get((op.action, op.index))
            if head is None:
                head = b'{"%s":{"_index":%s,"_id":' % (
                    _dumps(op.action)[1:-1],
                    _dumps(op.index),
                )
                heads[(op.action, op.index)] = head
            tail = _CREATED if outcome.status == "accepted" else _NOOP
            parts.append(head + _dumps(outcome.event_id) + tail)
            continue
        entry = item(op, outcome)
        errors = errors or next(iter(entry.values()))["status"] >= 300
        parts.append(_dumps(entry))
    return b'{"took":%s,"errors":%s,"items":[%s]}' % (
        _dumps(took_ms),
        b"true" if errors else b"false",
        b",".join(parts),
    )


#: Error types of whole-request refusals, as Elasticsearch names their kind.
_ERROR_TYPES = {
    401: "security_exception",
    408: "timeout_exception",
    413: "content_too_long_exception",
    415: "media_type_header_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    """Elasticsearch's error document for a whole request (clients read ``status``)."""
    kind = reason if reason.endswith("_exception") else _ERROR_TYPES.get(status, reason)
    cause = {"type": kind, "reason": message, "sigstream_reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def refusal_body(
    status: int, reason: str, message: str, ops: Sequence[BulkOp] = ()
) -> dict[str, Any]:
    """A whole bulk request refused (nothing written): the HTTP status says so to the
    shippers that read only it (syslog-ng, Beats, Logstash, the Python client, Fluent Bit
    retry the batch), and, when the operations are known, every item carries the same
    status for those that read only the items (rsyslog's ``retryfailures`` resubmits each
    429/503 item; without items it files the whole batch as failed and never retries)."""
    doc = error_body(status, reason, message)
    if ops:
        kind = doc["error"]["type"]
        error = {"type": kind, "reason": message, "sigstream_reason": reason}
        doc["took"] = 0
        doc["errors"] = True
        doc["items"] = [
            {op.action: {"_index": op.index, "_id": op.doc_id, "status": status, "error": error}}
            for op in ops
        ]
    return doc


def handshake(version: str = ES_VERSION) -> dict[str, Any]:
    """``GET /``: what clients read before sending (the version and the flavour)."""
    return {
        "name": "sigstream-gateway",
        "cluster_name": "sigstream",
        "cluster_uuid": "sigstream-gateway-000000",
        "version": {
            "number": version,
            "build_flavor": "default",
            "build_type": "docker",
            "build_hash": "sigstream",
            "build_date": "2024-01-01T00:00:00.000Z",
            "build_snapshot": False,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }


def license_body() -> dict[str, Any]:
    """``GET /_license``: a basic licence that never expires (Logstash, Beats' ILM check)."""
    return {
        "license": {
            "status": "active",
            "uid": "00000000-0000-0000-0000-000000000000",
            "type": "basic",
            "issue_date": "2024-01-01T00:00:00.000Z",
            "issue_date_in_millis": 1704067200000,
            "max_nodes": 1000,
            "max_resource_units": None,
            "issued_to": "sigstream",
            "issuer": "elasticsearch",
            "start_date_in_millis": -1,
        }
    }


def xpack_body(version: str = ES_VERSION) -> dict[str, Any]:
    """``GET /_xpack``: the features clients look for, ILM available and enabled."""
    feature = {"available": True, "enabled": True}
    return {
        "build": {"hash": "sigstream", "date": "2024-01-01T00:00:00.000Z"},
        "license": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "type": "basic",
            "mode": "basic",
            "status": "active",
        },
        "features": {"ilm": feature, "security": feature, "monitoring": feature},
        "tagline": "You know, for X",
        "version": version,
    }
