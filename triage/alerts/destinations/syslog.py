"""Syslog to a SIEM: RFC 5424 messages (structured data with the finding's fields) or
ArcSight CEF as the message, over TCP (RFC 6587 octet counting, one kept connection) or
UDP (one datagram each)."""

from __future__ import annotations

import socket

from triage.alerts.config import SyslogDest
from triage.alerts.destinations.base import Sender, SenderContext
from triage.alerts.render import Notification, cef, syslog_5424

#: RFC 5426: IPv4 datagrams up to 480 bytes are safe everywhere; we keep to a common 8 KiB.
MAX_UDP = 8192


class SyslogSender(Sender):
    def __init__(self, dest: SyslogDest, timeout: float, ctx: SenderContext) -> None:
        self.dest, self.timeout = dest, timeout
        self.version = ctx.product_version
        self.hostname = socket.gethostname()
        self.sock: socket.socket | None = None

    def frame(self, n: Notification) -> bytes:
        body = cef(n, self.version) if self.dest.format == "cef" else None
        return syslog_5424(
            n,
            app_name=self.dest.app_name,
            facility=self.dest.facility,
            hostname=self.hostname,
            msgid="cef" if body is not None else "finding",
            body=body,
        )

    def send(self, n: Notification, delivery_id: str) -> None:
        message = self.frame(n)
        if self.dest.protocol == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(message[:MAX_UDP], (self.dest.host, self.dest.port))
            return
        try:
            if self.sock is None:
                self.sock = socket.create_connection(
                    (self.dest.host, self.dest.port), timeout=self.timeout
                )
            self.sock.sendall(str(len(message)).encode() + b" " + message)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
