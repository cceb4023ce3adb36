"""The one hardened HTTP server setup of the gateway and the triage API.

uvicorn has a keep-alive timeout but no header-read deadline and no hard connection cap:
a client dribbling its headers (slowloris) was held open indefinitely, and 120 such
clients were all still open after 20 s. :func:`guarded_protocol` subclasses uvicorn's h11
protocol with:

* a connection cap: one connection past ``max_connections`` is answered 503 (with the
  reason) and closed before anything is parsed;
* a header deadline: a request line and headers must arrive within ``header_timeout_s`` of
  the connection's start or of the previous answer, else 408 and close; a connection that
  sent nothing is closed without an unasked answer;
* a body deadline: from the end of the headers to the end of the body,
  ``body_timeout_s``, else 408 and close (the hard stop under any route's own timeout);
* never a cut while the application holds a complete request: a slow answer is the app's
  business, not the client's fault.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "TlsFiles", "free_port", "guarded_protocol", "uvicorn_config"]


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-server bounds; each server maps its settings onto these."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 75.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 16 * 1024  # h11's cap on one incomplete event (the headers)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def raw_response(status: int, phrase: str, reason: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON reason, written straight to the socket."""
    body = json.dumps({"detail": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(limits: ConnectionLimits, name: str = "GuardedH11Protocol") -> type:
    """uvicorn's h11 protocol bound to ``limits`` (uvicorn instantiates the class given)."""
    busy = raw_response(
        503, "Service Unavailable", f"too many connections (at most {limits.max_connections})"
    )
    headers_late = raw_response(
        408, "Request Timeout", f"request headers not received within {limits.header_timeout_s:g} s"
    )
    body_late = raw_response(
        408, "Request Timeout", f"request body not received within {limits.body_timeout_s:g} s"
    )

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False
        _phase = "headers"  # headers -> body -> app (the app holds a complete request)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.server_state.connections) >= limits.max_connections:
                self._refused = True
                self.transport = transport
                transport.write(busy)
                transport.close()
                return
            super().connection_made(transport)
            self._arm(limits.header_timeout_s)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._phase == "headers" and self._deadline is None:  # a new request starts
                self._arm(limits.header_timeout_s)
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._phase = "headers"
            if self.transport.is_closing():
                self._disarm()
            elif self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
                self._arm(limits.header_timeout_s)  # the next request's headers are due
            else:
                self._track()  # a pipelined request is already under way

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if not self._refused:
                super().connection_lost(exc)

        def _track(self) -> None:
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                if self._phase != "body":
                    self._phase = "body"
                    self._arm(limits.body_timeout_s)
            elif state is not h11.IDLE:  # request complete: the app has it
                self._phase = "app"
                self._disarm()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self._phase == "app":
                return
            answering = self.cycle is not None and not self.cycle.response_complete
            if answering and self.cycle.response_started:  # type: ignore[union-attr]
                self.transport.close()  # mid-answer: nothing more can be said
                return
            if self._phase == "body":
                self.transport.write(body_late)
            elif self.conn.trailing_data[0]:  # part of a request came: say why
                self.transport.write(headers_late)
            self.transport.close()  # an idle connection gets no unasked answer

    GuardedH11Protocol.__name__ = GuardedH11Protocol.__qualname__ = name
    return GuardedH11Protocol


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    limits: ConnectionLimits | None = None,
    tls: TlsFiles | None = None,
    log_level: str = "info",
    lifespan: str = "auto",
    name: str = "GuardedH11Protocol",
) -> uvicorn.Config:
    """The uvicorn configuration both servers run (and their tests run the same)."""
    lim = limits or ConnectionLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(lim, name),
        ws="none",
        timeout_keep_alive=int(max(1, lim.keep_alive_s)),
        h11_max_incomplete_event_size=lim.max_header_bytes,
        backlog=lim.max_connections,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        lifespan=lifespan,  # type: ignore[arg-type]
    )
