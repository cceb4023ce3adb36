"""File creation and modification under configured paths, from fanotify (ctypes, no
package): the kernel reports every file closed after writing (``FAN_CLOSE_WRITE``) with
the writer's pid and an open descriptor of the file, so both the path and the process
(``Image``: ``wget`` writing to ``/tmp``) are known, which inotify cannot tell.

Marks are per directory (its direct children, ``FAN_EVENT_ON_CHILD``) or per file, never
on a whole mount: the kernel only wakes the sensor for watched places. ``recursive`` adds
existing sub-directories up to ``max_marks`` in total (a bounded watch count; directories
created later are not added). Needs ``CAP_SYS_ADMIN``. The kernel's queue overflowing
(``FAN_Q_OVERFLOW``) is counted as lost events. ``parse_events`` is pure.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.sensor import procfs
from ingest.sensor.mapping import FileObservation, file_event

log = logging.getLogger(__name__)

FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
FAN_MARK_ADD, FAN_MARK_REMOVE = 0x1, 0x2
FAN_CLOSE_WRITE = 0x8
FAN_Q_OVERFLOW = 0x4000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_NOFD = -1
AT_FDCWD = -100
_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid

Emit = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class RawFanEvent:
    mask: int
    fd: int
    pid: int


def parse_events(data: bytes) -> Iterator[RawFanEvent]:
    """The fanotify events in one ``read`` (a short or malformed tail ends it)."""
    offset = 0
    while offset + _METADATA.size <= len(data):
        length, _, _, _, mask, fd, pid = _METADATA.unpack_from(data, offset)
        if length < _METADATA.size:
            return
        yield RawFanEvent(mask, fd, pid)
        offset += length


def watch_targets(paths: Sequence[str], recursive: bool, max_marks: int) -> tuple[list[str], int]:
    """The directories and files to mark (existing ones, at most ``max_marks``) and how
    many were left out for the bound."""
    out: list[str] = []
    left_out = 0
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            continue
        candidates = [path]
        if recursive and path.is_dir():
            candidates += sorted(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())
        for c in candidates:
            if str(c) in out:
                continue
            if len(out) >= max_marks:
                left_out += 1
                continue
            out.append(str(c))
    return out, left_out


def resolve(
    pid: int | None,
    proc: Path,
    boot: str,
    lookup: Callable[[int], procfs.ProcessInfo | None] | None,
) -> procfs.ProcessInfo | None:
    """The process ``pid`` from procfs, or as the exec source last saw it when procfs no
    longer has it (a writer that exited right after closing its file)."""
    if pid is None or pid <= 0:
        return None
    live = procfs.snapshot(pid, proc, boot)
    if live.image is None and lookup is not None:
        return lookup(pid) or live
    return live


class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.init = libc.fanotify_init
        self.init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        self.mark = libc.fanotify_mark
        self.mark.argtypes = [
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_char_p,
        ]


def available() -> str | None:
    """None when this host lets us use fanotify, else why not."""
    try:
        libc = _Libc()
    except (OSError, AttributeError) as exc:
        return f"no fanotify in this libc: {exc}"
    fd = libc.init(FAN_CLOEXEC | FAN_CLASS_NOTIF, os.O_RDONLY | os.O_LARGEFILE)
    if fd < 0:
        return f"fanotify_init: {os.strerror(ctypes.get_errno())} (needs CAP_SYS_ADMIN)"
    os.close(fd)
    return None


class FileCollector:
    """``file`` source: one fanotify group, marks on the configured paths."""

    name = "file"

    def __init__(
        self,
        sensor_id: str,
        host: str,
        paths: Sequence[str],
        recursive: bool = False,
        max_marks: int = 256,
        proc: Path = Path("/proc"),
        lookup: Callable[[int], procfs.ProcessInfo | None] | None = None,
    ) -> None:
        self.lookup = lookup  # the exec source's memory, for a writer already gone
        self.sensor_id, self.host, self.proc = sensor_id, host, proc
        self.paths, self.recursive, self.max_marks = list(paths), recursive, max_marks
        self.boot = procfs.boot_id(proc)
        self.own_pid = os.getpid()
        self.error: str | None = None
        self.degraded: str | None = None
        self.overflows = 0
        self.marked: list[str] = []
        self._fd = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> str:
        if self.error:
            return f"unavailable: {self.error}"
        if self._stop.is_set():
            return "stopped"
        if self._thread is None or not self._thread.is_alive():
            return "unavailable: not running"
        reasons = [r for r in (self.degraded,) if r]
        if self.overflows:
            reasons.append(f"kernel queue overflowed {self.overflows} times")
        return f"degraded: {'; '.join(reasons)}" if reasons else "ok"

    def start(self, emit: Emit) -> None:
        try:
            self._libc = _Libc()
        except (OSError, AttributeError) as exc:
            self.error = f"no fanotify in this libc: {exc}"
            return
        fd = self._libc.init(
            FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF, os.O_RDONLY | os.O_LARGEFILE
        )
        if fd < 0:
            err = ctypes.get_errno()
            self.error = f"fanotify_init: {os.strerror(err)} (needs CAP_SYS_ADMIN)"
            return
        self._fd = fd
        self._apply_marks()
        self._thread = threading.Thread(target=self._run, args=(emit,), name="sensor-file")
        self._thread.daemon = True
        self._thread.start()

    def _mark(self, flags: int, target: str) -> int:
        mask = FAN_CLOSE_WRITE | (FAN_EVENT_ON_CHILD if os.path.isdir(target) else 0)
        rc = self._libc.mark(self._fd, flags, mask, AT_FDCWD, target.encode())
        return 0 if rc == 0 else ctypes.get_errno()

    def _apply_marks(self) -> None:
        with self._lock:
            for target in self.marked:
                self._mark(FAN_MARK_REMOVE, target)
            targets, left_out = watch_targets(self.paths, self.recursive, self.max_marks)
            marked, failed = [], []
            for t in targets:
                err = self._mark(FAN_MARK_ADD, t)
                (failed.append(f"{t}: {os.strerror(err)}") if err else marked.append(t))
            self.marked = marked
            missing = [p for p in self.paths if not Path(p).exists()]
            reasons = []
            if left_out:
                reasons.append(f"{left_out} directories over max_marks={self.max_marks}")
            if failed:
                reasons.append("cannot mark " + ", ".join(failed[:3]))
            if not marked:
                reasons.append(
                    "no configured path exists"
                    + (f" ({', '.join(missing[:3])})" if missing else "")
                )
            self.degraded = "; ".join(reasons) or None

    def reconfigure(self, paths: Sequence[str], recursive: bool, max_marks: int) -> None:
        """New paths take effect at once (SIGHUP); the fanotify group is kept."""
        self.paths, self.recursive, self.max_marks = list(paths), recursive, max_marks
        if self._fd >= 0:
            self._apply_marks()

    def _run(self, emit: Emit) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError as exc:
                self.error = f"fanotify read failed: {exc}"
                return
            for raw in parse_events(data):
                self._handle(raw, emit)

    def _handle(self, raw: RawFanEvent, emit: Emit) -> None:
        if raw.mask & FAN_Q_OVERFLOW:
            self.overflows += 1
        if raw.fd == FAN_NOFD or raw.fd < 0:
            return
        try:
            path = os.readlink(f"/proc/self/fd/{raw.fd}")
        except OSError:
            path = None
        finally:
            with contextlib.suppress(OSError):
                os.close(raw.fd)
        if path is None or raw.pid == self.own_pid or not (raw.mask & FAN_CLOSE_WRITE):
            return
        process = resolve(raw.pid, self.proc, self.boot, self.lookup)
        obs = FileObservation(path, raw.pid, time.time_ns(), process)
        emit(file_event(self.sensor_id, self.host, obs))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
