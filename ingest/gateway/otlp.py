"""OTLP/HTTP logs (``POST /v1/logs``) -> the source documents the gateway's pipeline takes.

Pure: no I/O. A shipper tailing JSON lines (the Collector's filelog receiver, Fluent Bit's
``opentelemetry`` output, Vector's ``opentelemetry`` sink) sends each line as one
``LogRecord``; its body is either the line as a string or the parsed line as a kvlist.
So a record becomes a document when its body is

* a string holding a JSON object -> that object (the line's own bytes are its raw form);
* a kvlist -> the dict (AnyValue mapped to JSON values; bytes as base64 text);

and a reject with a reason otherwise (``empty_body``, ``not_json``, ``not_an_object``,
``unsupported_body``, ``too_deep``, ``number_out_of_range``, ``event_too_large``). Rejects
keep the record as OTLP JSON (its first ``max_event_bytes``) for the DLQ.

**Host fill rule.** Windows layouts carry their host (``host.name``, ``computer_name``,
``Hostname``, ``Computer``); when a document has none of those keys, the record's
``host.name`` attribute, else its resource's ``host.name`` (then ``host.hostname``),
is written where the layout the document most resembles keeps it (see ``fill_host``).
The document's own host always wins: attributes describe the shipper's machine, which for
a relay (a WEC, a log server) is not the event's host.

Decoding (``decode_request``) uses the official ``opentelemetry-proto`` classes: protobuf
with ``FromString``, JSON with ``json_format`` after turning the OTLP JSON mapping's hex
``traceId``/``spanId`` into the base64 protobuf's JSON mapping expects.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from ingest.gateway.parse import BatchError, Limits, json_depth, loads

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Host attribute names, most specific first (OpenTelemetry semantic conventions).
HOST_ATTRIBUTES = ("host.name", "host.hostname")
#: Keys under which the Windows layouts keep the event's host (dotted = nested).
HOST_KEYS = (
    "host.name",
    "host.hostname",
    "computer_name",
    "winlog.computer_name",
    "Hostname",
    "Computer",
    "Event.System.Computer",
    "sensor_id",
)


@dataclass(frozen=True)
class Document:
    """One log record as a source document: ``obj`` is what the pipeline normalizes,
    ``raw`` the bytes kept for the DLQ and hashed for ids when the record has no id."""

    index: int
    obj: dict[str, Any]
    raw: bytes


@dataclass(frozen=True)
class RecordReject:
    index: int
    raw: bytes
    reason: str
    message: str


@dataclass
class Decoded:
    documents: list[Document]
    rejects: list[RecordReject]

    @property
    def records(self) -> int:
        return len(self.documents) + len(self.rejects)


def media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json`` (parameters dropped), else 415."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if value in (PROTOBUF, JSON):
        return value
    raise BatchError(
        415,
        "unsupported_media_type",
        f"Content-Type {value or 'missing'!r}: OTLP/HTTP takes {PROTOBUF} or {JSON}",
    )


# -- decoding ---------------------------------------------------------------------------


def _hex_ids_to_base64(node: Any, depth: int = 0) -> None:
    """OTLP JSON writes trace/span ids as hex; protobuf's JSON mapping reads base64."""
    if depth > 8:  # ids sit at depth 4 (resourceLogs/scopeLogs/logRecords/record)
        return
    if isinstance(node, dict):
        for key in ("traceId", "spanId", "trace_id", "span_id"):
            value = node.get(key)
            if isinstance(value, str) and value:
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    msg = f"{key} {value[:40]!r} is not hex"
                    raise BatchError(400, "bad_request", msg) from None
        for value in node.values():
            if isinstance(value, list | dict):
                _hex_ids_to_base64(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item, depth + 1)


def decode_request(body: bytes, media: str) -> ExportLogsServiceRequest:
    """The request message from its decoded body; 400 (``bad_request``) when malformed."""
    request = ExportLogsServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            msg = f"not an ExportLogsServiceRequest: {exc}"
            raise BatchError(400, "bad_request", msg) from None
        return request
    try:
        tree = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BatchError(400, "bad_request", f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(tree, dict):
        raise BatchError(400, "bad_request", "an OTLP JSON request is an object")
    if tree and not ({"resourceLogs", "resource_logs"} & tree.keys()):
        # Unknown fields are ignored by the JSON mapping, so a shipper sending its own
        # JSON (not OTLP) would get a 200 for nothing stored: refuse it instead.
        keys = ", ".join(sorted(tree)[:8])
        raise BatchError(400, "bad_request", f"no resourceLogs in the request (keys: {keys})")
    _hex_ids_to_base64(tree)
    try:
        json_format.ParseDict(tree, request, ignore_unknown_fields=True, max_recursion_depth=64)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        msg = f"not an OTLP logs request: {str(exc)[:200]}"
        raise BatchError(400, "bad_request", msg) from None
    return request


def count_records(request: ExportLogsServiceRequest) -> int:
    return sum(len(scope.log_records) for rl in request.resource_logs for scope in rl.scope_logs)


# -- AnyValue -> JSON values ------------------------------------------------------------


class _Unmappable(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def any_value(value: AnyValue, depth: int, limit: int) -> Any:
    """An AnyValue as a JSON value; arrays and kvlists nest at most ``limit`` deep."""
    if depth > limit:
        raise _Unmappable("too_deep", f"body nested deeper than {limit}")
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        number = value.double_value
        if number != number or number in (float("inf"), float("-inf")):
            raise _Unmappable("number_out_of_range", "NaN or Infinity in the body")
        return number
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [any_value(v, depth + 1, limit) for v in value.array_value.values]
    if kind == "kvlist_value":
        return kvlist(value.kvlist_value.values, depth + 1, limit)
    return None


def kvlist(values: Any, depth: int, limit: int) -> dict[str, Any]:
    return {kv.key: any_value(kv.value, depth, limit) for kv in values}


def attribute(attributes: Any, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` present as a non-empty string attribute."""
    found: dict[str, str] = {}
    for kv in attributes:
        if kv.key in names and kv.value.WhichOneof("value") == "string_value":
            found.setdefault(kv.key, kv.value.string_value)
    for name in names:
        if found.get(name):
            return found[name]
    return None


# -- host fill ----------------------------------------------------------------------------


def _has(obj: Mapping[str, Any], dotted: str) -> bool:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return node not in (None, "")


def fill_host(obj: dict[str, Any], host: str | None) -> None:
    """Write ``host`` where the document's layout keeps its host, if it has none.

    ECS (``winlog`` / ``event`` objects) -> ``host.name``; winlogbeat 6 (``log_name``)
    -> ``computer_name``; NXLog (``Channel``) -> ``Hostname``; EVTX JSON (``Event``)
    -> ``Event.System.Computer``; a schema event is left alone (its sensor comes from the
    credential); anything else -> ``host.name``."""
    if not host or any(_has(obj, key) for key in HOST_KEYS) or "event_type" in obj:
        return
    if "log_name" in obj:
        obj["computer_name"] = host
    elif "Channel" in obj:
        obj["Hostname"] = host
    elif isinstance(obj.get("Event"), dict) and isinstance(obj["Event"].get("System"), dict):
        obj["Event"]["System"]["Computer"] = host
    elif isinstance(obj.get("host"), dict):
        obj["host"]["name"] = host
    elif "host" not in obj:
        obj["host"] = {"name": host}


# -- records -> documents -----------------------------------------------------------------


def _record_json(record: LogRecord, cap: int) -> bytes:
    text = json_format.MessageToJson(record, indent=None)
    return text.encode()[:cap]


def _document(record: LogRecord, limits: Limits) -> tuple[dict[str, Any], bytes]:
    """One record's body -> (object, raw bytes); raises _Unmappable with the reason."""
    kind = record.body.WhichOneof("value")
    if kind is None:
        raise _Unmappable("empty_body", "the log record has no body")
    if kind == "string_value":
        raw = record.body.string_value.strip().encode()
        if len(raw) > limits.max_event_bytes:
            raise _Unmappable(
                "event_too_large", f"body of {len(raw)} bytes over {limits.max_event_bytes}"
            )
        try:
            obj = loads(raw.decode())
        except RecursionError:
            raise _Unmappable("too_deep", f"nesting deeper than {limits.max_depth}") from None
        except ValueError as exc:  # JSONDecodeError and numbers out of range
            reason = "not_json" if isinstance(exc, json.JSONDecodeError) else "number_out_of_range"
            raise _Unmappable(reason, f"string body is not JSON: {str(exc)[:160]}") from None
        if not isinstance(obj, dict):
            raise _Unmappable("not_an_object", f"body JSON is a {type(obj).__name__}")
        if json_depth(obj, limits.max_depth) > limits.max_depth:
            raise _Unmappable("too_deep", f"nesting deeper than {limits.max_depth}")
        return obj, raw
    if kind == "kvlist_value":
        obj = kvlist(record.body.kvlist_value.values, 1, limits.max_depth)
        raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
        if len(raw) > limits.max_event_bytes:
            raise _Unmappable(
                "event_too_large", f"body of {len(raw)} bytes over {limits.max_event_bytes}"
            )
        return obj, raw
    raise _Unmappable(
        "unsupported_body",
        f"body is {kind.removesuffix('_value')}: a JSON object (string or kvlist) is needed",
    )


def iter_records(
    request: ExportLogsServiceRequest,
) -> Iterator[tuple[LogRecord, Any, Any]]:
    """(record, record attributes, resource attributes) in request order."""
    for rl in request.resource_logs:
        for scope in rl.scope_logs:
            for record in scope.log_records:
                yield record, record.attributes, rl.resource.attributes


def documents(request: ExportLogsServiceRequest, limits: Limits) -> Decoded:
    """Every record -> a document or a reject (exactly one each, in request order)."""
    out = Decoded([], [])
    for index, (record, attrs, resource_attrs) in enumerate(iter_records(request), start=1):
        try:
            obj, raw = _document(record, limits)
        except _Unmappable as exc:
            out.rejects.append(
                RecordReject(
                    index, _record_json(record, limits.max_event_bytes), exc.reason, str(exc)
                )
            )
            continue
        host = attribute(attrs, HOST_ATTRIBUTES) or attribute(resource_attrs, HOST_ATTRIBUTES)
        fill_host(obj, host)
        out.documents.append(Document(index, obj, raw))
    return out


# -- answers ------------------------------------------------------------------------------


def export_response(rejected: int, message: str, media: str) -> bytes:
    """``ExportLogsServiceResponse``: ``partial_success`` only when records were rejected."""
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return _encode(response, media)


def status_body(code: int, message: str, media: str) -> bytes:
    """A ``google.rpc.Status`` error body, as OTLP/HTTP answers failures."""
    return _encode(status_pb2.Status(code=code, message=message), media)


def _encode(message: Any, media: str) -> bytes:
    if media == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return bytes(message.SerializeToString())


#: gRPC codes for the Status body of each HTTP answer (OTLP/HTTP's error mapping).
GRPC_CODE = {400: 3, 401: 16, 403: 7, 408: 4, 413: 8, 415: 3, 429: 8, 503: 14}


__all__ = [
    "JSON",
    "PROTOBUF",
    "Decoded",
    "Document",
    "RecordReject",
    "count_records",
    "decode_request",
    "documents",
    "export_response",
    "fill_host",
    "media_type",
    "status_body",
]
