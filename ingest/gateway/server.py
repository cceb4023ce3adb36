"""Run the gateway: build it from settings, serve it with uvicorn (TLS unless told not to).

``GatewayServer`` runs uvicorn on a thread and is what tests and the benchmark use to get a
real server on a free port; ``sigstream gateway serve`` runs the same thing in the
foreground.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from common import http_server
from common.http_server import ConnectionLimits, TlsFiles, free_port
from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.sink import KafkaSink, recent_ids

__all__ = ["ConnectionLimits", "GatewayServer", "TlsFiles", "free_port", "kafka_app"]


def kafka_app(
    credentials: Path,
    bootstrap: str,
    events_topic: str,
    dlq_topic: str,
    options: GatewayOptions | None = None,
    client_config: Mapping[str, Any] | None = None,
    syslog: Any = None,
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

    return create_app(store, sink, opts, seed_ids=seed, syslog=syslog)


def uvicorn_config(
    app: FastAPI,
    host: str,
    port: int,
    tls: TlsFiles | None,
    log_level: str = "warning",
    limits: ConnectionLimits | None = None,
) -> uvicorn.Config:
    """The gateway's uvicorn: the shared hardened server (``common.http_server``)."""
    return http_server.uvicorn_config(
        app,
        host,
        port,
        limits=limits,
        tls=tls,
        log_level=log_level,
        lifespan="on",
        name="GatewayH11Protocol",
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
