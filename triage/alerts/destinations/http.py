"""Webhook, Slack and Teams destinations over HTTP(S).

The generic webhook signs ``<timestamp>.<body>`` with HMAC-SHA256: headers
``X-Sigstream-Timestamp`` (Unix seconds) and ``X-Sigstream-Signature: v1=<hex>``. A
receiver recomputes it and refuses timestamps more than 5 minutes old, so a captured
request cannot be replayed later; ``X-Sigstream-Delivery`` (also ``Idempotency-Key``) is
the same for a repeated delivery. :func:`verify` is the receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from triage.alerts.config import SlackDest, TeamsDest, WebhookDest
from triage.alerts.destinations.base import PermanentError, Sender, SenderContext, read_secret
from triage.alerts.render import (
    Notification,
    slack_payload,
    teams_adaptive,
    teams_messagecard,
    webhook_body,
)

SIGNATURE_HEADER = "X-Sigstream-Signature"
TIMESTAMP_HEADER = "X-Sigstream-Timestamp"
DELIVERY_HEADER = "X-Sigstream-Delivery"
MAX_SKEW_S = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, headers: Any, body: bytes, now: float | None = None, max_skew_s: float = MAX_SKEW_S
) -> bool:
    """The receiver's check: a fresh timestamp and a matching signature (constant time)."""
    ts = headers.get(TIMESTAMP_HEADER) or ""
    given = headers.get(SIGNATURE_HEADER) or ""
    try:
        age = abs((now if now is not None else time.time()) - int(ts))
    except ValueError:
        return False
    if age > max_skew_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), given)


class HttpSender(Sender):
    def __init__(
        self,
        name: str,
        dest: WebhookDest | SlackDest | TeamsDest,
        timeout: float,
        ctx: SenderContext,
    ) -> None:
        self.name, self.dest = name, dest
        self.secret = (
            read_secret(dest.secret_env, dest.secret_file, ctx, name)
            if isinstance(dest, WebhookDest)
            else None
        )
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)

    def payload(self, n: Notification) -> dict[str, Any]:
        if isinstance(self.dest, SlackDest):
            return slack_payload(n)
        if isinstance(self.dest, TeamsDest):
            return teams_messagecard(n) if self.dest.format == "messagecard" else teams_adaptive(n)
        return webhook_body(n)

    def send(self, n: Notification, delivery_id: str) -> None:
        body = json.dumps(self.payload(n), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: delivery_id,
            "Idempotency-Key": delivery_id,
        }
        if isinstance(self.dest, WebhookDest):
            headers.update(self.dest.headers)
            if self.secret:
                ts = str(int(time.time()))
                headers[TIMESTAMP_HEADER] = ts
                headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        with self.client.stream("POST", self.dest.url, content=body, headers=headers) as resp:
            if resp.status_code < 300:
                return
            # The start of the receiver's answer is enough for the reason: never read a
            # whole (possibly huge) error body.
            head = next(resp.iter_bytes(1024), b"")
        reason = f"HTTP {resp.status_code}: {head[:200].decode('utf-8', 'replace')}"
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429):
            raise PermanentError(reason)
        raise RuntimeError(reason)

    def close(self) -> None:
        self.client.close()
