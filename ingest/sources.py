"""Find the right adapter for a path and stream schema events (or rejects) from it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ingest.adapters import AdapterError, evtx_files, otrf, sigma_regression, to_event
from ingest.adapters.layouts import detect_layout, to_windows_record
from schemas.events import Envelope, parse_event


@dataclass(frozen=True)
class Item:
    """One input record: the event it became, or why it could not become one."""

    origin: str
    raw: bytes
    event: Envelope | None = None
    reason: str | None = None


def _format_of(path: Path) -> str:
    if path.name.endswith((".zip", ".tar.gz", ".tgz")):
        return "otrf"
    if path.suffix in (".jsonl", ".ndjson"):
        return "ndjson"
    if path.suffix.lower() == ".evtx":
        return "evtx"
    if path.suffix == ".json":
        head = path.read_text(encoding="utf-8", errors="replace")[:4096]
        return "sigma-regression" if '"Event"' in head and '"System"' in head else "otrf"
    raise ValueError(f"{path}: unknown input format (expected .json, .jsonl, .evtx, .zip, .tar.gz)")


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files to replay: directories are walked for every supported file but ``.evtx``,
    sorted. ``.evtx`` files are read when named: SigmaHQ's regression folders hold each
    case as both ``.json`` and ``.evtx``, and a walk must not replay it twice."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.name.endswith((".json", ".jsonl", ".ndjson", ".zip", ".tar.gz"))
            )
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


def _ndjson_lines(path: Path, tenant_id: str) -> Iterator[Item]:
    """One record per line, its layout detected per line: schema events are validated as
    they are; the shippers' layouts (``layouts.LAYOUTS``) go through their adapter; a
    line of no known layout is a reject naming the keys it has."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path.name}#{number}"
            raw = line.rstrip(b"\n")
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None  # the schema path words the reason (invalid JSON at ...)
            try:
                if not isinstance(obj, dict) or detect_layout(obj) == "sigstream":
                    yield Item(origin, raw, event=parse_event(raw))
                else:
                    record = to_windows_record(obj)
                    event = to_event(record, origin=origin, tenant_id=tenant_id)
                    yield Item(origin, raw, event=event)
            except ValidationError as exc:
                yield Item(origin, raw, reason=_reason(exc))
            except AdapterError as exc:
                yield Item(origin, raw, reason=str(exc))


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "event"
    return f"schema validation failed at {where}: {first['msg']}"


def read_items(path: Path, *, tenant_id: str = "default") -> Iterator[Item]:
    """Every record of one file as an Item, with per-sensor sequence numbers."""
    fmt = _format_of(path)
    if fmt == "ndjson":
        yield from _ndjson_lines(path, tenant_id)
        return
    readers = {"otrf": otrf.read_file, "evtx": evtx_files.read_file}
    reader = readers.get(fmt, sigma_regression.read_file)
    for origin, record, raw in reader(path):
        if isinstance(record, AdapterError):
            yield Item(origin, raw, reason=str(record))
            continue
        try:
            yield Item(origin, raw, event=to_event(record, origin=origin, tenant_id=tenant_id))
        except AdapterError as exc:
            yield Item(origin, raw, reason=str(exc))


def iter_items(paths: Iterable[Path], *, tenant_id: str = "default") -> Iterator[Item]:
    """All records of all paths, numbering each sensor's events 0, 1, 2, ... in order."""
    seqs: dict[str, int] = {}
    for path in expand_paths(paths):
        for item in read_items(path, tenant_id=tenant_id):
            if item.event is not None and item.event.seq is None:
                sensor = item.event.sensor_id
                seq = seqs.get(sensor, 0)
                seqs[sensor] = seq + 1
                item = Item(item.origin, item.raw, item.event.model_copy(update={"seq": seq}))
            yield item


def dumps_item(item: Item) -> str:
    """Human-readable one-liner for logs and --dry-run."""
    if item.event is not None:
        return f"{item.origin}: {item.event.event_type} on {item.event.host}"
    preview = json.dumps(item.raw[:80].decode(errors="replace"))
    return f"{item.origin}: REJECTED {item.reason} {preview}"
