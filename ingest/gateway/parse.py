"""Turn one HTTP batch body into accepted events and rejects, each with a reason code.

Pure: no I/O, no clock (the caller passes ``now``). The rules every line goes through:

* the body is decompressed (identity, gzip or zstd) with a hard cap on the decoded size,
  so a compression bomb is a 413, never an out-of-memory;
* NDJSON: one event per line; blank lines are ignored; a line longer than
  ``max_event_bytes`` is rejected (``event_too_large``) without being parsed;
* each line must be UTF-8 JSON (``invalid_utf8`` / ``invalid_json``), an object
  (``not_an_object``), nested at most ``max_depth`` deep (``too_deep``), and valid against
  the schema (``schema_version``, ``unknown_event_type``, ``schema_invalid``);
* the tenant comes from the credential, never from the payload: an event that names another
  tenant is rejected (``tenant_mismatch``), one that names none gets the credential's;
* a sensor credential may only send its own ``sensor_id`` (``sensor_mismatch``); a relay
  credential (a collector forwarding for many hosts) may send any sensor id of its tenant.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import zstandard
from pydantic import ValidationError

from schemas.events import SCHEMA_VERSION, Envelope, parse_event


class BatchError(ValueError):
    """The whole body is unusable. ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Per-request limits (see docs/gateway.md for the defaults' rationale)."""

    max_body_bytes: int = 8 * 1024 * 1024  # compressed, as received
    max_decoded_bytes: int = 64 * 1024 * 1024  # after decompression
    max_events: int = 10_000  # lines per batch
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


@dataclass
class ParsedBatch:
    events: list[tuple[int, Envelope]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return len(self.events) + len(self.rejects)


def decode_body(body: bytes, encoding: str | None, limits: Limits) -> bytes:
    """Decompress ``body`` per its Content-Encoding, refusing to expand past the cap."""
    enc = (encoding or "identity").strip().lower()
    if len(body) > limits.max_body_bytes:
        raise BatchError(413, "body_too_large", f"body over {limits.max_body_bytes} bytes")
    if enc in ("identity", ""):
        return body
    cap = limits.max_decoded_bytes
    try:
        if enc in ("gzip", "x-gzip"):
            out = _bounded_zlib(body, zlib.MAX_WBITS | 16, cap)
        elif enc == "zstd":
            out = _bounded_zstd(body, cap)
        else:
            raise BatchError(415, "unsupported_encoding", f"Content-Encoding {enc!r}")
    except (zlib.error, zstandard.ZstdError, EOFError, gzip.BadGzipFile) as exc:
        raise BatchError(400, "bad_compression", f"cannot decompress {enc}: {exc}") from exc
    return out


def _bounded_zlib(body: bytes, wbits: int, cap: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(body, cap + 1)
    if len(out) > cap:
        raise BatchError(413, "decoded_too_large", f"decoded body over {cap} bytes")
    if not d.eof:
        raise BatchError(400, "bad_compression", "truncated gzip stream")
    return out


def _bounded_zstd(body: bytes, cap: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True)
    out = reader.read(cap + 1)
    if len(out) > cap:
        raise BatchError(413, "decoded_too_large", f"decoded body over {cap} bytes")
    # The bounded read above cannot tell a complete stream from a truncated one; now that the
    # output is known to fit, decode again frame by frame and insist every frame is complete.
    rest, total = body, b""
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        total += d.decompress(rest)
        if not d.eof:
            raise BatchError(400, "bad_compression", "truncated zstd stream")
        rest = d.unused_data
    if total != out:  # pragma: no cover - both decoders read the same frames
        raise BatchError(400, "bad_compression", "inconsistent zstd stream")
    return out


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


def parse_line(
    raw: bytes, identity: Identity, limits: Limits, now: datetime
) -> Envelope | tuple[str, str]:
    """One NDJSON line -> the validated event, or ``(reason, message)``."""
    if len(raw) > limits.max_event_bytes:
        return "event_too_large", f"event of {len(raw)} bytes over {limits.max_event_bytes}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"not UTF-8 at byte {exc.start}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return "invalid_json", f"{exc.msg} at column {exc.colno}"
    except RecursionError:
        return "too_deep", f"nesting deeper than {limits.max_depth}"
    if not isinstance(obj, dict):
        return "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
    if json_depth(obj, limits.max_depth) > limits.max_depth:
        return "too_deep", f"nesting deeper than {limits.max_depth}"
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
    obj.setdefault("received_time", now.isoformat())
    try:
        return parse_event(obj)
    except ValidationError as exc:
        return _validation_reason(exc)
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        return "schema_invalid", f"{type(exc).__name__}: {exc}"[:300]


def parse_batch(
    body: bytes, identity: Identity, limits: Limits, now: datetime, encoding: str | None = None
) -> ParsedBatch:
    """Decode a body and parse every line; raises BatchError only for whole-body problems."""
    data = decode_body(body, encoding, limits)
    lines = data.split(b"\n")
    count = sum(1 for ln in lines if ln.strip())
    if count > limits.max_events:
        raise BatchError(
            413, "too_many_events", f"{count} events over the limit of {limits.max_events}"
        )
    batch = ParsedBatch()
    for number, line in enumerate(lines, start=1):  # line numbers as the sender counts them
        if not line.strip():
            continue
        line = line.rstrip(b"\r")
        result = parse_line(line, identity, limits, now)
        if isinstance(result, tuple):
            batch.rejects.append(Reject(number, line, *result))
        else:
            batch.events.append((number, result))
    return batch
