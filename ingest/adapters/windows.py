"""Map one Windows event (header + event data) to a Sigstream schema event.

The mapping from (channel, event id) to Sigma's logsource is data: Sysmon event ids to
Sigma categories below, and channel names to Sigma services from pySigma's own table, so
it stays in step with the rules' authors.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sigma.pipelines.common import windows_logsource_mapping

from schemas.events import Envelope, category_fields, parse_event

SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
POWERSHELL_CHANNEL = "Microsoft-Windows-PowerShell/Operational"

#: Sysmon event id -> event type (= Sigma category). 12 is split by EventType below.
SYSMON_EVENT_TYPES: dict[int, str] = {
    1: "process_creation",
    2: "file_change",
    3: "network_connection",
    5: "process_termination",
    6: "driver_load",
    7: "image_load",
    8: "create_remote_thread",
    9: "raw_access_thread",
    10: "process_access",
    11: "file_event",
    12: "registry_add",
    13: "registry_set",
    14: "registry_rename",
    15: "create_stream_hash",
    17: "pipe_created",
    18: "pipe_created",
    19: "wmi_event",
    20: "wmi_event",
    21: "wmi_event",
    22: "dns_query",
    23: "file_delete",
    26: "file_delete",
}

POWERSHELL_EVENT_TYPES: dict[int, str] = {4104: "ps_script", 4103: "ps_module"}


def _channel_services() -> dict[str, str]:
    services: dict[str, str] = {}
    for service, channels in windows_logsource_mapping.items():
        for channel in [channels] if isinstance(channels, str) else channels:
            services[channel.lower()] = service
    return services


CHANNEL_SERVICES = _channel_services()

#: Namespace for deterministic event ids derived from a record's origin.
EVENT_ID_NAMESPACE = uuid.UUID("6f1e0c1e-3a0b-4b7e-9f4e-5b1c2d3e4f50")


class AdapterError(ValueError):
    """A record that cannot become a schema event; the message is the DLQ reason and
    ``reason`` its short code (a DLQ reason header, a gateway reject code)."""

    reason: str = "adapter_invalid"


@dataclass(frozen=True)
class WindowsRecord:
    """The parts of a Windows event every source format has, whatever its layout."""

    channel: str
    event_code: int
    computer: str
    time: datetime
    provider: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


def event_type_for(channel: str, event_code: int, data: Mapping[str, Any]) -> str:
    """Which schema model a Windows event belongs to."""
    lowered = channel.lower()
    if lowered == SYSMON_CHANNEL.lower():
        event_type = SYSMON_EVENT_TYPES.get(event_code, "windows_event")
        if event_code == 12 and str(data.get("EventType", "")).lower().startswith("delete"):
            return "registry_delete"
        return event_type
    if lowered == POWERSHELL_CHANNEL.lower():
        return POWERSHELL_EVENT_TYPES.get(event_code, "windows_event")
    return "windows_event"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def stable_event_id(origin: str) -> str:
    """An event id that is the same every time the same record is replayed:
    ``str(uuid.uuid5(EVENT_ID_NAMESPACE, origin))``, spelled out without the UUID object
    (tests/unit/test_adapters.py checks it against ``uuid.uuid5``)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + origin.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=64)
def _declared(event_type: str) -> frozenset[str]:
    """The Sigma fields an event type declares (``category_fields``, once per type)."""
    return frozenset(category_fields(event_type)) if event_type != "windows_event" else frozenset()


def to_event(
    record: WindowsRecord,
    *,
    origin: str,
    tenant_id: str = "default",
    sensor_id: str | None = None,
    seq: int | None = None,
) -> Envelope:
    """Build and validate the schema event; raises AdapterError with a reason."""
    event_type = event_type_for(record.channel, record.event_code, record.data)
    declared = _declared(event_type)
    typed: dict[str, str] = {}
    extra: dict[str, str] = {}
    for raw_key, value in record.data.items():
        # Some providers (Defender, ...) name data fields with spaces ("Threat Name");
        # Sigma's taxonomy spells them without ("ThreatName").
        key = raw_key.replace(" ", "")
        if value is None or key in ("EventID", "Channel", "Provider_Name"):
            continue
        (typed if key in declared else extra)[key] = _as_text(value)
    service = CHANNEL_SERVICES.get(record.channel.lower())
    host = record.computer.strip()
    payload: dict[str, Any] = {
        "event_type": event_type,
        "tenant_id": tenant_id,
        "sensor_id": sensor_id or host.lower(),
        "host": host,
        "event_id": stable_event_id(origin),
        "seq": seq,
        "event_time": record.time,
        "logsource": {
            "product": "windows",
            "category": None if event_type == "windows_event" else event_type,
            "service": service,
        },
        "EventID": record.event_code,
        "Channel": record.channel,
        "Provider_Name": record.provider,
        "extra": extra,
        **typed,
    }
    try:
        return parse_event(payload)
    except ValidationError as exc:
        raise AdapterError(f"schema validation failed: {_summarise(exc)}") from exc


def _summarise(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


def parse_time(value: Any) -> datetime:
    """Parse the timestamp spellings found in Windows exports (always to aware UTC)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            parsed = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise AdapterError(f"timestamp out of range {value!r}") from exc
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # Python < 3.12 wants at most 6 fractional digits.
        if "." in text:
            head, _, tail = text.partition(".")
            digits = "".join(ch for ch in tail if ch.isdigit())
            rest = tail[len(digits) :]
            text = f"{head}.{digits[:6]}{rest}"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise AdapterError(f"unparseable timestamp {value!r}") from exc
    else:
        raise AdapterError(f"missing or empty timestamp {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 with an offset
        raise AdapterError(f"timestamp out of range {value!r}") from exc
