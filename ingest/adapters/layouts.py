"""Detect which Windows shipper wrote a record, and turn it into a schema event.

Real fleets send the same Windows event in several layouts; this module knows them all,
per record, so a shipper plugs in unchanged (replay files, the gateway, the raw Kafka
topics' normalizing stage all call it). Pure: no I/O, no clock.

Layouts (``LAYOUTS``):

* ``sigstream``: already a schema event (an ``event_type`` key); callers send it through
  the schema path (``schemas.events.parse_event``), not through ``normalize``.
* ``ecs``: Winlogbeat 7/8 and Elastic Agent's windows integration (``winlog.channel``,
  ``winlog.event_id`` or ``event.code``, ``winlog.event_data.*``/``winlog.user_data.*``,
  ``winlog.computer_name`` or ``host.name``, ``@timestamp``), nested or with dotted keys.
* ``winlogbeat_legacy``: Winlogbeat 5/6 (``log_name``, ``event_id``, ``computer_name``,
  ``source_name``, ``record_number``, ``event_data``/``user_data``, ``@timestamp``).
* ``nxlog``: NXLog ``im_msvistalog`` + ``to_json()``: a flat record, event data at top
  level beside NXLog's own header keys (dropped: ``NXLOG_HEADER``).
* ``evtx_json``: a record rendered as ``Event.System`` + ``Event.EventData`` or
  ``Event.UserData`` (the ``evtx`` package, evtx_dump, SigmaHQ's regression ``.json``).
* ``eslogger``: not Windows: macOS Endpoint Security events as ``eslogger`` prints them
  (an integer ``event_type``); ``normalize`` hands them to ``ingest.adapters.eslogger``.

Anything else is an ``UnknownLayout`` whose message names a sample of the keys seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ingest.adapters import eslogger
from ingest.adapters.windows import AdapterError, WindowsRecord, parse_time, stable_event_id
from ingest.adapters.windows import to_event as _to_event
from schemas.events import Envelope

LAYOUTS = ("sigstream", "ecs", "winlogbeat_legacy", "nxlog", "evtx_json", "eslogger")
FOREIGN_LAYOUTS = LAYOUTS[1:]

#: Keys NXLog (and the logstash relay the OTRF recordings went through) adds around the
#: event data of a flat ``im_msvistalog`` record. Checked against SigmaHQ's rules and
#: real event data: none of these names is an event-data field a rule uses. Left in the
#: data on purpose: ``EventType`` (Sysmon 12-14's EventType overwrites NXLog's),
#: ``AccountName`` (System 7045's service account overwrites NXLog's resolved user),
#: ``ProcessID`` (NXLog < 5's execution pid; Sysmon's is ``ProcessId``, a different key),
#: ``Domain``/``UserID``/``AccountType``/``Category`` (kept as before), ``Level``;
#: ``Keywords`` is kept and rendered as the hex mask rules compare with.
NXLOG_HEADER = frozenset(
    {
        # the header this adapter maps (channel, id, host, provider, time)
        "Channel",
        "EventID",
        "Hostname",
        "SourceName",
        "TimeCreated",
        "EventTime",
        "@timestamp",
        # NXLog's bookkeeping
        "Message",
        "EventReceivedTime",
        "SourceModuleName",
        "SourceModuleType",
        "Severity",
        "SeverityValue",
        "OpcodeValue",
        "Opcode",
        "Task",
        "Version",
        "ProviderGuid",
        "RecordNumber",
        "ActivityID",
        "RelatedActivityID",
        "ThreadID",
        "ExecutionProcessID",
        "ERRORMSG",
        "ERROR_EVT_UNRESOLVED",
        # a logstash relay's own fields
        "host",
        "port",
        "@version",
        "tags",
    }
)

#: Event ids are 16-bit; some renderings fold the qualifiers in (32 bits).
MAX_EVENT_ID = 2**32 - 1
_MISSING: Any = object()
_KEY_SAMPLE = 20
_KEY_CHARS = 40


class UnknownLayout(AdapterError):
    """No known Windows layout; the message names the reason and a sample of the keys."""

    reason = "unknown_layout"


# -- looking things up in nested or dotted records ---------------------------------------


def _walk(node: Any, parts: list[str]) -> Any:
    """The value at ``parts`` where any level may be nested or written as a dotted key."""
    current = node
    for part in parts:  # plain nesting, the common case (``type`` first: ABC checks cost)
        if not (type(current) is dict or isinstance(current, Mapping)) or part not in current:
            break
        current = current[part]
    else:
        return current
    if not parts:
        return node
    if not isinstance(node, Mapping):
        return _MISSING
    for cut in range(len(parts), 0, -1):
        key = ".".join(parts[:cut])
        if key in node:
            found = _walk(node[key], parts[cut:])
            if found is not _MISSING:
                return found
    return _MISSING


def _get(obj: Mapping[str, Any], dotted: str) -> Any:
    value = _walk(obj, dotted.split("."))
    return None if value is _MISSING else value


def _section(obj: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """The children of a section (``winlog.event_data``), nested or as dotted keys
    (``"winlog.event_data.Image"``, ``"winlog": {"event_data.Image": ...}``); the part
    after the section's prefix is taken verbatim as the field name."""
    parts = dotted.split(".")
    out: dict[str, Any] = {}
    for cut in range(len(parts)):
        node = _walk(obj, parts[:cut])
        if not (type(node) is dict or isinstance(node, Mapping)):
            continue
        prefix = ".".join(parts[cut:]) + "."
        if type(node) is dict and _no_key_has(node, prefix):
            continue
        for key, value in node.items():
            if isinstance(key, str) and key.startswith(prefix) and len(key) > len(prefix):
                out[key[len(prefix) :]] = value
    nested = _walk(obj, parts)
    if nested is not _MISSING and nested is not None:
        if not isinstance(nested, Mapping):
            raise AdapterError(f"{dotted} is not an object")
        out.update(nested)
    return out


def _no_key_has(node: dict[Any, Any], text: str) -> bool:
    """Whether no key of ``node`` contains ``text`` (one C-speed test for the common case
    of keys without dots; False, so the caller looks key by key, when a key is no str)."""
    try:
        return text not in "\x00".join(node)
    except TypeError:
        return False


def _has_prefix(obj: Mapping[str, Any], name: str) -> bool:
    prefix = name + "."
    return name in obj or any(isinstance(k, str) and k.startswith(prefix) for k in obj)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    return text or None


def _code(value: Any) -> int:
    if isinstance(value, bool):
        raise AdapterError(f"invalid EventID {value!r}")
    try:
        code = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AdapterError(f"invalid EventID {_short(repr(value))}") from exc
    if not 0 <= code <= MAX_EVENT_ID:
        raise AdapterError(f"EventID {_short(str(code))} out of range")
    return code


def _short(text: str, limit: int = _KEY_CHARS) -> str:
    printable = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return printable if len(printable) <= limit else printable[: limit - 1] + "…"


def _keys_sample(obj: Mapping[str, Any]) -> str:
    keys = sorted(_short(str(k)) for k in obj)
    shown = ", ".join(keys[:_KEY_SAMPLE])
    more = len(keys) - _KEY_SAMPLE
    return f"{shown}, ... {more} more" if more > 0 else shown or "none"


def user_data_fields(user_data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a ``UserData`` element: its one child named after the provider's
    template (``{"LogFileCleared": {"SubjectUserName": ...}}``) flattened; Winlogbeat's
    already-flat form (``{"xml_name": "LogFileCleared", "SubjectUserName": ...}``) kept."""
    out: dict[str, Any] = {}
    for key, value in user_data.items():
        if not isinstance(key, str) or key.startswith("#") or key == "xml_name":
            continue
        if isinstance(value, Mapping):
            out.update(
                (k, v) for k, v in value.items() if isinstance(k, str) and not k.startswith("#")
            )
        else:
            out[key] = value
    return out


# -- detection -----------------------------------------------------------------------------


def detect_layout(obj: Mapping[str, Any]) -> str:
    """Which layout one record is in; raises UnknownLayout with the reason."""
    if not isinstance(obj, Mapping):
        raise UnknownLayout(f"unknown layout: record is not a JSON object ({type(obj).__name__})")
    if eslogger.is_eslogger(obj):  # before "sigstream": its event_type is an integer
        return "eslogger"
    if "event_type" in obj:
        return "sigstream"
    event = obj.get("Event")
    if isinstance(event, Mapping) and "System" in event:
        return "evtx_json"
    if _has_prefix(obj, "winlog"):
        return "ecs"
    if "log_name" in obj and "event_id" in obj:
        return "winlogbeat_legacy"
    if "Channel" in obj and "EventID" in obj:
        return "nxlog"
    raise UnknownLayout(f"unknown layout: no Windows channel/event id (keys: {_keys_sample(obj)})")


# -- one reader per layout -----------------------------------------------------------------


def _ecs(obj: Mapping[str, Any]) -> WindowsRecord:
    channel = _text(_get(obj, "winlog.channel"))
    if channel is None:
        raise AdapterError("ecs record without winlog.channel")
    code = _get(obj, "winlog.event_id")
    if code is None:
        code = _get(obj, "event.code")
    if code is None:
        raise AdapterError("ecs record without winlog.event_id or event.code")
    data = user_data_fields(_section(obj, "winlog.user_data"))
    data.update(_section(obj, "winlog.event_data"))
    computer = _text(_get(obj, "winlog.computer_name")) or _text(_get(obj, "host.name"))
    return WindowsRecord(
        channel=channel,
        event_code=_code(code),
        computer=computer or "unknown",
        time=parse_time(_get(obj, "@timestamp")),
        provider=_text(_get(obj, "winlog.provider_name")),
        data=data,
    )


def _winlogbeat_legacy(obj: Mapping[str, Any]) -> WindowsRecord:
    data: dict[str, Any] = {}
    for name in ("user_data", "event_data"):
        section = obj.get(name) or {}
        if not isinstance(section, Mapping):
            raise AdapterError(f"{name} is not an object")
        data.update(user_data_fields(section) if name == "user_data" else section)
    return WindowsRecord(
        channel=str(obj["log_name"]),
        event_code=_code(obj["event_id"]),
        computer=str(obj.get("computer_name") or "unknown"),
        time=parse_time(obj.get("@timestamp")),
        provider=_text(obj.get("source_name")),
        data=data,
    )


def _keywords(value: Any) -> Any:
    """NXLog writes the keywords mask as a signed 64-bit integer; rules (and the event
    XML) spell it as hex: -9214364837600034816 -> ``0x8010000000000000``."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64:
        return f"0x{value & 0xFFFFFFFFFFFFFFFF:016x}"
    return value


def _nxlog(obj: Mapping[str, Any]) -> WindowsRecord:
    data = {k: v for k, v in obj.items() if k not in NXLOG_HEADER}
    if "Keywords" in data:
        data["Keywords"] = _keywords(data["Keywords"])
    when = obj.get("TimeCreated") or obj.get("@timestamp") or obj.get("EventTime")
    return WindowsRecord(
        channel=str(obj["Channel"]),
        event_code=_code(obj["EventID"]),
        computer=str(obj.get("Hostname") or "unknown"),
        time=parse_time(when),
        provider=_text(obj.get("SourceName")),
        data=data,
    )


def _attr(node: Any, name: str) -> Any:
    attributes = node.get("#attributes") if isinstance(node, Mapping) else None
    return attributes.get(name) if isinstance(attributes, Mapping) else None


def _evtx_json(obj: Mapping[str, Any]) -> WindowsRecord:
    event = obj.get("Event")
    system = event.get("System") if isinstance(event, Mapping) else None
    if not isinstance(event, Mapping) or not isinstance(system, Mapping):
        raise AdapterError("not a Windows event document: Event.System is not an object")
    event_code: Any = system.get("EventID")
    if isinstance(event_code, Mapping):  # <EventID Qualifiers="..">4624</EventID>
        event_code = event_code.get("#text")
    event_data = event.get("EventData") or {}
    user_data = event.get("UserData") or {}
    if not isinstance(event_data, Mapping):
        raise AdapterError("Event.EventData is not an object")
    if not isinstance(user_data, Mapping):
        raise AdapterError("Event.UserData is not an object")
    data = user_data_fields(user_data)
    data.update(
        (k, v) for k, v in event_data.items() if isinstance(k, str) and not k.startswith("#")
    )
    return WindowsRecord(
        channel=str(system.get("Channel") or ""),
        event_code=_code(event_code),
        computer=str(system.get("Computer") or "unknown"),
        time=parse_time(_attr(system.get("TimeCreated"), "SystemTime")),
        provider=_text(_attr(system.get("Provider"), "Name")),
        data=data,
    )


_READERS = {
    "ecs": _ecs,
    "winlogbeat_legacy": _winlogbeat_legacy,
    "nxlog": _nxlog,
    "evtx_json": _evtx_json,
}


def _check_layout(obj: Mapping[str, Any], layout: str | None) -> str:
    chosen = detect_layout(obj) if layout is None else layout
    if chosen not in LAYOUTS:
        raise AdapterError(f"unknown layout name {_short(str(chosen))!r}")
    if chosen == "sigstream":
        raise AdapterError("a schema event (event_type): send it through the schema path")
    if not isinstance(obj, Mapping):
        raise UnknownLayout(f"unknown layout: record is not a JSON object ({type(obj).__name__})")
    return chosen


def to_windows_record(obj: Mapping[str, Any], layout: str | None = None) -> WindowsRecord:
    """One record of a foreign layout (detected when ``layout`` is None) -> WindowsRecord;
    raises AdapterError (UnknownLayout when no layout fits), never anything else."""
    chosen = _check_layout(obj, layout)
    if chosen not in _READERS:
        raise AdapterError(f"{chosen} records are not Windows events: use normalize")
    try:
        return _READERS[chosen](obj)
    except AdapterError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise AdapterError(f"{chosen} record unreadable: {type(exc).__name__}: {exc}") from exc


def _record_id(layout: str, obj: Mapping[str, Any]) -> Any:
    if layout == "ecs":
        return _get(obj, "winlog.record_id")
    if layout == "winlogbeat_legacy":
        return obj.get("record_number")
    if layout == "nxlog":
        return obj.get("RecordNumber")
    if layout == "evtx_json":
        event = obj.get("Event")
        system = event.get("System") if isinstance(event, Mapping) else None
        return system.get("EventRecordID") if isinstance(system, Mapping) else None
    return None


def record_origin(
    layout: str, obj: Mapping[str, Any], raw: bytes, record: WindowsRecord | None = None
) -> str:
    """Where a record comes from, the same every time it is read again (a retry, a
    re-read after a crash): layout, computer, channel, record id and event time when the
    record has a record id (the time too, because a cleared log numbers from 1 again),
    else the SHA-256 of its bytes."""
    record_id = _text(_record_id(layout, obj)) if isinstance(obj, Mapping) else None
    if record_id is not None and layout in _READERS:
        try:
            rec = record or _READERS[layout](obj)
        except (AdapterError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
            rec = None
        if rec is not None:
            return (
                f"{layout}:{rec.computer.strip().lower()}:{rec.channel.lower()}"
                f":{record_id}:{rec.time.isoformat()}"
            )
    return f"{layout}:sha256:{hashlib.sha256(raw).hexdigest()}"


def normalize(
    obj: Mapping[str, Any],
    raw: bytes,
    *,
    tenant_id: str,
    sensor_id: str | None,
    received_time: datetime | None = None,
    sent_time: datetime | None = None,
    layout: str | None = None,
) -> Envelope:
    """One foreign-layout record -> a validated schema event with a stable event id
    (``sensor_id`` None: the host name lowered). Raises AdapterError / UnknownLayout."""
    chosen = _check_layout(obj, layout)
    if chosen == "eslogger":
        return eslogger.to_event(
            obj,
            raw,
            tenant_id=tenant_id,
            sensor_id=sensor_id,
            received_time=received_time,
            sent_time=sent_time,
        )
    record = to_windows_record(obj, chosen)
    origin = record_origin(chosen, obj, raw, record)
    try:
        event = _to_event(record, origin=origin, tenant_id=tenant_id, sensor_id=sensor_id)
    except AdapterError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise AdapterError(f"{chosen} record unconvertible: {type(exc).__name__}") from exc
    if received_time is None and sent_time is None:
        return event
    return event.model_copy(update={"received_time": received_time, "sent_time": sent_time})


__all__ = [
    "FOREIGN_LAYOUTS",
    "LAYOUTS",
    "NXLOG_HEADER",
    "UnknownLayout",
    "detect_layout",
    "normalize",
    "record_origin",
    "stable_event_id",
    "to_windows_record",
    "user_data_fields",
]
