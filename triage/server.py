"""Serve the triage API with uvicorn, bounded per connection (slowloris) and optionally TLS.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but nothing bounds the
time a client takes to *send* a request: one byte every few seconds of an endless header
keeps a connection (and a file descriptor) forever, and ``limit_concurrency`` only answers
503 once a request's headers are complete, so such connections are never counted out.
Measured before: 300 connections trickling headers were all still open after 20 s.

``guarded_h11`` is uvicorn's h11 protocol with two additions:

* a **connection cap**: past ``max_connections`` open connections a new one is answered
  503 and closed at once, before any byte of it is parsed;
* a **request deadline**: from the connection's start, and again from the end of each
  response, the client has ``header_timeout_s`` to complete its request line and headers
  (and any body the app is not reading). Past it: 408 (if part of a request came) and
  close. While the app handles a
  request the deadline does not apply; the body the app reads is bounded by
  ``triage.guard`` (``body_timeout_s``).

TLS handshakes are bounded by asyncio's own handshake timeout (60 s).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sigstream.settings import Settings


@dataclass(frozen=True)
class ServerLimits:
    """Per-connection bounds (``Settings.api_*``)."""

    max_connections: int = 128
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0

    @classmethod
    def from_settings(cls, s: Settings) -> ServerLimits:
        return cls(s.api_max_connections, s.api_header_timeout_s, s.api_keep_alive_s)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def _raw_response(status: int, phrase: str, reason: str) -> bytes:
    body = json.dumps({"detail": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_h11(limits: ServerLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a connection cap and a request deadline (module doc)."""
    busy = _raw_response(
        503, "Service Unavailable", f"too many connections (at most {limits.max_connections})"
    )
    late = _raw_response(
        408,
        "Request Timeout",
        f"request headers not received within {limits.header_timeout_s:g} s",
    )

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(busy)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # the app has the request; the response re-arms the deadline
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self.transport.write(late)  # part of a request came: say why
            self.transport.close()

    return GuardedH11Protocol


def uvicorn_config(
    app: object,
    host: str,
    port: int,
    limits: ServerLimits | None = None,
    tls: TlsFiles | None = None,
    log_level: str = "info",
) -> uvicorn.Config:
    """The uvicorn configuration ``findings serve`` runs (tests run the same)."""
    limits = limits or ServerLimits()
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        http=guarded_h11(limits),
        timeout_keep_alive=int(max(1, limits.keep_alive_s)),
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        lifespan="auto",
    )
