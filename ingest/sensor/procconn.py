"""Process events from the kernel's process-events connector (netlink ``NETLINK_CONNECTOR``,
``CN_IDX_PROC``): fork, exec, uid change and exit, pushed by the kernel as they happen.

Needs ``CAP_NET_ADMIN`` (root). The kernel tells only *which* pid exec'd; what it ran
comes from procfs (``ingest.sensor.procfs``) right after, which a process that exits
within microseconds can beat: the collector then reports what it could read and says so.
A full socket buffer makes the kernel drop messages (``ENOBUFS`` on the next read): the
collector counts that as lost events, never silently.

``parse_messages`` is pure (bytes in, events out) and unit-tested without a kernel.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_PROC_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns

#: proc_event.what values (linux/cn_proc.h) this sensor uses.
FORK, EXEC, UID, EXIT = 0x1, 0x2, 0x4, 0x80000000


@dataclass(frozen=True)
class ProcEvent:
    """One kernel process event: ``kind`` is fork, exec, uid or exit."""

    kind: str
    pid: int
    tgid: int
    timestamp_ns: int
    parent_pid: int | None = None  # fork: the parent; exit: the parent on newer kernels
    parent_tgid: int | None = None
    exit_code: int | None = None
    ruid: int | None = None
    euid: int | None = None


def parse_messages(data: bytes) -> Iterator[ProcEvent]:
    """The process events in one datagram read from the connector socket (several netlink
    messages may share it; a truncated one ends the datagram, never raises)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, offset)[0]
        if length < _NLMSGHDR.size or offset + length > len(data):
            return
        event = _parse_one(data, offset + _NLMSGHDR.size, offset + length)
        if event is not None:
            yield event
        offset += (length + 3) & ~3  # NLMSG_ALIGN


def _parse_one(data: bytes, start: int, end: int) -> ProcEvent | None:
    if start + _CN_MSG.size + _PROC_EVENT.size > end:
        return None
    idx, val, _, _, _, _ = _CN_MSG.unpack_from(data, start)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        return None
    body = start + _CN_MSG.size
    what, _, ts = _PROC_EVENT.unpack_from(data, body)
    at = body + _PROC_EVENT.size

    def ints(count: int) -> tuple[int, ...] | None:
        if at + 4 * count > end:
            return None
        return struct.unpack_from(f"={count}I", data, at)

    if what == EXEC and (v := ints(2)):
        return ProcEvent("exec", v[0], v[1], ts)
    if what == FORK and (v := ints(4)):
        return ProcEvent("fork", v[2], v[3], ts, parent_pid=v[0], parent_tgid=v[1])
    if what == UID and (v := ints(4)):
        return ProcEvent("uid", v[0], v[1], ts, ruid=v[2], euid=v[3])
    if what == EXIT and (v := ints(4)):
        parent = ints(6)
        return ProcEvent(
            "exit",
            v[0],
            v[1],
            ts,
            exit_code=v[2],
            parent_pid=parent[4] if parent else None,
            parent_tgid=parent[5] if parent else None,
        )
    return None


def listen_message(op: int = PROC_CN_MCAST_LISTEN, port_id: int = 0) -> bytes:
    """The netlink datagram that subscribes to (or leaves) the process events."""
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, port_id) + cn


class ProcConnector:
    """The subscribed socket. ``read`` waits at most ``timeout_s`` and never blocks longer;
    ``lost`` counts the kernel's ``ENOBUFS`` overruns (events it dropped for us)."""

    def __init__(self, receive_buffer: int = 8 << 20) -> None:
        self.lost_overruns = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.bind((0, CN_IDX_PROC))  # port id 0: the kernel assigns one
            self.sock.send(listen_message(PROC_CN_MCAST_LISTEN, self.sock.getsockname()[0]))
        except OSError:
            self.sock.close()
            raise

    def read(self, timeout_s: float) -> list[ProcEvent]:
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            return []
        try:
            data = self.sock.recv(1 << 16)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.lost_overruns += 1
                return []
            raise
        return list(parse_messages(data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(listen_message(PROC_CN_MCAST_IGNORE, self.sock.getsockname()[0]))
        self.sock.close()


def available() -> str | None:
    """None when this host lets us subscribe, else why not (reported in heartbeats)."""
    if not hasattr(socket, "AF_NETLINK"):
        return "no netlink on this platform"
    try:
        ProcConnector(receive_buffer=1 << 16).close()
    except PermissionError:
        return f"process-events connector needs CAP_NET_ADMIN (running as uid {os.getuid()})"
    except OSError as exc:
        return f"process-events connector unavailable: {exc.strerror or exc}"
    return None
