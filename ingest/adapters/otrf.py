"""OTRF Security-Datasets host logs: newline-delimited JSON inside .zip / .tar.gz files.

Two layouts occur: nxlog's flat records (``Channel``, ``EventID``, ``Hostname`` and the
event data at top level) and winlogbeat 6 records (``log_name``, ``event_id``,
``computer_name``, ``event_data``); ``layouts`` detects them (and the other shippers'
layouts) per record.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.adapters.layouts import to_windows_record
from ingest.adapters.windows import AdapterError, WindowsRecord


def record_from_line(obj: Any) -> WindowsRecord:
    """One OTRF JSON object -> WindowsRecord (the layout detected per record)."""
    return to_windows_record(obj)


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
