"""Events and batches for the gateway tests (no services)."""

from __future__ import annotations

import json
from typing import Any


def event(n: int, sensor: str = "ws01", **fields: Any) -> dict[str, Any]:
    """A valid process_creation event without a tenant (the gateway sets it)."""
    doc: dict[str, Any] = {
        "event_type": "process_creation",
        "sensor_id": sensor,
        "host": sensor.upper(),
        "event_id": f"{sensor}-{n:06d}",
        "seq": n,
        "event_time": "2026-11-20T10:00:00Z",
        "logsource": {"product": "windows", "category": "process_creation"},
        "EventID": 1,
        "Image": "C:\\Windows\\System32\\cmd.exe",
        "CommandLine": f"cmd.exe /c echo {n}",
    }
    doc.update(fields)
    return doc


def ndjson(docs: list[Any]) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)
