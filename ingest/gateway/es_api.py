"""The Elasticsearch-compatible routes: the bulk API and the probes shippers make first.

Shippers that speak Elasticsearch (Beats and Elastic Agent, Logstash, syslog-ng's
``elasticsearch-http()``, rsyslog's ``omelasticsearch``, Fluent Bit, NXLog, the official
clients) point at the gateway unchanged. ``POST|PUT /_bulk`` and ``/{index}/_bulk`` go
through exactly the rules of ``/v1/events`` (authentication before the body is read, the
body caps, the byte budget, the event rate, de-duplication, the DLQ): ``bulk`` turns the
body into documents, ``pipeline`` does the rest, ``bulk`` words the per-item answer.

Probes are answered harmlessly: ``GET|HEAD /`` (the version handshake), ``/_license``,
``/_xpack``, ``/_cat/health``, ``/_cluster/health``, and template / ILM / ingest pipeline /
data stream checks and writes (the gateway stores none of them; a GET or HEAD says it
exists, so clients do not try to install it, a PUT is acknowledged). Every answer carries
``X-Elastic-Product: Elasticsearch``, which the official clients check on each response.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ingest.client import SENT_TIME_HEADER
from ingest.gateway import bulk, pipeline
from ingest.gateway.app import sent_time_header
from ingest.gateway.auth import CHALLENGES
from ingest.gateway.limits import retry_after_header
from ingest.gateway.parse import BatchError
from ingest.gateway.pipeline import GatewayState

log = logging.getLogger(__name__)

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}

#: Settings objects clients check for or install before sending: the gateway keeps none.
SETTINGS_PREFIXES = (
    "_index_template",
    "_template",
    "_component_template",
    "_ilm",
    "_ingest",
    "_data_stream",
    "_security",
)


def es_json(body: Any, status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**PRODUCT, **headers})


def es_error(status: int, reason: str, message: str, **headers: str) -> JSONResponse:
    return es_json(bulk.error_body(status, reason, message), status, **headers)


def unauthorized() -> JSONResponse:
    response = es_error(401, "security_exception", "missing, unknown or revoked credential")
    for challenge in CHALLENGES:
        response.headers.append("WWW-Authenticate", challenge)
    return response


def add_routes(
    app: FastAPI,
    state: GatewayState,
    authenticate: Callable[[GatewayState, Request], Any],
    read_body: Callable[..., Any],
    version: str = bulk.ES_VERSION,
) -> None:
    """Register the Elasticsearch routes on the gateway's app (same port, same TLS)."""

    async def do_bulk(request: Request, index: str | None) -> Response:
        started = time.monotonic()
        cred = authenticate(state, request)
        if cred is None:
            return unauthorized()
        limits = state.options.limits
        # Authenticated above, before a single body byte was read.
        body = await read_body(request, limits.max_body_bytes, state.options.body_timeout_s)
        if isinstance(body, JSONResponse):  # 413 / 408 / 400 worded as /v1/events does
            return _as_es(body)
        batch_id = uuid.uuid4().hex
        encoding = request.headers.get("content-encoding")
        identity = cred.identity()
        now = datetime.now(UTC)
        sent = sent_time_header(request.headers.get(SENT_TIME_HEADER))
        held = [body]  # popped by the decoding, so the raw body is freed before delivery
        del body

        def decode(counter: list[int]) -> tuple[list[bulk.BulkOp], Any]:
            ops = bulk.parse_bulk(held.pop(), encoding, limits, index, counter)
            return ops, bulk.to_batch(ops, identity, limits, now, sent)

        ops: list[bulk.BulkOp] = []
        try:
            async with pipeline.turn(state, cred):
                try:
                    ops, batch = await pipeline.decode(state, cred, decode)
                except BatchError as exc:
                    state.totals[f"batch_{exc.reason}"] += 1
                    state.metrics.refusal(exc.reason)
                    return es_error(exc.status, exc.reason, str(exc))
                result = await pipeline.deliver(state, cred, batch, batch_id)
        except pipeline.Refusal as exc:
            headers = {}
            if exc.retry_after is not None:
                headers["Retry-After"] = retry_after_header(exc.retry_after)
            doc = bulk.refusal_body(exc.status, exc.reason, exc.message, ops)
            return es_json(doc, exc.status, **headers)
        outcomes = {o.index: o for o in result.outcomes()}
        took = int((time.monotonic() - started) * 1000)
        answer = bulk.answer_bytes(ops, outcomes, took)  # es_json(bulk.answer(...))'s bytes
        return Response(answer, media_type="application/json", headers=dict(PRODUCT))

    @app.api_route("/_bulk", methods=["POST", "PUT"])
    async def bulk_any(request: Request) -> Response:
        """The bulk API (index/create with a source line; NDJSON, gzip or zstd)."""
        return await do_bulk(request, None)

    @app.api_route("/{index}/_bulk", methods=["POST", "PUT"])
    async def bulk_index(index: str, request: Request) -> Response:
        """The bulk API with a default index for actions that name none."""
        return await do_bulk(request, index)

    def probe(request: Request, body: Callable[[], Any]) -> Response:
        if authenticate(state, request) is None:
            return unauthorized()
        if request.method == "HEAD":
            return Response(headers={**PRODUCT, "content-type": "application/json"})
        return es_json(body())

    @app.api_route("/", methods=["GET", "HEAD"])
    async def root(request: Request) -> Response:
        """The version handshake every client makes first."""
        return probe(request, lambda: bulk.handshake(version))

    @app.get("/_license")
    async def license_(request: Request) -> Response:
        return probe(request, bulk.license_body)

    @app.get("/_xpack")
    async def xpack(request: Request) -> Response:
        return probe(request, lambda: bulk.xpack_body(version))

    @app.api_route("/_cat/health", methods=["GET", "HEAD"])
    async def cat_health(request: Request) -> Response:
        """rsyslog's omelasticsearch health check before it sends."""
        if authenticate(state, request) is None:
            return unauthorized()
        line = f"{int(time.time())} 00:00:00 sigstream green 1 1 0 0 0 0 0 0 - 100.0%\n"
        return Response(line, headers={**PRODUCT, "content-type": "text/plain"})

    @app.get("/_cluster/health")
    async def cluster_health(request: Request) -> Response:
        return probe(request, lambda: {"cluster_name": "sigstream", "status": "green"})

    def settings_route(prefix: str) -> None:
        @app.api_route(f"/{prefix}/{{rest:path}}", methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
        async def settings(rest: str, request: Request) -> Response:
            """Templates, ILM policies, ingest pipelines, data streams: acknowledged, never
            stored (events are routed by the gateway, not by index settings)."""
            if request.method in ("PUT", "POST", "DELETE"):
                if authenticate(state, request) is None:
                    return unauthorized()
                return es_json({"acknowledged": True})
            name = rest.split("/")[-1] or prefix
            return probe(request, lambda: _settings_body(prefix, name))

    for prefix in SETTINGS_PREFIXES:
        settings_route(prefix)


def _settings_body(prefix: str, name: str) -> dict[str, Any]:
    """A GET of a settings object: present and empty, in the shape the client parses."""
    if prefix == "_index_template":
        return {"index_templates": [{"name": name, "index_template": {"index_patterns": [name]}}]}
    if prefix == "_data_stream":
        return {"data_streams": []}
    return {name: {}}


def _as_es(response: JSONResponse) -> JSONResponse:
    """A /v1/events-style refusal (``{"reason", "message"}``) in Elasticsearch's shape."""
    doc = json.loads(bytes(response.body))
    return es_error(response.status_code, doc.get("reason", "error"), doc.get("message", ""))
