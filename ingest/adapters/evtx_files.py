"""Windows ``.evtx`` files (the Chainsaw / Hayabusa / Zircolite habit, and SigmaHQ's own
regression cases): each record rendered as JSON by the Rust-backed ``evtx`` parser (the
same ``Event.System`` + ``Event.EventData``/``UserData`` layout SigmaHQ's ``.json`` files
hold), then read by the regression adapter's ``record_from_document``.

Bounds: a record the parser cannot read, or one that is not a Windows event, becomes a
reject with the reason (DLQ on replay); a file that stops parsing mid-way ends with one
reject saying where, and the records before it are kept; so does a file shorter than
its header says (copied while being written, cut by a transfer): the parser silently
stops at the cut, so the header's chunk count is checked against the size. At most
``max_records`` per file (a replay tool reads files an analyst picked, but a 10 GB log is
still refused with a reason past the bound rather than read without end)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from ingest.adapters.sigma_regression import record_from_document
from ingest.adapters.windows import AdapterError, WindowsRecord

#: Records read from one file at most (the rest is one reject with the reason).
MAX_RECORDS = 5_000_000

#: The EVTX file header (one 4 KiB block) and its chunks (64 KiB each) follow it.
HEADER_BYTES = 4096
CHUNK_BYTES = 65536
_SIGNATURE = b"ElfFile\x00"
_CHUNK_COUNT_OFFSET = 42


def truncation(path: Path) -> str | None:
    """Why the file is shorter than its header says, or None. A live log's header may
    count fewer chunks than the file holds (it is updated lazily); never more."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(HEADER_BYTES)
    except OSError:
        return None  # the parser reports unreadable files itself
    if len(header) < _CHUNK_COUNT_OFFSET + 2 or not header.startswith(_SIGNATURE):
        return None
    (chunks,) = struct.unpack_from("<H", header, _CHUNK_COUNT_OFFSET)
    expected = HEADER_BYTES + chunks * CHUNK_BYTES
    if size >= expected:
        return None
    return (
        f"truncated .evtx: its header declares {chunks} chunk(s) ({expected:,} bytes) but the "
        f"file has {size:,} bytes; records in the missing part are lost"
    )


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
    cut = truncation(path)
    index = 0
    while True:
        origin = f"{where}#{index}"
        try:
            record = next(records)
        except StopIteration:
            if cut:
                yield origin, AdapterError(cut), b""
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
