"""SigmaHQ regression events: the Windows event rendered as ``Event.System`` +
``Event.EventData`` (or ``Event.UserData``) JSON (one or more concatenated JSON documents
per file)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.adapters.layouts import to_windows_record
from ingest.adapters.windows import AdapterError, WindowsRecord


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


def record_from_document(document: Any) -> WindowsRecord:
    """One ``{"Event": {"System": ..., "EventData"/"UserData": ...}}`` document ->
    WindowsRecord; ``UserData``'s one template element is flattened into the data."""
    event = document.get("Event") if isinstance(document, dict) else None
    if not isinstance(event, dict) or "System" not in event:
        raise AdapterError("not a Windows event document: missing Event.System")
    return to_windows_record(document, "evtx_json")


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
