"""Run the gateway: build it from settings, serve it with uvicorn (TLS unless told not to).

``GatewayServer`` runs uvicorn on a thread and is what tests use to get a real server on a
free port; ``sigstream gateway serve`` runs ``serve`` in the foreground: one process, or
``workers`` processes sharing one listening socket (``serve_workers``).

Why processes: one gateway process is one core of Python (the GIL), however many threads
it has. The parent binds the socket once and starts the workers with it (spawned, not
forked: librdkafka's threads do not survive a fork); every worker accepts on the same
socket, so the kernel hands each new connection to a worker that is waiting in
``accept`` — an idle worker, not a busy one. Each worker is a whole gateway of its own
(producers, de-duplication window, rate limits, credential reload; see docs/gateway.md).
The parent restarts a worker that dies and stops them all on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from common import http_server
from common.http_server import ConnectionLimits, TlsFiles, free_port
from common.metrics import (
    MetricsEndpoint,
    multiprocess_registry,
    prepare_multiprocess_dir,
    serve_metrics,
)
from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.sink import KafkaSink, recent_ids

__all__ = [
    "ConnectionLimits",
    "GatewayServer",
    "ServeSpec",
    "TlsFiles",
    "free_port",
    "kafka_app",
    "serve",
]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ServeSpec:
    """Everything a gateway process needs to build itself (picklable: workers are spawned)."""

    host: str
    port: int
    tls: TlsFiles | None
    limits: ConnectionLimits
    credentials: Path
    bootstrap: str
    events_topic: str
    dlq_topic: str
    options: GatewayOptions
    client_config: Mapping[str, Any]
    log_level: str = "info"
    #: ``syslog_server.SyslogOptions`` (every worker listens, with SO_REUSEPORT), or None.
    syslog: Any = None
    #: Where /metrics is served (None: no metrics listener). With several workers the
    #: parent serves the sum of what they count in ``metrics_dir`` (multiprocess mode).
    metrics: MetricsEndpoint | None = None
    metrics_dir: Path | None = None


#: asyncio's TLS read buffer per connection (``SSLProtocol.max_size``, 256 KiB by default,
#: allocated and zero-filled for every connection): it was ~280 KiB of RSS per idle
#: keep-alive connection (bench/gateway.py). TLS records are at most 16 KiB, so 64 KiB
#: still reads several per call.
TLS_READ_BUFFER = 64 * 1024


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    """Shrink asyncio's per-connection TLS read buffer in this process (a gateway process
    serves nothing else)."""
    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > size:
        asyncio.sslproto.SSLProtocol.max_size = size


def _app(spec: ServeSpec) -> FastAPI:
    small_tls_buffers()
    return kafka_app(
        spec.credentials,
        spec.bootstrap,
        spec.events_topic,
        spec.dlq_topic,
        spec.options,
        client_config=spec.client_config,
        syslog=spec.syslog,
    )


def _server(spec: ServeSpec, app: FastAPI | None = None) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn_config(
            app or _app(spec), spec.host, spec.port, spec.tls, spec.log_level, spec.limits
        )
    )


def _worker(spec: ServeSpec, sock: socket.socket) -> None:
    """One worker process: a whole gateway accepting on the shared socket."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _server(spec).run(sockets=[sock])


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket the workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve(spec: ServeSpec, workers: int = 1) -> None:
    """Serve in the foreground: in this process (``workers`` 1) or in ``workers`` spawned
    processes sharing one socket, restarted when they die, stopped on SIGTERM/SIGINT."""
    if workers <= 1:
        app = _app(spec)
        server = _server(spec, app)
        metrics = None
        if spec.metrics is not None:
            metrics = serve_metrics(spec.metrics, app.state.gateway.metrics.registry)
            log.info("gateway metrics on %s", metrics.url)
        try:
            server.run()
        finally:
            if metrics is not None:
                metrics.stop()
        return
    metrics = None
    if spec.metrics is not None:
        # Before the first spawn: each worker's prometheus_client reads the folder from
        # its environment when it is imported.
        folder = prepare_multiprocess_dir(spec.metrics_dir or Path("gateway-metrics"))
        metrics = serve_metrics(spec.metrics, multiprocess_registry(folder))
        log.info("gateway metrics of %d workers on %s (%s)", workers, metrics.url, folder)
    sock = bind(spec.host, spec.port, spec.limits.max_connections * workers)
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker, args=(spec, sock), name="gateway-worker")
        proc.start()
        return proc

    def stop(signum: int, _frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs = [start() for _ in range(workers)]
    log.info(
        "gateway: %d worker processes on one socket (pids %s)", workers, [p.pid for p in procs]
    )
    try:
        while not stopping.is_set():
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping.is_set():
                    log.warning(
                        "gateway worker %s exited (%s); restarting it", proc.pid, proc.exitcode
                    )
                    if metrics is not None and proc.pid is not None:
                        from prometheus_client import multiprocess

                        multiprocess.mark_process_dead(proc.pid)  # its counters stay
                    procs[i] = start()
            stopping.wait(0.5)
    finally:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # uvicorn's graceful stop in the worker
        for proc in procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()
        sock.close()
        if metrics is not None:
            metrics.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
