"""Run the gateway: build it from settings, serve it with uvicorn (TLS unless told not to).

``GatewayServer`` runs uvicorn on a thread and is what tests and the benchmark use to get a
real server on a free port; ``sigstream gateway serve`` runs the same thing in the
foreground.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.sink import KafkaSink, recent_ids


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def kafka_app(
    credentials: Path,
    bootstrap: str,
    events_topic: str,
    dlq_topic: str,
    options: GatewayOptions | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The gateway app writing to Kafka, its de-duplication window seeded from the topic.

    ``client_config``: librdkafka security properties (``connections.confluent_kafka_config``).
    """
    opts = options or GatewayOptions()
    store = CredentialStore(credentials)
    store.load()  # a bad credential file refuses the start (CredentialFileError, one line)
    sink = KafkaSink(bootstrap, events_topic, dlq_topic, client_config=client_config)

    def seed() -> list[tuple[str, str, str]]:
        if opts.restore_per_partition <= 0:
            return []
        return recent_ids(
            bootstrap, events_topic, opts.restore_per_partition, client_config=client_config
        )

    return create_app(store, sink, opts, seed_ids=seed)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-server connection limits (uvicorn has a keep-alive timeout but no header-read
    timeout and no hard connection cap: slow clients were held open indefinitely).

    ``max_connections``: open connections at once; one more is answered 503 and closed at
    once. ``header_timeout_s``: from a connection's start (or the end of its previous
    answer) to the end of the next request's headers; a client that dribbles headers
    (slowloris) is answered 408 and closed. ``body_timeout_s``: from the end of the
    headers to the end of the body (the app answers 408 itself; this is the hard stop for
    any route). ``keep_alive_s``: idle time between requests. ``max_header_bytes``: h11's
    cap on one incomplete event (headers)."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 75.0
    keep_alive_s: int = 5
    max_header_bytes: int = 16 * 1024


_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a connection cap and header/body read deadlines."""

    limits: ConnectionLimits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.server_state.connections) >= self.limits.max_connections:
            transport.write(_503)
            transport.close()
            self.transport = transport
            self._refused = True
            return
        self._refused = False
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s)

    def _arm(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):  # headers or body still due
            if (
                self.cycle is None
                or self.cycle.response_complete
                or not self.cycle.response_started
            ):
                self.transport.write(_408)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        waiting = self.conn.their_state is h11.IDLE
        if waiting and self._deadline is None:  # first bytes of a new request
            self._arm(self.limits.header_timeout_s)
        super().data_received(data)
        self._track()

    def _track(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if getattr(self, "_phase", None) != "body":
                self._phase = "body"
                self._arm(self.limits.body_timeout_s)
        elif state is not h11.IDLE:  # request fully received: the app has it
            self._phase = "done"
            self._disarm()
        else:
            self._phase = "headers"

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._phase = "headers"
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._disarm()  # idle now: uvicorn's keep-alive timer runs; headers re-armed on data
        else:
            self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class bound to ``limits`` (uvicorn instantiates the class it is given)."""
    return type("GatewayH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def uvicorn_config(
    app: FastAPI,
    host: str,
    port: int,
    tls: TlsFiles | None,
    log_level: str = "warning",
    limits: ConnectionLimits | None = None,
) -> uvicorn.Config:
    lim = limits or ConnectionLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        timeout_graceful_shutdown=5,
        lifespan="on",
        http=guarded_protocol(lim),
        ws="none",
        timeout_keep_alive=lim.keep_alive_s,
        h11_max_incomplete_event_size=lim.max_header_bytes,
        backlog=lim.max_connections,
    )


class GatewayServer:
    """uvicorn on a background thread; ``stop()`` then ``start()`` again simulates an outage."""

    def __init__(
        self,
        app_factory: Callable[[], FastAPI],
        host: str,
        port: int,
        tls: TlsFiles | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.limits = limits
        # A factory, not an app: each start is a fresh process-like gateway (new producer,
        # de-duplication window seeded again from Kafka), as after a real restart.
        self.app_factory, self.host, self.port, self.tls = app_factory, host, port, tls
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> GatewayServer:
        # uvicorn installs signal handlers only on the main thread, so none here.
        server = uvicorn.Server(
            uvicorn_config(self.app_factory(), self.host, self.port, self.tls, limits=self.limits)
        )
        thread = threading.Thread(target=server.run, name="gateway-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start on {self.url}")
            time.sleep(0.05)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
