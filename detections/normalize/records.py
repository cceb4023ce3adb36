"""One raw-topic record -> a schema event for the events topic, or a DLQ record.

Pure (no Spark, no Kafka): the normalizing stage (``detections.normalize.query``) runs
:func:`normalize_record` over every record of its micro-batches in the Python workers,
and the unit tests run it directly.

The rules, per record (every failure is this record's reject, never the batch's):

* the format is the raw topic's last name part (``telemetry.raw.ecs`` -> ``ecs``);
  ``auto`` detects the layout per record; a topic of an unknown format rejects its records;
* the tenant is the record's ``sigstream.tenant`` header, else the stage's default
  tenant; a payload never chooses it (a schema event naming another tenant is refused,
  as at the gateway);
* the bytes are checked as the gateway checks a line (size, UTF-8, JSON numbers, depth,
  lone surrogates) before any adapter sees them;
* schema events (``sigstream``) are validated as the gateway validates them; the
  shippers' layouts go through ``ingest.adapters.layouts.normalize`` (event ids from the
  record's origin: a re-read after a crash gives the same ids);
* the event is encoded as the gateway encodes it, keyed by sensor id, with its headers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from common.dlq import dlq_headers, kafka_origin
from ingest.adapters.layouts import LAYOUTS, detect_layout, normalize
from ingest.adapters.windows import AdapterError
from ingest.gateway.parse import Identity, Limits, json_depth, loads, validate_line
from ingest.gateway.sink import EVENT_ID_HEADER, TENANT_HEADER
from ingest.producer import encode_event

#: The raw topic's last name part that means "detect the layout per record".
AUTO = "auto"
STAGE = "normalize"
#: Longest DLQ reason header.
REASON_CHARS = 500
#: An encoded event the detect job would refuse (``detections.stream.parse``) is refused here.
MAX_EVENT_BYTES = 256 * 1024
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class RawLimits:
    """Bounds of one raw record: shippers' records carry the rendered message beside the
    event data, so they may be larger than the schema event they become."""

    max_record_bytes: int = 1024 * 1024
    max_depth: int = 16


DEFAULT_LIMITS = RawLimits()


@dataclass(frozen=True)
class Output:
    """A record to write: to ``topic`` with ``key``, ``value`` and ``headers``."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    rejected: bool = False


def format_of(topic: str) -> str:
    """``telemetry.raw.nxlog`` -> ``nxlog``."""
    return topic.rsplit(".", 1)[-1]


def _reject(code: str, message: str) -> AdapterError:
    error = AdapterError(message)
    error.reason = code
    return error


def _reason_text(code: str, message: str) -> str:
    text = message if message.startswith(code.replace("_", " ")) else f"{code}: {message}"
    return text[:REASON_CHARS]


def _parse(raw: bytes, limits: RawLimits) -> dict[str, object]:
    """The record's JSON object, checked as the gateway checks a line; raises AdapterError."""
    if len(raw) > limits.max_record_bytes:
        raise _reject(
            "record_too_large", f"record of {len(raw):,} bytes over {limits.max_record_bytes:,}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject("invalid_utf8", f"not UTF-8 at byte {exc.start}") from exc
    try:
        obj = loads(text)
    except json.JSONDecodeError as exc:
        raise _reject("invalid_json", f"{exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise _reject("too_deep", f"nesting deeper than {limits.max_depth}") from exc
    except ValueError as exc:  # NaN, Infinity, overflowing floats, huge integers
        raise _reject("number_out_of_range", str(exc)[:200]) from exc
    if not isinstance(obj, dict):
        raise _reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    # Depth is at most the number of opening brackets: most records need no walk.
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > limits.max_depth and json_depth(obj, limits.max_depth) > limits.max_depth:
        raise _reject("too_deep", f"nesting deeper than {limits.max_depth}")
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then is the whole object walked
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _reject("invalid_unicode", "lone UTF-16 surrogate in a string") from exc
    return obj


def _event_output(
    value: bytes, tenant: str, sensor: str, event_id: str, events_topic: str
) -> Output:
    if len(value) > MAX_EVENT_BYTES:
        raise _reject("event_too_large", f"event of {len(value):,} bytes over {MAX_EVENT_BYTES:,}")
    headers = [(TENANT_HEADER, tenant.encode()), (EVENT_ID_HEADER, event_id.encode())]
    return Output(events_topic, sensor.encode(), value, headers)


def normalize_record(
    value: bytes | None,
    key: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    tenant: str | None,
    default_tenant: str,
    events_topic: str,
    dlq_topic: str,
    received_time: datetime | None = None,
    limits: RawLimits = DEFAULT_LIMITS,
) -> Output:
    """One raw record -> its event (``events_topic``) or its reject (``dlq_topic``, the
    original key and bytes, reason/origin/stage headers). Never raises."""
    tenant_id = tenant or default_tenant
    try:
        return _normalize(value, tenant_id, topic, events_topic, received_time, limits)
    except AdapterError as exc:
        reason = _reason_text(exc.reason, str(exc))
    except Exception as exc:  # a record must never fail its batch
        reason = _reason_text("normalize_failed", f"{type(exc).__name__}: {exc}")
    headers = [
        *dlq_headers(reason, kafka_origin(topic, partition, offset), STAGE),
        (TENANT_HEADER, tenant_id.encode()),
    ]
    return Output(dlq_topic, key, value or b"", headers, rejected=True)


def _normalize(
    value: bytes | None,
    tenant_id: str,
    topic: str,
    events_topic: str,
    received_time: datetime | None,
    limits: RawLimits,
) -> Output:
    fmt = format_of(topic)
    if fmt != AUTO and fmt not in LAYOUTS:
        raise _reject(
            "unknown_format",
            f"raw topic {topic!r}: format {fmt!r} is not auto or one of {', '.join(LAYOUTS)}",
        )
    if not value:
        raise _reject("empty_record", "record without a value")
    obj = _parse(value, limits)
    layout = detect_layout(obj) if fmt == AUTO else fmt
    if layout == "sigstream":
        now = received_time or datetime.now().astimezone()
        checked = validate_line(
            value,
            Identity(tenant_id, "", relay=True),
            Limits(max_event_bytes=limits.max_record_bytes, max_depth=limits.max_depth),
            now,
        )
        if isinstance(checked, tuple):
            raise _reject(*checked)
        event = checked
    else:
        event = normalize(
            obj,
            value,
            tenant_id=tenant_id,
            sensor_id=None,
            received_time=received_time,
            layout=layout,
        )
    try:
        encoded = encode_event(event)
    except Exception as exc:
        raise _reject("unencodable", f"cannot encode the event: {exc}"[:300]) from exc
    return _event_output(encoded, event.tenant_id, event.sensor_id, event.event_id, events_topic)
