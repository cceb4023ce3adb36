"""Turn one HTTP batch body into accepted events and rejects, each with a reason code.

Pure: no I/O, no clock (the caller passes ``now``). The rules every line goes through:

* the body is decompressed (identity, gzip or zstd) **as a stream**, chunk by chunk, with a
  hard cap on the decoded size: a compression bomb is a 413 as soon as it passes the cap,
  and the decoded body is never held whole. Every gzip member and every zstd frame is read;
* NDJSON: one event per line, counted while scanning; **every line counts toward
  ``max_events``, blank ones too**, and scanning stops at the first line over the cap (413),
  so a body of millions of newlines costs one chunk, not a list of millions of lines;
* a line longer than ``max_event_bytes`` is rejected (``event_too_large``) without being
  parsed or buffered: the DLQ gets its first ``max_event_bytes`` bytes;
* each line must be UTF-8 JSON (``invalid_utf8`` / ``invalid_json``), an object
  (``not_an_object``), nested at most ``max_depth`` deep (``too_deep``), with numbers the
  schema can hold (``number_out_of_range``: integers past int64 where the schema has an
  integer, over ``MAX_INT_DIGITS`` digits anywhere, NaN/Infinity, floats that overflow),
  strings without lone UTF-16 surrogates (``invalid_unicode``), and valid against the
  schema (``schema_version``, ``unknown_event_type``, ``schema_invalid``);
* the tenant comes from the credential, never from the payload: an event that names another
  tenant is rejected (``tenant_mismatch``), one that names none gets the credential's;
* a sensor credential may only send its own ``sensor_id`` (``sensor_mismatch``); a relay
  credential (a collector forwarding for many hosts) may send any sensor id of its tenant.

An accepted line is **encoded here**, into exactly the bytes the sink sends to Kafka: a
line whose encoding would fail is a per-line reject, never a failure of the whole batch
at delivery time. Accepted events keep only those bytes and their ids (not the parsed
model), which is what bounds a batch's memory by its decoded size (see docs/gateway.md).
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args, get_origin

import zstandard
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from schemas.events import EVENT_ADAPTER, EVENT_MODELS, SCHEMA_VERSION, Envelope, parse_event

#: Decoded bytes produced per decompression step (the granularity of the size cap).
CHUNK = 64 * 1024
#: zstd input fed per step: one 3-byte RLE block can expand to 128 KiB, so 64 input bytes
#: expand to at most ~2.7 MiB before the cap is checked again.
ZSTD_STEP = 64
#: Longest integer literal accepted anywhere (int64 has 19 digits; a longer number is kept
#: as text in ``extra``). Python refuses past 4,300 digits with ValueError, and converting
#: long digit strings is quadratic; this stops both before conversion.
MAX_INT_DIGITS = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: Every digit as "0": a line's digit runs and exponents become plain substrings, so the
#: fast path's number screens are C-speed ``in`` tests (a regex scan costs ~10 us a line).
_DIGITS = bytes.maketrans(b"0123456789E", b"0" * 10 + b"e")
#: A run of more digits than ``MAX_INT_DIGITS``: the reference refuses it anywhere.
_LONG_RUN = b"0" * (MAX_INT_DIGITS + 1)
#: A 3-digit exponent (``E`` is mapped to ``e``): besides a long digit run, the only way
#: to write a float that overflows to infinity. Hex strings match too (``e123``): such
#: lines get a scan of their values.
_EXPONENTS = (b"e000", b"e+000")


class BatchError(ValueError):
    """The whole body is unusable. ``status`` is the HTTP answer (400, 413 or 415)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Per-request limits (see docs/gateway.md for the defaults' rationale)."""

    max_body_bytes: int = 8 * 1024 * 1024  # compressed, as received
    max_decoded_bytes: int = 64 * 1024 * 1024  # after decompression
    max_events: int = 10_000  # lines per batch, blank lines included
    max_event_bytes: int = 256 * 1024  # one NDJSON line
    max_depth: int = 16  # JSON nesting of one event


@dataclass(frozen=True)
class Identity:
    """Who is sending, as the credential says (never as the payload says)."""

    tenant_id: str
    sensor_id: str
    relay: bool = False


@dataclass(frozen=True)
class Reject:
    line: int
    raw: bytes
    reason: str
    message: str


@dataclass(frozen=True)
class Accepted:
    """A validated event as it will be written: its Kafka value and the ids around it.

    ``sensor_id`` is the event's (for a relay credential, the forwarded host's), which is
    the Kafka key and part of the de-duplication key."""

    line: int
    value: bytes
    tenant_id: str
    sensor_id: str
    event_id: str

    @property
    def dedupe_key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.sensor_id, self.event_id)


@dataclass
class ParsedBatch:
    events: list[Accepted] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: Bytes after decompression that were scanned (what the byte rate limit charges).
    decoded_bytes: int = 0

    @property
    def lines(self) -> int:
        return len(self.events) + len(self.rejects)


# -- decoding ---------------------------------------------------------------------------


def _encoding(encoding: str | None) -> str:
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return "identity"
    if enc in ("gzip", "x-gzip"):
        return "gzip"
    if enc == "zstd":
        return "zstd"
    raise BatchError(415, "unsupported_encoding", f"Content-Encoding {enc[:40]!r}")


def decoded_chunks(body: bytes, encoding: str | None, limits: Limits) -> Iterator[bytes]:
    """The decoded body in chunks of at most ~``CHUNK`` bytes; raises BatchError (413 past
    ``max_decoded_bytes``, 400 for corrupt or truncated data, 415 for unknown encodings)."""
    if len(body) > limits.max_body_bytes:
        raise BatchError(413, "body_too_large", f"body over {limits.max_body_bytes} bytes")
    enc = _encoding(encoding)
    if enc == "identity":
        chunks: Iterator[bytes] = (body[i : i + CHUNK] for i in range(0, len(body), CHUNK))
    elif enc == "gzip":
        chunks = _gzip_chunks(body)
    else:
        chunks = _zstd_chunks(body)
    total, cap = 0, limits.max_decoded_bytes
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > cap:
                raise BatchError(413, "decoded_too_large", f"decoded body over {cap} bytes")
            yield chunk
    except (zlib.error, zstandard.ZstdError, EOFError) as exc:
        raise BatchError(400, "bad_compression", f"cannot decompress {enc}: {exc}") from exc


def _gzip_chunks(body: bytes) -> Iterator[bytes]:
    """Every member of a (multi-member) gzip stream; trailing zero padding is allowed."""
    rest = body
    if not rest:
        raise BatchError(400, "bad_compression", "empty gzip stream")
    while rest:
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        data = rest
        while True:
            out = d.decompress(data, CHUNK)
            if out:
                yield out
            data = d.unconsumed_tail
            if d.eof or (not data and not out):
                break
        if not d.eof:
            raise BatchError(400, "bad_compression", "truncated gzip stream")
        rest = d.unused_data.lstrip(b"\x00")


def _zstd_chunks(body: bytes) -> Iterator[bytes]:
    """Every frame of a zstd stream, each required to be complete."""
    rest = memoryview(body)
    if not rest:
        raise BatchError(400, "bad_compression", "empty zstd stream")
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        pos = 0
        while pos < len(rest) and not d.eof:
            out = d.decompress(bytes(rest[pos : pos + ZSTD_STEP]))
            pos += ZSTD_STEP
            if out:
                yield out
        if not d.eof:
            raise BatchError(400, "bad_compression", "truncated zstd stream")
        rest = memoryview(d.unused_data + bytes(rest[pos:]))


@dataclass(frozen=True)
class Line:
    """One scanned line: its number, its first ``max_event_bytes + 1`` bytes (``head``),
    its full length and whether it is all whitespace."""

    number: int
    head: bytes
    length: int
    blank: bool


def scan_lines(
    chunks: Iterator[bytes], limits: Limits, counter: list[int] | None = None
) -> Iterator[Line]:
    """Every line, blank ones included, stopping with 413 at line ``max_events + 1``. A
    line is never buffered past ``max_event_bytes + 1`` bytes. ``counter[0]`` accumulates
    the decoded bytes seen (what the byte rate limit charges)."""
    keep = limits.max_event_bytes + 1
    cap = limits.max_events
    pending = bytearray()
    length = 0  # full length of the pending line (``pending`` holds at most ``keep``)
    blank = True
    number = 0

    def too_many() -> BatchError:
        return BatchError(
            413, "too_many_events", f"over the limit of {cap} lines (blank lines count)"
        )

    for chunk in chunks:
        if counter is not None:
            counter[0] += len(chunk)
        # Split in C, but never into more pieces than lines still allowed (+1): a chunk of
        # newlines costs at most ``max_events`` small pieces before the 413.
        pieces = chunk.split(b"\n", cap - number + 1)
        tail = pieces.pop()  # after the last newline: the start of the next line
        for piece in pieces:
            number += 1
            if number > cap:
                raise too_many()
            if length:  # the end of a line begun in an earlier chunk
                room = keep - len(pending)
                if room > 0:
                    pending += piece[:room]
                full = length + len(piece)
                yield Line(number, bytes(pending), full, blank and not piece.strip())
                pending.clear()
                length, blank = 0, True
            else:
                n = len(piece)
                yield Line(number, piece if n <= keep else piece[:keep], n, not piece.strip())
        if tail:
            room = keep - len(pending)
            if room > 0:
                pending += tail[:room]
            length += len(tail)
            blank = blank and not tail.strip()
    if length:
        number += 1
        if number > cap:
            raise too_many()
        yield Line(number, bytes(pending), length, blank)


# -- one line ---------------------------------------------------------------------------


class _NumberOutOfRange(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text) - (text[0] == "-") > MAX_INT_DIGITS:
        raise _NumberOutOfRange(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberOutOfRange(f"number {text[:40]} overflows a double")
    return value


def loads(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity, overflowing floats and huge integers (as
    ``_NumberOutOfRange``; syntax errors still win, so ``NaNx`` is invalid JSON)."""
    constants: list[str] = []

    def constant(name: str) -> float:
        constants.append(name)
        return math.nan

    value = json.loads(
        text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=constant
    )
    if constants:
        raise _NumberOutOfRange(f"{constants[0]} is not a JSON number")
    return value


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping early once past ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) holding a lone UTF-16 surrogate, else None."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return node
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _out_of_range(model: BaseModel) -> str | None:
    """The first integer field outside int64 or non-finite float field (the schema's Spark,
    Arrow and Elasticsearch types are long/double), else None. Only the numeric fields
    (``NUMBER_FIELDS``, derived from the schema) are looked at."""
    for name in NUMBER_FIELDS.get(type(model), ()):
        value = getattr(model, name)
        kind = type(value)  # exact types: bool (an int subclass) is never out of range
        if kind is int and not INT64_MIN <= value <= INT64_MAX:
            return f"{name}: {str(value)[:30]} is outside int64"
        if kind is float and not math.isfinite(value):
            return f"{name}: {value} is not a finite number"
    return None


def _numeric(annotation: Any) -> bool:
    """Whether a field annotation admits an int or a float (``Literal`` tags excluded)."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) is Literal:
        return False
    return any(_numeric(arg) for arg in get_args(annotation))


def _nested_numbers(model: type[BaseModel]) -> bool:
    for info in model.model_fields.values():
        if _numeric(info.annotation):
            return True
        for arg in (info.annotation, *get_args(info.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and _nested_numbers(arg):
                return True
    return False


def _number_fields() -> dict[type[BaseModel], tuple[str, ...]]:
    """Per event model, the names of its int/float fields, read from the schema (never
    re-declared). A nested model with numbers would need a deeper walk: refused here."""
    out: dict[type[BaseModel], tuple[str, ...]] = {}
    for model in EVENT_MODELS:
        out[model] = tuple(n for n, f in model.model_fields.items() if _numeric(f.annotation))
        for info in model.model_fields.values():
            nested = (info.annotation, *get_args(info.annotation))
            for arg in nested:
                if isinstance(arg, type) and issubclass(arg, BaseModel) and _nested_numbers(arg):
                    raise TypeError(f"{model.__name__}: nested numeric fields need a deeper check")
    return out


NUMBER_FIELDS = _number_fields()
#: The schema's own validator (``EVENT_ADAPTER``), called without TypeAdapter's Python wrapper.
_VALIDATE = EVENT_ADAPTER.validator.validate_python


def _validation_reason(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors()
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join(loc) or "event"
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in errors[:3]
    )
    if "schema_version" in loc:
        return "schema_version", message
    if first["type"] == "union_tag_invalid":
        return "unknown_event_type", message
    return "schema_invalid", f"{where}: {message}" if where not in message else message


def _claims(
    obj: dict[str, Any], identity: Identity, now: datetime, sent: datetime | None
) -> tuple[str, str] | None:
    """Check the schema version and the tenant/sensor the event claims against the
    credential, and fill in what the gateway adds (tenant, sensor, received and sent time).
    Mutates ``obj``; returns ``(reason, message)`` when the event is refused."""
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return "schema_version", f"schema_version {version!r} is not {SCHEMA_VERSION}"
    claimed = obj.get("tenant_id")
    if claimed is not None and claimed != identity.tenant_id:
        return "tenant_mismatch", "event names a tenant other than the credential's"
    obj["tenant_id"] = identity.tenant_id
    sensor = obj.get("sensor_id")
    if sensor is None:
        obj["sensor_id"] = identity.sensor_id
    elif sensor != identity.sensor_id and not identity.relay:
        return "sensor_mismatch", f"sensor_id {str(sensor)[:64]!r} is not the credential's"
    obj.setdefault("received_time", _iso(now))
    if sent is not None:  # the client's clock when it sent the batch (an event's own wins)
        obj.setdefault("sent_time", _iso(sent))
    return None


@functools.lru_cache(maxsize=8)
def _iso(moment: datetime) -> str:
    """ISO text of the batch's clock readings (one per batch, not one per event)."""
    return moment.isoformat()


def _finite(obj: dict[str, Any]) -> bool:
    """No infinite float in the object or in its directly nested objects (a valid event is
    at most two levels deep: deeper values fail validation and take the reference path)."""
    for value in obj.values():
        if type(value) is dict:
            if any(type(v) is float and not math.isfinite(v) for v in value.values()):
                return False
        elif type(value) is float and not math.isfinite(value):
            return False
    return True


def fast_validate(
    raw: bytes, identity: Identity, now: datetime, sent: datetime | None = None
) -> Envelope | None:
    """The common case at C speed: pydantic-core's JSON parser (from bytes) and the schema's
    validator, or None whenever anything is off, so that ``validate_line``'s reference path
    decides the outcome and its reason. An event accepted here is exactly the event the
    reference path accepts (tests/unit/test_gateway_fast_path.py checks it differentially):
    the parser refuses NaN/Infinity, lone surrogates and invalid UTF-8 like the reference;
    lines with numbers the two could read differently (over ``MAX_INT_DIGITS`` digits,
    or an infinite float) fall back;
    and the tenant/sensor/time rules are the same code (``_claims``). Integers past int64
    in text fields become the same digits on both paths; in integer fields
    ``_out_of_range`` sends them to the reference."""
    shape = raw.translate(_DIGITS)
    if _LONG_RUN in shape or (b"\\u" in raw and _SURROGATE_ESCAPE.search(raw)):
        return None
    try:
        obj = from_json(raw, allow_inf_nan=False)
    except ValueError:
        return None
    if type(obj) is not dict:
        return None
    if (_EXPONENTS[0] in shape or _EXPONENTS[1] in shape) and not _finite(obj):
        return None
    return _fast_object(obj, identity, now, sent)


def _fast_object(
    obj: dict[str, Any], identity: Identity, now: datetime, sent: datetime | None
) -> Envelope | None:
    """``fast_validate`` once the line is parsed and screened (mutates ``obj``)."""
    if _claims(obj, identity, now, sent) is not None:
        return None
    try:
        event = _VALIDATE(obj)
    except (ValidationError, TypeError, ValueError, RecursionError):
        return None
    if _out_of_range(event) is not None:
        return None
    return event


def plain_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` parsed by pydantic-core when the result is certainly what the reference
    parser (``loads``) makes of it: no digit run over ``MAX_INT_DIGITS``, no 3-digit
    exponent (so no float can overflow), no ``\\u`` escape (lone surrogates), valid JSON
    and an object. None otherwise: the caller then takes the reference path. A fresh
    dict: callers may mutate it."""
    shape = raw.translate(_DIGITS)
    if _LONG_RUN in shape or _EXPONENTS[0] in shape or _EXPONENTS[1] in shape:
        return None
    if b"\\u" in raw:
        return None
    try:
        obj = from_json(raw, allow_inf_nan=False)
    except ValueError:
        return None
    return obj if type(obj) is dict else None


def accepted_object(
    number: int,
    raw: bytes,
    obj: dict[str, Any],
    identity: Identity,
    limits: Limits,
    now: datetime,
    sent: datetime | None = None,
) -> Accepted | tuple[str, str]:
    """``parse_line``'s outcome for ``raw`` (numbered ``number``) when ``obj`` is what
    ``plain_object(raw)`` returned (it is mutated): the same fast path without parsing the
    line again, the reference path when the fast path declines."""
    if len(raw) > limits.max_event_bytes:
        return _accepted(number, raw, identity, limits, now, sent)
    result = _fast_object(obj, identity, now, sent)
    if result is None:
        return _encoded(number, reference_validate(raw, identity, limits, now, sent))
    return _encoded(number, result)


def validate_line(
    raw: bytes, identity: Identity, limits: Limits, now: datetime, sent: datetime | None = None
) -> Envelope | tuple[str, str]:
    """One NDJSON line -> the validated event, or ``(reason, message)``. Never raises."""
    if len(raw) > limits.max_event_bytes:
        return "event_too_large", f"event of {len(raw)} bytes over {limits.max_event_bytes}"
    event = fast_validate(raw, identity, now, sent)
    if event is not None:
        return event
    return reference_validate(raw, identity, limits, now, sent)


def reference_validate(
    raw: bytes, identity: Identity, limits: Limits, now: datetime, sent: datetime | None = None
) -> Envelope | tuple[str, str]:
    """The reference path (Python's json with strict number hooks, then the checks in
    order, then pydantic): slower, and the one that names every reason. ``validate_line``
    takes it for every line ``fast_validate`` does not accept."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"not UTF-8 at byte {exc.start}"
    try:
        obj = loads(text)
    except _NumberOutOfRange as exc:
        return "number_out_of_range", str(exc)
    except json.JSONDecodeError as exc:
        return "invalid_json", f"{exc.msg} at column {exc.colno}"
    except RecursionError:
        return "too_deep", f"nesting deeper than {limits.max_depth}"
    except ValueError as exc:  # any other number Python refuses to convert
        return "number_out_of_range", str(exc)[:200]
    if not isinstance(obj, dict):
        return "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
    if json_depth(obj, limits.max_depth) > limits.max_depth:
        return "too_deep", f"nesting deeper than {limits.max_depth}"
    if _SURROGATE_ESCAPE.search(raw):
        bad = _lone_surrogate(obj)
        if bad is not None:
            return "invalid_unicode", f"lone UTF-16 surrogate in string {bad[:40]!r}"
    problem = _claims(obj, identity, now, sent)
    if problem is not None:
        return problem
    try:
        event = parse_event(obj)
    except ValidationError as exc:
        return _validation_reason(exc)
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        return "schema_invalid", f"{type(exc).__name__}: {exc}"[:300]
    problem = _out_of_range(event)
    if problem:
        return "number_out_of_range", problem
    return event


def parse_line(
    raw: bytes, identity: Identity, limits: Limits, now: datetime, sent: datetime | None = None
) -> Accepted | tuple[str, str]:
    """One NDJSON line -> the event encoded for Kafka, or ``(reason, message)``.

    Never raises: encoding is part of validation, so an accepted line always has its bytes.
    ``Accepted.line`` is 0 here; ``parse_batch`` numbers lines."""
    return _accepted(0, raw, identity, limits, now, sent)


def _accepted(
    number: int,
    raw: bytes,
    identity: Identity,
    limits: Limits,
    now: datetime,
    sent: datetime | None,
) -> Accepted | tuple[str, str]:
    result: Envelope | tuple[str, str] | None = None
    if len(raw) <= limits.max_event_bytes:  # validate_line, without its call layers
        result = fast_validate(raw, identity, now, sent)
        if result is None:
            result = reference_validate(raw, identity, limits, now, sent)
    else:
        result = validate_line(raw, identity, limits, now, sent)
    return _encoded(number, result)


def _encoded(number: int, result: Envelope | tuple[str, str]) -> Accepted | tuple[str, str]:
    if isinstance(result, tuple):
        return result
    try:
        # ``encode_event``'s bytes (model_dump_json(exclude_none=True)), without its
        # Python wrapper: the model's own serializer with the same options.
        value = result.__pydantic_serializer__.to_json(result, exclude_none=True)
    except Exception as exc:  # whatever fails here is this line's fault
        return "unencodable", f"cannot encode the event: {exc}"[:300]
    return Accepted(number, value, result.tenant_id, result.sensor_id, result.event_id)


def parse_batch(
    body: bytes,
    identity: Identity,
    limits: Limits,
    now: datetime,
    encoding: str | None = None,
    counter: list[int] | None = None,
    sent: datetime | None = None,
) -> ParsedBatch:
    """Decode a body and parse every line; raises BatchError only for whole-body problems.

    ``counter[0]`` (if given) accumulates the decoded bytes, also when BatchError is raised
    part-way, so the caller can charge them either way. ``sent``: the client's clock
    when it sent the batch (its ``X-Sigstream-Sent-Time`` header), copied into every
    event that does not carry its own ``sent_time``."""
    batch = ParsedBatch()
    counter = counter if counter is not None else [0]
    before = counter[0]
    cap = limits.max_event_bytes
    for ln in scan_lines(decoded_chunks(body, encoding, limits), limits, counter):
        if ln.blank:
            continue
        if ln.length > cap + 1 or (ln.length == cap + 1 and not ln.head.endswith(b"\r")):
            message = f"event of {ln.length} bytes over {cap} (the DLQ keeps its first {cap})"
            batch.rejects.append(Reject(ln.number, ln.head[:cap], "event_too_large", message))
            continue
        line = ln.head.rstrip(b"\r")
        result = _accepted(ln.number, line, identity, limits, now, sent)
        if isinstance(result, tuple):
            batch.rejects.append(Reject(ln.number, line, *result))
        else:
            batch.events.append(result)
    batch.decoded_bytes = counter[0] - before
    return batch
