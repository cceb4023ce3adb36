"""Prometheus metrics: the listener every Sigstream process serves them on, and the gauges
shared by parts built apart (rule canaries, alert delivery).

Why a listener of its own rather than a ``/metrics`` route on the gateway or the API: the
scrape needs no API key or sensor credential, and the operator can bind it to loopback (the
default) while the service itself listens on the network. An optional bearer token
(``SIGSTREAM_METRICS_TOKEN``; Prometheus' ``authorization`` scrape option) guards it when
it must listen on a network address. Every number is a ``prometheus_client`` metric: the
text format is written by the library, never by hand (docs/metrics.md lists them all).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app, multiprocess

__all__ = [
    "CANARY_LAST_PROVEN",
    "CANARY_LATENCY",
    "CANARY_NOT_FIRING",
    "DELIVERY_BACKLOG",
    "DELIVERY_OLDEST_PENDING",
    "LATENCY_BUCKETS",
    "MetricsEndpoint",
    "MetricsServer",
    "canary_registry",
    "forget_canary",
    "forget_delivery_backlog",
    "include_shared",
    "multiprocess_registry",
    "serve_metrics",
    "set_canary",
    "set_delivery_backlog",
]

#: Event-to-finding latency buckets, seconds (the streaming job's p99 is 2-5 s at load;
#: the top buckets catch a backlog or an Elasticsearch outage being waited out).
LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

#: Which process serves which port (``SIGSTREAM_METRICS_<COMPONENT>_PORT``).
COMPONENTS = ("gateway", "api", "detect", "canary", "alerts")


class _MetricsSettings(Protocol):
    metrics_enabled: bool
    metrics_host: str
    metrics_token: Any  # SecretStr | None


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where one process serves its metrics, and the bearer token a scrape must bring."""

    host: str
    port: int
    token: str | None = None

    @classmethod
    def from_settings(
        cls, settings: _MetricsSettings, component: str, port: int | None = None
    ) -> MetricsEndpoint | None:
        """The endpoint of ``component`` (gateway, api, detect, canary, alerts), None when
        metrics are off.
        ``port`` overrides the setting (a command-line option)."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown metrics component {component!r}")
        if not settings.metrics_enabled and port is None:
            return None
        token = settings.metrics_token
        chosen = port if port is not None else getattr(settings, f"metrics_{component}_port")
        return cls(
            settings.metrics_host,
            int(chosen),
            token.get_secret_value() if token is not None else None,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _V6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    #: A client that connects and sends nothing (or trickles) is dropped after this many
    #: seconds instead of holding a listener thread forever.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the service's log."""


def _guarded(app: Callable[..., Any], token: str | None) -> Callable[..., Any]:
    """``app`` answering only ``/metrics`` (and ``/``), and only with the bearer token
    when one is set (compared in constant time)."""
    expected = f"Bearer {token}".encode() if token else None

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: metrics are at /metrics\n"]
        if expected is not None:
            given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                start_response(
                    "401 Unauthorized",
                    [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
                )
                return [b"metrics need the bearer token (SIGSTREAM_METRICS_TOKEN)\n"]
        return app(environ, start_response)

    return guarded


class MetricsServer:
    """A ``/metrics`` listener on a daemon thread (``stop()`` closes it)."""

    def __init__(self, endpoint: MetricsEndpoint, registry: CollectorRegistry) -> None:
        server_class = _V6ThreadingServer if ":" in endpoint.host else _ThreadingServer
        app = _guarded(make_wsgi_app(registry), endpoint.token)
        self._server = make_server(
            endpoint.host, endpoint.port, app, server_class, handler_class=_QuietHandler
        )
        self.endpoint = MetricsEndpoint(endpoint.host, self._server.server_port, endpoint.token)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def url(self) -> str:
        return self.endpoint.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(endpoint: MetricsEndpoint, registry: CollectorRegistry) -> MetricsServer:
    """Serve ``registry`` at ``endpoint`` (port 0: a free port, see ``.port``)."""
    return MetricsServer(endpoint, registry)


def multiprocess_registry(folder: Path) -> CollectorRegistry:
    """A registry adding up what every process writing to ``folder`` counted
    (prometheus_client's multiprocess mode: the gateway's worker processes)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    return registry


def prepare_multiprocess_dir(folder: Path) -> Path:
    """An empty ``folder`` for multiprocess mode, exported as PROMETHEUS_MULTIPROC_DIR so
    processes spawned from now on count into it (stale files of an earlier run would be
    added to this one's counters, so they go)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


# --- Shared gauges: rule canaries and alert delivery --------------------------------------
#
# Defined here so the canary runner (``sigstream rules health``) and alert delivery
# (``sigstream alerts``), built in parallel, set the names the alerting rules
# (infra/prometheus/sigstream-rules.yml) use. They live in their own registry: the process
# that runs canaries or delivery serves it (``serve_metrics(endpoint, canary_registry())``,
# or adds them to its own registry with ``include_shared``).

_SHARED = CollectorRegistry(auto_describe=True)

CANARY_LAST_PROVEN = Gauge(
    "sigstream_rule_canary_last_proven_timestamp_seconds",
    "Unix time of the rule's last canary finding proven end to end (gateway -> Kafka -> "
    "job -> findings); time() minus it is the canary age.",
    ["rule_id"],
    registry=_SHARED,
)
CANARY_LATENCY = Gauge(
    "sigstream_rule_canary_latency_seconds",
    "Seconds from the rule's last canary event's injection to its finding.",
    ["rule_id"],
    registry=_SHARED,
)
CANARY_NOT_FIRING = Gauge(
    "sigstream_rule_canary_not_firing",
    "1 while the rule's canary produced no finding within its deadline, else 0.",
    ["rule_id"],
    registry=_SHARED,
)
DELIVERY_BACKLOG = Gauge(
    "sigstream_alert_delivery_backlog",
    "Findings waiting to be delivered on the route (webhook, chat, mail, syslog, ...).",
    ["route"],
    registry=_SHARED,
)
DELIVERY_OLDEST_PENDING = Gauge(
    "sigstream_alert_delivery_oldest_pending_timestamp_seconds",
    "Unix time of the oldest finding still waiting for delivery on the route (0: none).",
    ["route"],
    registry=_SHARED,
)


def canary_registry() -> CollectorRegistry:
    """The registry holding the canary and delivery gauges (serve it where they are set)."""
    return _SHARED


class _SharedGauges:
    """The canary and delivery gauges as a collector of another registry."""

    def collect(self) -> Iterable[Any]:
        return _SHARED.collect()


def include_shared(registry: CollectorRegistry) -> CollectorRegistry:
    """``registry`` also serving the canary and delivery gauges of this process (the detect
    job's listener does: canaries run there when they run in the job)."""
    registry.register(_SharedGauges())  # type: ignore[arg-type]
    return registry


def set_canary(
    rule_id: str,
    last_proven: datetime | None,
    latency_s: float | None = None,
    not_firing: bool = False,
) -> None:
    """Record one rule's canary state. Call it for deployed rules with canaries only
    (the series per rule are bounded by the rules that have true-positive tests), and
    ``forget_canary`` when a rule leaves the deployment."""
    if last_proven is not None:
        CANARY_LAST_PROVEN.labels(rule_id).set(last_proven.timestamp())
    if latency_s is not None:
        CANARY_LATENCY.labels(rule_id).set(latency_s)
    CANARY_NOT_FIRING.labels(rule_id).set(1 if not_firing else 0)


def forget_canary(rule_id: str) -> None:
    """Drop a rule's canary series (rule undeployed: its age must not page anyone)."""
    for gauge in (CANARY_LAST_PROVEN, CANARY_LATENCY, CANARY_NOT_FIRING):
        with contextlib.suppress(KeyError):
            gauge.remove(rule_id)


def set_delivery_backlog(route: str, pending: int, oldest: datetime | None = None) -> None:
    """Record one delivery route's backlog: findings waiting, and the oldest one's time.
    ``route`` is an operator-configured route name (bounded), never a tenant or host."""
    DELIVERY_BACKLOG.labels(route).set(pending)
    DELIVERY_OLDEST_PENDING.labels(route).set(oldest.timestamp() if oldest else 0)


def forget_delivery_backlog(route: str) -> None:
    """Drop a route's backlog series (route removed from the routes file: its last
    backlog must not page anyone)."""
    for gauge in (DELIVERY_BACKLOG, DELIVERY_OLDEST_PENDING):
        with contextlib.suppress(KeyError):
            gauge.remove(route)
