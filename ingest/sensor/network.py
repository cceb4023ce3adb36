"""Outbound TCP connections, by polling ``/proc/net/tcp`` and ``/proc/net/tcp6``.

Why polling procfs and not sock_diag: both list sockets without their process, so either
way the owner is found by scanning ``/proc/*/fd`` for ``socket:[inode]``; the tables are
small text files, readable without privileges, and the parsing is pure and testable. The
cost: one read of each table per ``interval_s`` (O(sockets on the host)), plus one scan of
the fd links of every process, only in polls that found a new connection (O(open fds),
a few ms on a server). What it cannot see: a connection opened and closed between two
polls. A connection counts as outbound when its local port is not a listening port
(``Initiated: true``); loopback connections are reported too (rules filter them).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.sensor import procfs
from ingest.sensor.files import resolve
from ingest.sensor.mapping import ConnectionObservation, network_connection

log = logging.getLogger(__name__)

ESTABLISHED, SYN_SENT, LISTEN = "01", "02", "0A"

Emit = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class TcpSocket:
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str
    uid: int
    inode: int
    ipv6: bool


def decode_address(text: str) -> tuple[str, int]:
    """``0100007F:0016`` -> ("127.0.0.1", 22); IPv6 as the kernel prints it (four 32-bit
    words, each in host byte order)."""
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    if len(packed) == 4:
        ip = socket.inet_ntop(socket.AF_INET, packed)
    else:
        addr = ipaddress.IPv6Address(packed)
        ip = str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    return ip, int(port_hex, 16)


def parse_table(text: str, ipv6: bool) -> list[TcpSocket]:
    """The rows of one ``/proc/net/tcp{,6}`` table (malformed rows are skipped)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            lip, lport = decode_address(f[1])
            rip, rport = decode_address(f[2])
            out.append(TcpSocket(lip, lport, rip, rport, f[3].upper(), int(f[7]), int(f[9]), ipv6))
        except (ValueError, struct.error):
            continue
    return out


def outbound(sockets: Iterable[TcpSocket]) -> list[TcpSocket]:
    """Connecting or connected sockets whose local port nobody listens on."""
    rows = list(sockets)
    listening = {s.local_port for s in rows if s.state == LISTEN}
    return [
        s
        for s in rows
        if s.state in (ESTABLISHED, SYN_SENT) and s.inode and s.local_port not in listening
    ]


def socket_owners(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """inode -> pid, by the fd links of every process (stops once all are found)."""
    found: dict[int, int] = {}
    wanted = {f"socket:[{i}]": i for i in inodes}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"{entry.path}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target in wanted:
                    found[wanted[target]] = int(entry.name)
        if len(found) == len(wanted):
            break
    return found


class NetworkCollector:
    """``network`` source: polls the TCP tables every ``interval_s``."""

    name = "network"

    def __init__(
        self,
        sensor_id: str,
        host: str,
        interval_s: float = 1.0,
        proc: Path = Path("/proc"),
        lookup: Callable[[int], procfs.ProcessInfo | None] | None = None,
    ) -> None:
        self.lookup = lookup
        self.sensor_id, self.host, self.proc = sensor_id, host, proc
        self.interval_s = interval_s
        self.boot = procfs.boot_id(proc)
        self.own_pid = os.getpid()
        self.error: str | None = None
        self.seen: dict[int, float] = {}  # inode -> last seen (forgotten when gone)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> str:
        if self.error:
            return f"unavailable: {self.error}"
        if self._stop.is_set():
            return "stopped"
        if self._thread is None or not self._thread.is_alive():
            return "unavailable: not running"
        return "ok"

    def start(self, emit: Emit) -> None:
        if not (self.proc / "net/tcp").exists():
            self.error = f"{self.proc}/net/tcp not readable"
            return
        self.poll(emit, report=False)  # connections open at start are not new
        self._thread = threading.Thread(target=self._run, args=(emit,), name="sensor-network")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, emit: Emit) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll(emit)
            except OSError as exc:
                self.error = f"reading {self.proc}/net/tcp failed: {exc}"
                return

    def poll(self, emit: Emit, report: bool = True) -> int:
        rows: list[TcpSocket] = []
        for name, v6 in (("tcp", False), ("tcp6", True)):
            try:
                rows += parse_table((self.proc / "net" / name).read_text(), v6)
            except FileNotFoundError:
                continue
        current = {s.inode: s for s in outbound(rows)}
        new = [s for i, s in current.items() if i not in self.seen]
        now = time.time()
        self.seen = {i: now for i in current}
        if not report or not new:
            return 0
        owners = socket_owners({s.inode for s in new}, self.proc)
        at = time.time_ns()
        sent = 0
        for s in new:
            pid = owners.get(s.inode)
            if pid == self.own_pid:
                continue
            process = resolve(pid, self.proc, self.boot, self.lookup)
            obs = ConnectionObservation(
                "tcp",
                s.local_ip,
                s.local_port,
                s.remote_ip,
                s.remote_port,
                s.ipv6,
                s.inode,
                s.uid,
                at,
                process,
            )
            emit(network_connection(self.sensor_id, self.host, obs))
            sent += 1
        return sent

    def reconfigure(self, interval_s: float) -> None:
        self.interval_s = interval_s

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
