"""Syslog over TCP (RFC 5425 / RFC 6587): framing and header parsing. Pure, no I/O.

Framing, decided per message from its first byte as rsyslog and syslog-ng do: a digit
starts octet-counting (``MSG-LEN SP SYSLOG-MSG``), anything else is newline-delimited
(non-transparent framing; a trailing CR is dropped). A frame over ``max_message`` bytes is
kept as its first ``max_message`` bytes and judged ``message_too_large``; the rest is
skipped without being buffered. A length prefix that is not a number (or over 10 digits)
means the stream is lost: ``FramingError``, the connection is closed.

Headers: RFC 5424 (``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG``) strictly, field
lengths and characters as the RFC says; else RFC 3164 (``<PRI>Mmm dd hh:mm:ss HOST
TAG: MSG``). A message that is neither is ``syslog_invalid``. The MSG (a leading UTF-8
BOM dropped) that is a JSON object goes through the same layouts normalization as the
HTTP endpoints; a plain-text MSG is a Linux log entry (``linux_log``,
``ingest.adapters.linux_syslog``).

The gateway's credential travels in RFC 5424 structured data:
``[sigstream@32473 token="sst_..."]`` (``token_of``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Private enterprise number used for our SD-ID (``sigstream@32473``; 32473 is the
#: IANA example number of RFC 5612, as deployments without their own PEN use).
SD_ID = "sigstream@32473"
MAX_LENGTH_DIGITS = 10


class FramingError(ValueError):
    """The byte stream cannot be split into messages any more (bad length prefix)."""


@dataclass(frozen=True)
class Frame:
    data: bytes  # the message, at most max_message bytes
    size: int  # its size on the wire (> len(data) when truncated)

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


#: ``Framer._next`` made progress without a message (a skipped blank line or tail): call again.
_AGAIN = Frame(b"", -1)


@dataclass
class Framer:
    """Splits a TCP stream into syslog messages; holds at most ``max_message`` + 11 bytes."""

    max_message: int
    _buf: bytearray = field(default_factory=bytearray)
    _skip: int = 0  # octet-counted bytes still to discard (over-long frame)
    _skip_line: bool = False  # discarding the rest of an over-long line
    _pending: Frame | None = None  # an over-long frame, returned once its tail is skipped

    def feed(self, chunk: bytes) -> Iterator[Frame]:
        self._buf += chunk
        while True:
            frame = self._next()
            if frame is None:
                return
            if frame is not _AGAIN:
                yield frame

    def _next(self) -> Frame | None:
        buf = self._buf
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
            if self._skip:
                return None
            frame, self._pending = self._pending, None
            return frame
        if self._skip_line:
            pending = self._pending
            assert pending is not None
            nl = buf.find(b"\n")
            if nl < 0:
                self._pending = Frame(pending.data, pending.size + len(buf))
                buf.clear()
                return None
            del buf[: nl + 1]
            self._skip_line, self._pending = False, None
            return Frame(pending.data, pending.size + nl)
        if not buf:
            return None
        if 0x31 <= buf[0] <= 0x39:  # octet counting: MSG-LEN = NONZERO-DIGIT *DIGIT
            space = buf.find(b" ", 0, MAX_LENGTH_DIGITS + 1)
            if space < 0:
                if len(buf) > MAX_LENGTH_DIGITS or not buf.isdigit():
                    raise FramingError(f"bad octet count {bytes(buf[:12])!r}")
                return None
            digits = bytes(buf[:space])
            if not digits.isdigit():
                raise FramingError(f"bad octet count {digits[:12]!r}")
            length = int(digits)
            if length <= self.max_message:
                if len(buf) < space + 1 + length:
                    return None
                data = bytes(buf[space + 1 : space + 1 + length])
                del buf[: space + 1 + length]
                return Frame(data, length)
            if len(buf) < space + 1 + self.max_message:
                return None
            head = bytes(buf[space + 1 : space + 1 + self.max_message])
            del buf[: space + 1 + self.max_message]
            self._skip = length - self.max_message
            self._pending = Frame(head, length)
            return _AGAIN
        nl = buf.find(b"\n", 0, self.max_message + 2)
        if nl < 0:
            if len(buf) > self.max_message + 1:  # + 1: a CR before the LF is not counted
                self._pending = Frame(bytes(buf[: self.max_message]), self.max_message)
                self._skip_line = True
                del buf[: self.max_message]
                return _AGAIN
            return None
        line = bytes(buf[:nl])
        del buf[: nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:  # a blank line (or the LF after an octet-counted frame): no message
            return _AGAIN
        if len(line) > self.max_message:
            return Frame(line[: self.max_message], len(line))
        return Frame(line, len(line))

    @property
    def buffered(self) -> int:
        return len(self._buf)


# -- headers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A parsed syslog message: header fields and the MSG bytes."""

    rfc: int  # 5424 or 3164
    facility: int
    severity: int
    timestamp: str | None
    hostname: str | None
    app_name: str | None
    structured_data: dict[str, dict[str, str]]
    msg: bytes
    procid: str | None = None  # RFC 5424 PROCID, or RFC 3164's TAG[pid]


class SyslogError(ValueError):
    reason = "syslog_invalid"


_PRI = re.compile(rb"<(0|[1-9][0-9]{0,2})>")
_TS5424 = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_PRINTUSASCII = re.compile(rb"[\x21-\x7e]+")
_SD_NAME = re.compile(rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}")  # not = ] " or SP
_TS3164 = re.compile(
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ( [1-9]|[12][0-9]|3[01]) "
    rb"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] "
)
_TAG = re.compile(rb"([A-Za-z0-9_./-]{1,48})(\[[^\]\s]{1,32}\])?: ?")
_HEADER_LIMITS = (255, 48, 128, 32)  # HOSTNAME, APP-NAME, PROCID, MSGID (RFC 5424 6.2)
_BOM = b"\xef\xbb\xbf"


def _pri(data: bytes) -> tuple[int, int, int]:
    match = _PRI.match(data)
    if not match or int(match.group(1)) > 191:
        raise SyslogError("no valid <PRI> at the start")
    value = int(match.group(1))
    return value >> 3, value & 7, match.end()


def _field(data: bytes, pos: int, limit: int, name: str) -> tuple[str | None, int]:
    match = _PRINTUSASCII.match(data, pos)
    if not match or len(match.group()) > limit:
        raise SyslogError(f"RFC 5424 {name} missing or over {limit} characters")
    end = match.end()
    if end < len(data) and data[end] != 0x20:
        raise SyslogError(f"RFC 5424 {name} not followed by a space")
    value = match.group().decode("ascii")
    return (None if value == "-" else value), end + 1


def _structured_data(data: bytes, pos: int) -> tuple[dict[str, dict[str, str]], int]:
    """SD = NILVALUE / 1*SD-ELEMENT; returns the elements and the position after SD."""
    if data[pos : pos + 1] == b"-":
        return {}, pos + 1
    elements: dict[str, dict[str, str]] = {}
    while data[pos : pos + 1] == b"[":
        pos += 1
        name = _SD_NAME.match(data, pos)
        if not name:
            raise SyslogError("bad SD-ID")
        sd_id = name.group()
        pos = name.end()
        params: dict[str, str] = {}
        while data[pos : pos + 1] == b" ":
            pos += 1
            pmatch = _SD_NAME.match(data, pos)
            if not pmatch or data[pmatch.end() : pmatch.end() + 2] != b'="':
                raise SyslogError("bad SD-PARAM name")
            pname = pmatch.group()
            pos = pmatch.end() + 2
            value = bytearray()
            while True:
                if pos >= len(data):
                    raise SyslogError("unterminated SD-PARAM value")
                byte = data[pos]
                if byte == 0x5C and pos + 1 < len(data) and data[pos + 1] in b'"\\]':
                    value.append(data[pos + 1])
                    pos += 2
                    continue
                if byte == 0x22:
                    pos += 1
                    break
                if byte == 0x5D:
                    raise SyslogError("unescaped ] in an SD-PARAM value")
                value.append(byte)
                pos += 1
            try:
                params[pname.decode("ascii")] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise SyslogError("SD-PARAM not UTF-8") from None
        if data[pos : pos + 1] != b"]":
            raise SyslogError("SD-ELEMENT not closed")
        pos += 1
        elements.setdefault(sd_id.decode("ascii"), params)
    if not elements:
        raise SyslogError("STRUCTURED-DATA missing")
    return elements, pos


def parse_5424(data: bytes) -> Message:
    facility, severity, pos = _pri(data)
    if data[pos : pos + 2] != b"1 ":
        raise SyslogError("not RFC 5424 (VERSION 1)")
    pos += 2
    ts_match = _TS5424.match(data, pos)
    if data[pos : pos + 2] == b"- ":
        timestamp, pos = None, pos + 2
    elif ts_match and data[ts_match.end() : ts_match.end() + 1] == b" ":
        timestamp, pos = ts_match.group().decode(), ts_match.end() + 1
    else:
        raise SyslogError("RFC 5424 TIMESTAMP invalid")
    hostname, pos = _field(data, pos, _HEADER_LIMITS[0], "HOSTNAME")
    app_name, pos = _field(data, pos, _HEADER_LIMITS[1], "APP-NAME")
    procid, pos = _field(data, pos, _HEADER_LIMITS[2], "PROCID")
    _msgid, pos = _field(data, pos, _HEADER_LIMITS[3], "MSGID")
    if pos > len(data):
        raise SyslogError("RFC 5424 STRUCTURED-DATA missing")
    sd, pos = _structured_data(data, pos)
    if pos < len(data):
        if data[pos] != 0x20:
            raise SyslogError("no space between STRUCTURED-DATA and MSG")
        pos += 1
    msg = data[pos:]
    if msg.startswith(_BOM):
        msg = msg[len(_BOM) :]
    return Message(5424, facility, severity, timestamp, hostname, app_name, sd, msg, procid)


def parse_3164(data: bytes) -> Message:
    facility, severity, pos = _pri(data)
    ts_match = _TS3164.match(data, pos)
    if not ts_match:
        raise SyslogError("neither RFC 5424 nor an RFC 3164 TIMESTAMP (Mmm dd hh:mm:ss)")
    pos = ts_match.end()
    host = _PRINTUSASCII.match(data, pos)
    if not host or len(host.group()) > 255 or data[host.end() : host.end() + 1] != b" ":
        raise SyslogError("RFC 3164 HOSTNAME missing")
    pos = host.end() + 1
    tag = _TAG.match(data, pos)
    app_name = procid = None
    if tag:
        app_name = tag.group(1).decode("ascii")
        procid = tag.group(2)[1:-1].decode("ascii") if tag.group(2) else None
        pos = tag.end()
    timestamp = ts_match.group().decode().strip()
    return Message(
        3164,
        facility,
        severity,
        timestamp,
        host.group().decode(),
        app_name,
        {},
        data[pos:],
        procid,
    )


def parse_message(data: bytes) -> Message:
    """RFC 5424 when the VERSION is there, else RFC 3164; SyslogError with the reason."""
    _facility, _severity, pos = _pri(data)
    if data[pos : pos + 2] == b"1 ":
        return parse_5424(data)
    return parse_3164(data)


def token_of(message: Message) -> str | None:
    params: dict[str, Any] = message.structured_data.get(SD_ID) or {}
    token = params.get("token")
    return token if isinstance(token, str) and token else None
