"""OTRF Security-Datasets host logs: newline-delimited JSON inside .zip / .tar.gz files.

Two layouts occur: nxlog's flat records (``Channel``, ``EventID``, ``Hostname`` and the
event data at top level) and winlogbeat 6 records (``log_name``, ``event_id``,
``computer_name``, ``event_data``).
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.adapters.windows import AdapterError, WindowsRecord, parse_time

#: nxlog / logstash bookkeeping keys that are not part of the Windows event itself.
_NXLOG_HEADER = {
    "Channel",
    "EventID",
    "Hostname",
    "SourceName",
    "TimeCreated",
    "@timestamp",
    "Message",
    "EventTime",
    "EventReceivedTime",
    "host",
    "port",
    "@version",
    "tags",
}


def record_from_line(obj: Any) -> WindowsRecord:
    """One OTRF JSON object -> WindowsRecord."""
    if not isinstance(obj, dict):
        raise AdapterError("record is not a JSON object")
    if "log_name" in obj and "event_id" in obj:  # winlogbeat 6
        data = obj.get("event_data") or {}
        if not isinstance(data, dict):
            raise AdapterError("event_data is not an object")
        return WindowsRecord(
            channel=str(obj["log_name"]),
            event_code=_code(obj["event_id"]),
            computer=str(obj.get("computer_name") or "unknown"),
            time=parse_time(obj.get("@timestamp")),
            provider=obj.get("source_name"),
            data=data,
        )
    if "Channel" in obj and "EventID" in obj:  # nxlog flat
        data = {k: v for k, v in obj.items() if k not in _NXLOG_HEADER}
        return WindowsRecord(
            channel=str(obj["Channel"]),
            event_code=_code(obj["EventID"]),
            computer=str(obj.get("Hostname") or "unknown"),
            time=parse_time(obj.get("TimeCreated") or obj.get("@timestamp")),
            provider=obj.get("SourceName"),
            data=data,
        )
    raise AdapterError("unknown OTRF layout: no Channel/EventID nor log_name/event_id")


def _code(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AdapterError(f"invalid EventID {value!r}") from exc


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """The JSON files inside an archive (macOS resource forks skipped)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".json") and not name.startswith("__MACOSX/"):
                    yield name, archive.read(name)
    elif path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted and member.name.endswith(".json"):
                    yield member.name, extracted.read()
    else:
        yield path.name, path.read_bytes()


def read_file(path: Path) -> Iterator[tuple[str, WindowsRecord | AdapterError, bytes]]:
    """Yield (origin, record or error, raw line) for every line of an OTRF dataset."""
    for member, content in _members(path):
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            origin = f"otrf:{path.name}/{member}#{number}"
            try:
                obj = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield origin, AdapterError(f"malformed JSON: {exc}"), line
                continue
            try:
                yield origin, record_from_line(obj), line
            except AdapterError as exc:
                yield origin, exc, line
