"""Serve the triage API with uvicorn, bounded per connection (slowloris) and optionally TLS.

The server is the one the gateway runs too (``common.http_server``): a connection cap
(503 past it), a header deadline (408 for a client dribbling its request line and headers)
and a hard body deadline. The body the app reads is bounded first by ``triage.guard``
(size cap, ``api_body_timeout_s``); the server's body deadline sits above it as the stop
for anything the guard does not see. Measured before: 300 connections trickling headers
were all still open after 20 s. TLS handshakes are bounded by asyncio's own handshake
timeout (60 s).
"""

from __future__ import annotations

import uvicorn

from common import http_server
from common.http_server import ConnectionLimits, TlsFiles
from common.settings import Settings

__all__ = ["ConnectionLimits", "TlsFiles", "limits_from_settings", "uvicorn_config"]

#: Seconds the server waits past the guard's own body deadline before it cuts a body off.
BODY_GRACE_S = 10.0


def limits_from_settings(s: Settings) -> ConnectionLimits:
    """The connection bounds of ``findings serve`` (``Settings.api_*``)."""
    return ConnectionLimits(
        max_connections=s.api_max_connections,
        header_timeout_s=s.api_header_timeout_s,
        body_timeout_s=s.api_body_timeout_s + BODY_GRACE_S,
        keep_alive_s=s.api_keep_alive_s,
    )


def uvicorn_config(
    app: object,
    host: str,
    port: int,
    limits: ConnectionLimits | None = None,
    tls: TlsFiles | None = None,
    log_level: str = "info",
) -> uvicorn.Config:
    """The uvicorn configuration ``findings serve`` runs (tests run the same)."""
    return http_server.uvicorn_config(
        app, host, port, limits=limits, tls=tls, log_level=log_level, name="TriageH11Protocol"
    )
