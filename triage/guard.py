"""The triage API's front door: a pure ASGI middleware that runs before FastAPI.

FastAPI reads and parses a request body before it resolves the dependencies that check
the API key, so an unauthenticated 150 MB POST cost the server ~450 MB before its 401.
This middleware decides from the headers alone, before any body byte is read:

* ``/api/...`` without a known key: 401 (the body is never read: ``receive`` is not
  called, so no ``100 Continue`` either, and the connection is closed);
* a declared ``Content-Length`` over the cap: 413;
* otherwise a body is read here, counted while it streams (chunked bodies too) and
  refused with 413 past the cap or 408 when it does not arrive in time; the app then gets
  it from memory, at most ``max_body_bytes``.

It also puts the security headers (a strict Content-Security-Policy, frame denial,
nosniff, no referrer) on every response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from triage.auth import KeyStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Scripts, styles, images, fetches: this origin only; no inline script or style, no
#: plugins, no framing, no <base> or form redirection elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


@dataclass(frozen=True)
class GuardLimits:
    """Per-request bounds (``Settings.api_*``)."""

    max_body_bytes: int = 256 * 1024
    body_timeout_s: float = 15.0


def api_key(headers: list[tuple[bytes, bytes]]) -> str:
    """The key a request carries: ``X-API-Key``, else ``Authorization: Bearer``."""
    bearer = ""
    for name, value in headers:
        if name == b"x-api-key" and value:
            return value.decode("latin-1")
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                bearer = token.strip()
    return bearer


def needs_key(path: str) -> bool:
    """Every API route needs a key; the page, its static files and the docs do not."""
    return path == "/api" or path.startswith("/api/")


class RequestGuard:
    """Authenticate from headers, cap and time the body, add security headers."""

    def __init__(self, app: ASGIApp, keys: KeyStore, limits: GuardLimits | None = None) -> None:
        self.app, self.keys, self.limits = app, keys, limits or GuardLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._secure(scope, send)
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        has_body, length = _declared_body(headers)
        if needs_key(scope["path"]) and self.keys.lookup(api_key(headers)) is None:
            await _refuse(send, 401, "missing or unknown API key", has_body)
            return
        if length is not None and length < 0:
            await _refuse(send, 400, "invalid Content-Length", True)
            return
        cap = self.limits.max_body_bytes
        if length is not None and length > cap:
            await _refuse(send, 413, f"request body of {length:,} bytes; at most {cap:,}", True)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(_read_body(receive, cap), self.limits.body_timeout_s)
        except _TooLarge as exc:
            await _refuse(send, 413, f"request body over {cap:,} bytes (read {exc})", True)
            return
        except TimeoutError:
            await _refuse(
                send,
                408,
                f"request body not received within {self.limits.body_timeout_s:g} s",
                True,
            )
            return
        if body is None:  # the client went away
            return
        await self.app(scope, _replay(body, receive), send)

    def _secure(self, scope: Scope, send: Send) -> Send:
        extra = SECURITY_HEADERS + ([HSTS] if scope.get("scheme") == "https" else [])
        api = needs_key(scope["path"])

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {name.lower() for name, _ in message.get("headers") or []}
                added = [(n, v) for n, v in extra if n not in have]
                if api and b"cache-control" not in have:
                    added.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*(message.get("headers") or []), *added]}
            await send(message)

        return wrapped


class _TooLarge(Exception):
    """The body passed the cap while streaming (the message is the bytes read)."""


def _declared_body(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int | None]:
    """(whether a body follows, its Content-Length: None if not given, -1 if invalid)."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.strip().isdigit() else -1
        elif name == b"transfer-encoding":
            chunked = True
    return (chunked or bool(length)), length


async def _read_body(receive: Receive, cap: int) -> bytes | None:
    """The whole body, counted as it arrives; _TooLarge past ``cap``; None on disconnect."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _TooLarge(f"{size:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then waits on the real one (for the
    disconnect a streaming response listens for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, reason: str, close: bool) -> None:
    """A JSON error like FastAPI's (``{"detail": reason}``); ``close`` when an unread body
    may follow, so the server drops the connection instead of reading it."""
    payload = json.dumps({"detail": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sigstream"'))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
