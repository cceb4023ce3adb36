"""Windows ``.evtx`` files (the Chainsaw / Hayabusa / Zircolite habit, and SigmaHQ's own
regression cases): each record rendered as JSON by the Rust-backed ``evtx`` parser (the
same ``Event.System`` + ``Event.EventData``/``UserData`` layout SigmaHQ's ``.json`` files
hold), then read by the regression adapter's ``record_from_document``.

Bounds: a record the parser cannot read, or one that is not a Windows event, becomes a
reject with the reason (DLQ on replay); a file that stops parsing mid-way ends with one
reject saying where, and the records before it are kept. At most ``max_records`` per
file (a replay tool reads files an analyst picked, but a 10 GB log is still refused with
a reason past the bound rather than read without end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ingest.adapters.sigma_regression import record_from_document
from ingest.adapters.windows import AdapterError, WindowsRecord

#: Records read from one file at most (the rest is one reject with the reason).
MAX_RECORDS = 5_000_000


def read_file(
    path: Path, max_records: int = MAX_RECORDS
) -> Iterator[tuple[str, WindowsRecord | AdapterError, bytes]]:
    """Yield (origin, record or error, the record's JSON) for every record of one .evtx."""
    from evtx import PyEvtxParser

    where = f"evtx:{path.parent.name}/{path.name}"
    try:
        records = iter(PyEvtxParser(str(path)).records_json())
    except (OSError, RuntimeError, ValueError) as exc:
        yield f"{where}#0", AdapterError(f"not a readable .evtx file: {exc}"), b""
        return
    index = 0
    while True:
        origin = f"{where}#{index}"
        try:
            record = next(records)
        except StopIteration:
            return
        except (OSError, RuntimeError, ValueError) as exc:
            yield origin, AdapterError(f"evtx parse error after {index} records: {exc}"), b""
            return
        if index >= max_records:
            yield origin, AdapterError(f"more than {max_records:,} records in one file"), b""
            return
        raw = str(record.get("data") or "").encode()
        try:
            yield origin, record_from_document(json.loads(raw)), raw
        except (ValueError, AdapterError) as exc:
            yield origin, AdapterError(str(exc)), raw
        index += 1
