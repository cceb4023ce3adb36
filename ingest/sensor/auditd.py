"""Optional ``auditd`` source: when auditd runs, follow ``/var/log/audit/audit.log`` and send
each record as an ``auditd`` event (auditd's own field names, what SigmaHQ's
``service: auditd`` rules use).

``parse_record`` is pure: ``type=EXECVE msg=audit(1700000000.123:456): argc=2 a0="ls"
a1=2D6C61`` -> its fields, quotes removed and hex-encoded values (auditd writes an
argument with spaces or special characters as hex) decoded; the declared ``Auditd`` fields
stay top level, every other key goes in ``extra``. The follower reads only new lines
(from the end at start), survives rotation (a new inode or a shorter file: read from the
start), and reads at most ``max_lines`` complete lines (1 MiB) per poll (bounded work).
Needs read access to the log (root, or the ``adm``/audit group).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.sensor.mapping import EVENT_ID_NAMESPACE
from schemas.events import Auditd

log = logging.getLogger(__name__)

AUDIT_LOG = Path("/var/log/audit/audit.log")
_HEADER = re.compile(r"type=(?P<type>\S+) msg=audit\((?P<ts>\d+(?:\.\d+)?):(?P<serial>\d+)\):")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\'[^\']*\'|\S+)')
_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")
#: Fields auditd writes hex-encoded when they hold spaces or special characters.
_MAYBE_HEX = re.compile(r"^(a\d+|proctitle|name|cwd|exe|comm|cmd|data)$")
DECLARED = frozenset(Auditd.model_fields) - {"event_type", "logsource", "extra"}

Emit = Callable[[dict[str, Any]], bool]


def _value(key: str, raw: str, execve: bool) -> str:
    if raw[:1] in "\"'" and raw[-1:] == raw[:1]:
        return raw[1:-1]
    # A SYSCALL record's a0..a3 are numbers in hex; only EXECVE arguments are hex text.
    if key[0] == "a" and key[1:].isdigit() and not execve:
        return raw
    if _MAYBE_HEX.match(key) and _HEX.match(raw):
        text = bytes.fromhex(raw).decode("utf-8", "replace")
        return text.replace("\x00", " ").strip() if key == "proctitle" else text
    return raw


def parse_record(line: str) -> tuple[str, float, int, dict[str, str]] | None:
    """(record type, time, serial, fields) of one audit.log line; None when it is not one.
    The ``msg='...'`` of user-space records is flattened into the fields."""
    header = _HEADER.search(line)
    if header is None:
        return None
    body = line[header.end() :]
    execve = header["type"] == "EXECVE"
    fields: dict[str, str] = {}
    for key, raw in _FIELD.findall(body):
        if key == "msg" and raw[:1] == "'":
            for k, r in _FIELD.findall(raw[1:-1]):
                fields.setdefault(k, _value(k, r, execve))
            continue
        fields.setdefault(key, _value(key, raw, execve))
    return header["type"], float(header["ts"]), int(header["serial"]), fields


def to_event(
    sensor_id: str, host: str, record: tuple[str, float, int, dict[str, str]], index: int
) -> dict[str, Any]:
    """A schema ``auditd`` event of one record (``index``: its position among the records
    of the same serial, so each has its own event id)."""
    rtype, ts, serial, fields = record
    top = {k: v for k, v in fields.items() if k in DECLARED and k != "type"}
    extra = {k: v for k, v in fields.items() if k not in DECLARED}
    event: dict[str, Any] = {
        "sensor_id": sensor_id,
        "host": host,
        "event_id": uuid.uuid5(
            EVENT_ID_NAMESPACE, f"{sensor_id}/auditd/{ts}/{serial}/{rtype}/{index}"
        ).hex,
        "event_time": datetime.fromtimestamp(ts, tz=UTC),
        "event_type": "auditd",
        "logsource": {"product": "linux", "service": "auditd"},
        "type": rtype,
        **top,
    }
    if extra:
        event["extra"] = extra
    return event


class AuditdCollector:
    """``auditd`` source: follows the audit log."""

    name = "auditd"

    def __init__(
        self,
        sensor_id: str,
        host: str,
        path: Path = AUDIT_LOG,
        interval_s: float = 0.5,
        max_lines: int = 5000,
    ) -> None:
        self.sensor_id, self.host, self.path = sensor_id, host, path
        self.interval_s, self.max_lines = interval_s, max_lines
        self.error: str | None = None
        self.skipped = 0  # lines that are not audit records
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inode: int | None = None
        self._offset = 0
        self._seen: dict[tuple[float, int, str], int] = {}

    def status(self) -> str:
        if self.error:
            return f"unavailable: {self.error}"
        if self._stop.is_set():
            return "stopped"
        if self._thread is None or not self._thread.is_alive():
            return "unavailable: not running"
        return "ok"

    def start(self, emit: Emit) -> None:
        try:
            st = self.path.stat()
            with self.path.open("rb"):
                pass
        except FileNotFoundError:
            self.error = f"{self.path} not found (auditd not running?)"
            return
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"
            return
        self._inode, self._offset = st.st_ino, st.st_size  # only what comes from now on
        self._thread = threading.Thread(target=self._run, args=(emit,), name="sensor-auditd")
        self._thread.daemon = True
        self._thread.start()

    def _run(self, emit: Emit) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll(emit)
            except OSError as exc:
                log.warning("auditd source: %s", exc)

    def poll(self, emit: Emit) -> int:
        """Send the complete lines written since the last poll (at most ``max_lines``;
        an unfinished last line is read again next time)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0  # rotated, not yet re-created
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._inode, self._offset = st.st_ino, 0  # rotated or truncated: from the start
        if st.st_size == self._offset:
            return 0
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read(1 << 20)
        lines = data.split(b"\n")[:-1][: self.max_lines]  # complete lines only
        self._offset += sum(len(x) + 1 for x in lines)
        sent = 0
        for raw in lines:
            record = parse_record(raw.decode("utf-8", "replace"))
            if record is None:
                self.skipped += 1
                continue
            key = (record[1], record[2], record[0])
            index = self._seen.get(key, 0)
            self._seen[key] = index + 1
            if len(self._seen) > 10_000:
                self._seen.clear()
            emit(to_event(self.sensor_id, self.host, record, index))
            sent += 1
        return sent

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


def available(path: Path = AUDIT_LOG) -> str | None:
    return None if os.access(path, os.R_OK) else f"{path} not readable or absent"
