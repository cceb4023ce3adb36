"""Collector observations -> schema events (pure: no I/O, no clock).

Field names are those SigmaHQ's Linux rules use (Sysmon for Linux's, i.e. Windows'):
``Image``, ``CommandLine``, ``ParentImage`` ... with ``logsource.product: linux`` and the
event type's category, so upstream rules match without a field mapping. What a collector
could not learn stays absent (never an invented value); a process that was gone before
procfs could be read is marked ``extra.sensor_incomplete = "true"``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.sensor.procfs import ProcessInfo

#: Namespace of the sensor's event ids (uuid5 of sensor id and the observation's identity).
EVENT_ID_NAMESPACE = uuid.UUID("6f1d2c4a-8b3e-4f5a-9c7d-2e1b0a3f4d5c")


@dataclass(frozen=True)
class FileObservation:
    """A file created or written (closed after writing) under a watched path."""

    path: str
    pid: int | None
    at_ns: int  # wall clock, ns since the epoch
    process: ProcessInfo | None = None


@dataclass(frozen=True)
class ConnectionObservation:
    """An outbound TCP connection seen in ``/proc/net/tcp{,6}``."""

    protocol: str  # "tcp"
    source_ip: str
    source_port: int
    destination_ip: str
    destination_port: int
    ipv6: bool
    inode: int
    uid: int | None
    at_ns: int
    process: ProcessInfo | None = None


def _time(at_ns: int) -> datetime:
    return datetime.fromtimestamp(at_ns / 1e9, tz=UTC)


def _event_id(sensor_id: str, *parts: object) -> str:
    return uuid.uuid5(EVENT_ID_NAMESPACE, "/".join(map(str, (sensor_id, *parts)))).hex


def _envelope(
    sensor_id: str, host: str, event_type: str, at_ns: int, key: tuple[object, ...]
) -> dict[str, Any]:
    return {
        "sensor_id": sensor_id,
        "host": host,
        "event_id": _event_id(sensor_id, event_type, *key),
        "event_time": _time(at_ns),
        "event_type": event_type,
        "logsource": {"product": "linux", "category": event_type},
    }


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _process_fields(p: ProcessInfo | None) -> dict[str, Any]:
    if p is None:
        return {}
    return _present(
        {"Image": p.image, "ProcessId": str(p.pid), "ProcessGuid": p.guid, "User": p.user}
    )


def process_creation(
    sensor_id: str,
    host: str,
    at_ns: int,
    proc: ProcessInfo,
    parent: ProcessInfo | None,
    logon_id: str | None = None,
) -> dict[str, Any]:
    """One exec: the new image and its parent (as the sensor last knew it)."""
    event = _envelope(sensor_id, host, "process_creation", at_ns, (proc.pid, at_ns))
    parent_pid = proc.parent_pid if proc.parent_pid is not None else (parent and parent.pid)
    event |= _present(
        {
            "Image": proc.image,
            "CommandLine": proc.command_line,
            "CurrentDirectory": proc.current_directory,
            "User": proc.user,
            "ProcessId": str(proc.pid),
            "ProcessGuid": proc.guid,
            "LogonId": logon_id,
            "ParentProcessId": None if parent_pid is None else str(parent_pid),
            "ParentImage": parent.image if parent else None,
            "ParentCommandLine": parent.command_line if parent else None,
            "ParentProcessGuid": parent.guid if parent else None,
            "ParentUser": parent.user if parent else None,
        }
    )
    extra = {}
    if not proc.complete:
        extra["sensor_incomplete"] = "true"
        if proc.comm and not proc.image:
            extra["comm"] = proc.comm
    if extra:
        event["extra"] = extra
    return event


def file_event(sensor_id: str, host: str, obs: FileObservation) -> dict[str, Any]:
    """A file created or modified: its path and the writing process when known."""
    event = _envelope(sensor_id, host, "file_event", obs.at_ns, (obs.path, obs.pid, obs.at_ns))
    event["TargetFilename"] = obs.path
    event |= _process_fields(obs.process)
    if obs.process is None and obs.pid is not None:
        event["ProcessId"] = str(obs.pid)
    return event


def network_connection(sensor_id: str, host: str, obs: ConnectionObservation) -> dict[str, Any]:
    """An outbound connection (``Initiated: true``) and its owner when found."""
    key = (obs.inode, obs.source_port, obs.destination_ip, obs.destination_port)
    event = _envelope(sensor_id, host, "network_connection", obs.at_ns, key)
    event |= {
        "Protocol": obs.protocol,
        "Initiated": "true",
        "SourceIp": obs.source_ip,
        "SourcePort": str(obs.source_port),
        "SourceIsIpv6": str(obs.ipv6).lower(),
        "DestinationIp": obs.destination_ip,
        "DestinationPort": str(obs.destination_port),
        "DestinationIsIpv6": str(obs.ipv6).lower(),
    }
    event |= _process_fields(obs.process)
    return event
