"""E-mail over SMTP with STARTTLS (certificate checked against ``ca_file`` or the
system's CAs) and optional authentication."""

from __future__ import annotations

import smtplib
import ssl

from triage.alerts.config import EmailDest
from triage.alerts.destinations.base import PermanentError, Sender, SenderContext, read_secret
from triage.alerts.render import Notification, email_message


class EmailSender(Sender):
    def __init__(self, name: str, dest: EmailDest, timeout: float, ctx: SenderContext) -> None:
        self.dest, self.timeout = dest, timeout
        self.password = read_secret(dest.password_env, dest.password_file, ctx, name)
        if dest.username and not self.password:
            raise PermanentError(f"{name}: username without password_env or password_file")
        self.tls = ssl.create_default_context(cafile=str(dest.ca_file) if dest.ca_file else None)

    def send(self, n: Notification, delivery_id: str) -> None:
        msg = email_message(n, self.dest.sender, self.dest.to, delivery_id)
        with smtplib.SMTP(self.dest.host, self.dest.port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            if self.dest.starttls:
                smtp.starttls(context=self.tls)
                smtp.ehlo()
            if self.dest.username:
                try:
                    smtp.login(self.dest.username, self.password or "")
                except smtplib.SMTPAuthenticationError as exc:
                    raise PermanentError(f"SMTP authentication refused: {exc.smtp_code}") from None
            refused = smtp.send_message(msg)
            if refused:
                raise RuntimeError(f"recipients refused: {sorted(refused)}")
