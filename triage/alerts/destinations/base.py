"""The sender contract and the factory from destination config to sender."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.safe_yaml import ContentError, read_content
from triage.alerts.config import (
    EmailDest,
    KafkaDest,
    SlackDest,
    SyslogDest,
    TeamsDest,
    WebhookDest,
)
from triage.alerts.render import Notification


class PermanentError(RuntimeError):
    """Retrying will not help (a 4xx answer, a missing secret): dead-letter at once."""


class Sender(ABC):
    @abstractmethod
    def send(self, n: Notification, delivery_id: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional
        pass


@dataclass(frozen=True)
class SenderContext:
    """What senders need from the process: send timeout, Kafka client options, the
    product version for OCSF, and where secrets named by the routes file live."""

    timeout_s: float = 10.0
    kafka_config: dict[str, Any] = field(default_factory=dict)
    product_version: str = "1"
    environ: dict[str, str] | None = None


#: A secret file (a token, a password, an HMAC key) is small; anything larger is refused.
MAX_SECRET_BYTES = 64 * 1024


def read_secret(env: str | None, file: Path | None, ctx: SenderContext, what: str) -> str | None:
    """A secret from the environment variable or file the routes file names."""
    environ = ctx.environ if ctx.environ is not None else dict(os.environ)
    if env:
        value = environ.get(env)
        if not value:
            raise PermanentError(f"{what}: environment variable {env} is not set")
        return value
    if file:
        try:  # bounded: a regular file of at most MAX_SECRET_BYTES, never a FIFO
            return read_content(file, MAX_SECRET_BYTES).decode("utf-8").strip()
        except (ContentError, UnicodeDecodeError) as exc:
            raise PermanentError(f"{what}: cannot read {file}: {exc}") from None
    return None


def build_sender(name: str, dest: Any, ctx: SenderContext) -> Sender:
    timeout = dest.timeout_s or ctx.timeout_s
    if isinstance(dest, WebhookDest | SlackDest | TeamsDest):
        from triage.alerts.destinations.http import HttpSender

        return HttpSender(name, dest, timeout, ctx)
    if isinstance(dest, EmailDest):
        from triage.alerts.destinations.email import EmailSender

        return EmailSender(name, dest, timeout, ctx)
    if isinstance(dest, SyslogDest):
        from triage.alerts.destinations.syslog import SyslogSender

        return SyslogSender(dest, timeout, ctx)
    if isinstance(dest, KafkaDest):
        from triage.alerts.destinations.kafka import KafkaSender

        return KafkaSender(dest, timeout, ctx)
    raise PermanentError(f"{name}: unknown destination type {type(dest).__name__}")
