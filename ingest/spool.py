"""A sensor's write-ahead spool: append-only segment files plus a committed offset.

Every event a sensor produces is appended here first; the delivery loop reads from the
committed position, sends, and moves the committed position only after the gateway
answered. Whatever happens in between (gateway or Kafka down, process killed) the events
are still on disk and are sent again, in the same order.

Layout of the spool folder::

    00000000000000000001.seg   NDJSON, one record per line, append-only
    00000000000000000002.seg   the next segment once the previous reached segment_bytes
    committed                  {"segment": N, "offset": bytes} - written atomically

Durability (``fsync``): ``"batch"`` (default) fsyncs each ``append`` call, so an event the
sensor handed over survives a power cut; ``"always"`` is the same but also fsyncs the
committed file's folder; ``"never"`` leaves flushing to the OS (survives a process crash,
not a power cut). A record torn by a crash mid-append (no trailing newline) is cut off when
the spool is opened again: the sensor had not been told it was stored.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FsyncPolicy = Literal["always", "batch", "never"]
SUFFIX = ".seg"


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Single writer, single reader (the delivery loop); thread-safe between the two."""

    def __init__(
        self, folder: Path, *, segment_bytes: int = 64 * 1024 * 1024, fsync: FsyncPolicy = "batch"
    ) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        self.committed = self._read_committed()
        segments = self._segments()
        self._head = segments[-1] if segments else max(1, self.committed.segment)
        self._repair_tail(self._head)
        self._writer = open(self._path(self._head), "ab")  # noqa: SIM115 - lives with the spool

    # -- files --------------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:020d}{SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob(f"*{SUFFIX}") if p.stem.isdigit())

    def _read_committed(self) -> Position:
        try:
            doc = json.loads((self.folder / "committed").read_text())
            return Position(int(doc["segment"]), int(doc["offset"]))
        except FileNotFoundError:
            return Position(1, 0)

    def _repair_tail(self, segment: int) -> None:
        path = self._path(segment)
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    # -- writing ------------------------------------------------------------------------

    def append(self, records: list[bytes]) -> None:
        """Store records (one line each, no newline inside) before they are sent."""
        for r in records:
            if b"\n" in r or b"\r" in r:
                raise ValueError("a spool record must be one line (compact JSON)")
        data = b"".join(r + b"\n" for r in records)
        with self._lock:
            if self._writer.tell() + len(data) > self.segment_bytes and self._writer.tell():
                self._writer.close()
                self._head += 1
                self._writer = open(self._path(self._head), "ab")  # noqa: SIM115
            self._writer.write(data)
            self._writer.flush()
            if self.fsync != "never":
                os.fsync(self._writer.fileno())

    # -- reading ------------------------------------------------------------------------

    def read(
        self, start: Position, max_records: int, max_bytes: int
    ) -> tuple[list[bytes], Position]:
        """Complete records from ``start`` on (at least one if any), and the position after."""
        with self._lock:
            pos = start
            records: list[bytes] = []
            size = 0
            while pos.segment <= self._head and len(records) < max_records:
                path = self._path(pos.segment)
                if not path.exists():
                    pos = Position(pos.segment + 1, 0)
                    continue
                with path.open("rb") as handle:
                    handle.seek(pos.offset)
                    while len(records) < max_records:
                        line = handle.readline()
                        if not line.endswith(b"\n"):
                            break
                        if records and size + len(line) > max_bytes:
                            return records, pos
                        records.append(line[:-1])
                        size += len(line)
                        pos = Position(pos.segment, pos.offset + len(line))
                if len(records) < max_records and pos.segment < self._head:
                    pos = Position(pos.segment + 1, 0)
                else:
                    break
            return records, pos

    def pending(self) -> bool:
        """Whether anything past the committed position is stored."""
        records, _ = self.read(self.committed, 1, 1)
        return bool(records)

    def commit(self, pos: Position) -> None:
        """Record that everything before ``pos`` was delivered; drop finished segments."""
        tmp = self.folder / "committed.tmp"
        with tmp.open("w") as handle:
            json.dump({"segment": pos.segment, "offset": pos.offset}, handle)
            handle.flush()
            if self.fsync != "never":
                os.fsync(handle.fileno())
        os.replace(tmp, self.folder / "committed")
        if self.fsync == "always":
            _fsync_dir(self.folder)
        self.committed = pos
        with self._lock:
            for seg in self._segments():
                if seg < pos.segment:
                    self._path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
