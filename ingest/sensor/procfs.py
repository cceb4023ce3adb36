"""What a process is, read from procfs: image, command line, directory, user, parent, and an
id stable for the process's whole life.

A pid is reused; (boot id, pid, start time in clock ticks) is not, so the process GUID is
a UUIDv5 of that triple: the same for every event of one process, different for the next
process that gets the pid, and computable again by anyone who sees the same process. A
process that is gone before we look (short-lived commands) gives what could still be
read and ``complete=False``; nothing here raises for a vanished or unreadable process.
"""

from __future__ import annotations

import os
import pwd
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROCESS_GUID_NAMESPACE = uuid.UUID("0b6a2f3e-5c1d-4e8f-9a7b-3d2c1e0f4a5b")

#: Bytes of a command line kept (the kernel's own limit is far larger; rules look at the
#: start, and an event must stay under the gateway's size bound).
MAX_COMMAND_LINE = 32 * 1024


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    guid: str | None
    image: str | None
    command_line: str | None
    current_directory: str | None
    uid: int | None
    user: str | None
    parent_pid: int | None
    start_ticks: int | None
    comm: str | None
    complete: bool


def boot_id(proc: Path = Path("/proc")) -> str:
    try:
        return (proc / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def process_guid(boot: str, pid: int, start_ticks: int) -> str:
    return str(uuid.uuid5(PROCESS_GUID_NAMESPACE, f"{boot}/{pid}/{start_ticks}"))


def parse_stat(text: str) -> tuple[str, int, int] | None:
    """(comm, ppid, start time in ticks) from ``/proc/PID/stat``; the command name may hold
    spaces and parentheses, so fields are counted from the *last* ``)``."""
    open_, close = text.find("("), text.rfind(")")
    if open_ < 0 or close < open_:
        return None
    fields = text[close + 1 :].split()
    # fields[0] is field 3 (state): ppid is field 4, starttime field 22.
    try:
        return text[open_ + 1 : close], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def parse_uid(status: str) -> int | None:
    """The real uid from ``/proc/PID/status``."""
    for line in status.splitlines():
        if line.startswith("Uid:"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def join_command_line(raw: bytes) -> str:
    """``/proc/PID/cmdline`` (NUL-separated arguments) as one line, as Sigma's Linux rules
    expect it: arguments joined by single spaces, undecodable bytes replaced."""
    args = raw[:MAX_COMMAND_LINE].rstrip(b"\x00").split(b"\x00")
    return " ".join(a.decode("utf-8", "replace") for a in args)


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _read(path: Path, limit: int = 1 << 16) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def snapshot(pid: int, proc: Path = Path("/proc"), boot: str | None = None) -> ProcessInfo:
    """Everything procfs still tells about ``pid`` (fields None where it did not)."""
    base = proc / str(pid)
    # What rules need most first: a short-lived process may be gone by the next read.
    image = _link(base / "exe")
    cmdline = _read(base / "cmdline", MAX_COMMAND_LINE)
    stat_raw = _read(base / "stat")
    stat = parse_stat(stat_raw.decode("utf-8", "replace")) if stat_raw else None
    status = _read(base / "status")
    if image and image.endswith(" (deleted)"):
        image = image[: -len(" (deleted)")]
    uid = parse_uid(status.decode("utf-8", "replace")) if status else None
    comm, ppid, start = stat if stat else (None, None, None)
    command_line = join_command_line(cmdline) if cmdline else None
    return ProcessInfo(
        pid=pid,
        guid=process_guid(boot or boot_id(proc), pid, start) if start is not None else None,
        image=image,
        command_line=command_line,
        current_directory=_link(base / "cwd"),
        uid=uid,
        user=user_name(uid) if uid is not None else None,
        parent_pid=ppid,
        start_ticks=start,
        comm=comm,
        complete=None not in (stat, image, command_line, uid),
    )
