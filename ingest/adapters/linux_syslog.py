"""A plain-text syslog entry (a Linux host's auth.log, sshd, sudo, cron ... lines) as a
``linux_log`` schema event. Pure: the syslog listener parses the header, this decides the
event.

Which Sigma service: the program when Sigma has a service of that name (``sshd``,
``sudo``, ``cron``, ``vsftpd``, ``clamav``, ``guacamole``), else ``auth`` for the
auth/authpriv facilities, else ``syslog``. An entry has one service: an sshd line that
rsyslog also writes to auth.log is an ``sshd`` event (SigmaHQ's ``auth`` rules look for
other programs' lines: sudo, su, pam ...). ``KEY=value`` pairs in the text (sudo's
``USER=root ; COMMAND=...``) become fields in ``extra``.

The event id is a hash of host, time, program, pid and text: a shipper re-sending the same
line (at-least-once after a reconnect) is de-duplicated; the cost is that two identical
lines from one process within one timestamp tick count once (the same findings either way).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest.adapters.windows import stable_event_id

#: Program name (lower case) -> Sigma's Linux service.
SERVICE_BY_PROGRAM: Mapping[str, str] = {
    "sshd": "sshd",
    "sudo": "sudo",
    "cron": "cron",
    "crond": "cron",
    "anacron": "cron",
    "vsftpd": "vsftpd",
    "clamd": "clamav",
    "freshclam": "clamav",
    "clamscan": "clamav",
    "guacd": "guacamole",
    "guacamole": "guacamole",
}
AUTH_FACILITIES = frozenset({4, 10})  # auth, authpriv
MAX_FIELDS = 32
_KEY_VALUE = re.compile(r"\b([A-Z][A-Z0-9_]{0,31})=([^;\]\s][^;\]]*?)\s*(?=;|\]|$)")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}


def service_for(program: str | None, facility: int) -> str:
    known = SERVICE_BY_PROGRAM.get((program or "").lower())
    if known:
        return known
    return "auth" if facility in AUTH_FACILITIES else "syslog"


def key_values(text: str) -> dict[str, str]:
    """``KEY=value`` pairs separated by ``;`` or in ``[...]`` (sudo's formats), at most
    ``MAX_FIELDS``; the first occurrence of a key wins."""
    out: dict[str, str] = {}
    for key, value in _KEY_VALUE.findall(text):
        if len(out) >= MAX_FIELDS:
            break
        out.setdefault(key, value.strip())
    return out


def entry_time(timestamp: str | None, rfc: int, now: datetime) -> datetime:
    """RFC 5424's ISO time; RFC 3164's ``Mmm dd hh:mm:ss`` has no year or zone: UTC, this
    year, or last year when that would put it more than a day in the future (December's
    lines read in January). No timestamp, or an unreadable one: the time it arrived."""
    if not timestamp:
        return now
    try:
        if rfc == 5424:
            return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC)
        month, day, clock = timestamp.split()
        hour, minute, second = (int(x) for x in clock.split(":"))
        when = datetime(now.year, _MONTHS[month], int(day), hour, minute, second, tzinfo=UTC)
        if when > now + timedelta(days=1):
            when = when.replace(year=now.year - 1)
        return when
    except (ValueError, KeyError, OverflowError):
        return now


def entry_payload(
    text: str,
    *,
    hostname: str | None,
    program: str | None,
    procid: str | None,
    facility: int,
    timestamp: str | None,
    rfc: int,
    now: datetime,
    sensor_id: str | None,
    fallback_host: str | None = None,
) -> dict[str, Any]:
    """The schema payload of one text entry (validated by the caller's schema path).
    ``fallback_host``: who the entry is from when its header names no host (a sensor's
    own credential: that sensor; a relay's: nobody, and the schema refuses it)."""
    host = (hostname or "").strip() or fallback_host
    when = entry_time(timestamp, rfc, now)
    origin = f"syslog/{host}/{when.isoformat()}/{program}/{procid}/{text}"
    payload: dict[str, Any] = {
        "event_type": "linux_log",
        "event_id": stable_event_id(origin),
        "event_time": when.isoformat(),
        "logsource": {"product": "linux", "service": service_for(program, facility)},
        "message": text,
        "program": program,
        "pid": procid,
        "extra": key_values(text),
    }
    if host:
        payload["host"] = host
    if sensor_id:
        payload["sensor_id"] = sensor_id
    return payload
