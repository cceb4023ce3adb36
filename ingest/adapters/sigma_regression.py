"""SigmaHQ regression events: the Windows event rendered as ``Event.System`` +
``Event.EventData`` JSON (one or more concatenated JSON documents per file)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.adapters.windows import AdapterError, WindowsRecord, parse_time


def iter_json_documents(text: str) -> Iterator[Any]:
    """Yield each JSON document of a file that holds several back to back."""
    decoder = json.JSONDecoder()
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return
        document, index = decoder.raw_decode(text, index)
        yield document


def _attr(node: Any, name: str) -> Any:
    attributes = node.get("#attributes") if isinstance(node, dict) else None
    return attributes.get(name) if isinstance(attributes, dict) else None


def record_from_document(document: Any) -> WindowsRecord:
    """One ``{"Event": {"System": ..., "EventData": ...}}`` document -> WindowsRecord."""
    try:
        event = document["Event"]
        system = event["System"]
    except (KeyError, TypeError) as exc:
        raise AdapterError("not a Windows event document: missing Event.System") from exc
    if not isinstance(event, dict) or not isinstance(system, dict):
        raise AdapterError("not a Windows event document: Event.System is not an object")
    event_code: Any = system.get("EventID")
    if isinstance(event_code, dict):  # <EventID Qualifiers="..">4624</EventID>
        event_code = event_code.get("#text")
    data = event.get("EventData") or event.get("UserData") or {}
    if not isinstance(data, dict):
        raise AdapterError("Event.EventData is not an object")
    data = {k: v for k, v in data.items() if not k.startswith("#")}
    try:
        code = int(event_code)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AdapterError(f"invalid EventID {event_code!r}") from exc
    return WindowsRecord(
        channel=str(system.get("Channel") or ""),
        event_code=code,
        computer=str(system.get("Computer") or "unknown"),
        time=parse_time(_attr(system.get("TimeCreated"), "SystemTime")),
        provider=_attr(system.get("Provider"), "Name"),
        data=data,
    )


def read_file(path: Path) -> Iterator[tuple[str, WindowsRecord | AdapterError, bytes]]:
    """Yield (origin, record or error, raw bytes) for every document in one .json file."""
    text = path.read_text(encoding="utf-8")
    for index, document in enumerate(iter_json_documents(text)):
        origin = f"sigma-regression:{path.parent.name}/{path.name}#{index}"
        raw = json.dumps(document).encode()
        try:
            yield origin, record_from_document(document), raw
        except AdapterError as exc:
            yield origin, exc, raw
