"""The triage API's Prometheus metrics: requests by route template and status, durations.

An ASGI middleware outside everything else (the API-key guard included), so refused
requests (401, 413, ...) are counted too. The route label is the route's template
(``/api/findings/{finding_id}``), never the concrete path: a finding id or a scanner's
random paths cannot grow the series (unmatched paths are ``other``).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Request durations, seconds (searches are bounded by SIGSTREAM_API_SEARCH_TIMEOUT_S).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "sigstream_api_requests",
            "Triage API requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "sigstream_api_request_duration_seconds",
            "Triage API request durations by route template.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )


class MetricsMiddleware:
    """Count and time every HTTP request of the app it wraps."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Any) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def _route(self, scope: Scope) -> str:
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "other"))
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self._route(scope)
            method = scope.get("method", "GET")
            method = method if method in _METHODS else "other"
            self.metrics.requests.labels(method, route, str(status[0])).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
