"""The gateway's HTTP surface: ``POST /v1/events`` (a batch), ``/healthz``, ``/readyz``.

One batch, in order: authenticate the bearer token (401) before reading a byte of the
body, refuse oversized or too slow bodies (413, 408), refuse a credential in decoded-byte
debt (429), decode and validate every line (``parse``; the decoded bytes are charged),
copy the client's clock at send time (``X-Sigstream-Sent-Time``) into each event's
``sent_time``, apply the sensor's event rate limit (429 + Retry-After), drop (tenant,
sensor, event id) keys Kafka already has (``dedupe``), then deliver events and rejects to
Kafka and wait for the acknowledgements (503 + Retry-After if Kafka does not take them; a
record Kafka refuses on its own becomes a ``kafka_refused`` reject). The answer is JSON
with per-batch counts and every rejection's reason. Batches of one credential are
processed one at a time, which keeps each sensor's order; at most ``parallel_batches`` are
decoded or delivered at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from ingest.client import SENT_TIME_HEADER
from ingest.gateway import pipeline
from ingest.gateway.auth import token_from_header
from ingest.gateway.credentials import Credential, CredentialStore
from ingest.gateway.limits import retry_after_header
from ingest.gateway.parse import BatchError, ParsedBatch, parse_batch
from ingest.gateway.pipeline import GatewayOptions, GatewayState
from ingest.gateway.sink import Sink

log = logging.getLogger(__name__)

#: How many rejections the answer lists one by one (all of them are counted by reason).
MAX_LISTED_REJECTS = 100


def _problem(status: int, reason: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"reason": reason, "message": message}, status_code=status, headers=headers)


def authenticate(state: GatewayState, request: Request) -> Credential | None:
    """The live credential of the request's ``Authorization`` header (Bearer, ApiKey or
    Basic: see ``auth``), or None."""
    token = token_from_header(request.headers.get("authorization"))
    cred = None if token is None else state.store.verify(token)
    if cred is None:
        state.metrics.refusal("unauthorized")
    return cred


def unauthorized() -> JSONResponse:
    return JSONResponse(
        {"reason": "unauthorized", "message": "missing, unknown or revoked credential"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _read_body(request: Request, cap: int, timeout_s: float) -> bytes | JSONResponse:
    """The body, or the answer refusing it: 413 as soon as it grows past ``cap`` (never
    buffered beyond it), 408 when it does not arrive within ``timeout_s`` (counted in the
    gateway's metrics)."""
    body = await _receive_body(request, cap, timeout_s)
    if isinstance(body, JSONResponse):
        state = getattr(request.app.state, "gateway", None)
        if state is not None:
            state.metrics.refusal(json.loads(body.body)["reason"])
    return body


async def _receive_body(request: Request, cap: int, timeout_s: float) -> bytes | JSONResponse:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        return _problem(413, "body_too_large", f"body over {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    return _problem(413, "body_too_large", f"body over {cap} bytes")
                chunks.append(chunk)
    except TimeoutError:
        return _problem(408, "body_timeout", f"body not received within {timeout_s:g} s")
    except ClientDisconnect:
        return _problem(400, "client_disconnected", "the client went away mid-body")
    return b"".join(chunks)


def _answer(
    batch_id: str, cred: Credential, parsed: ParsedBatch, fresh: int, duplicates: int
) -> dict[str, Any]:
    return {
        "batch": batch_id,
        "tenant": cred.tenant_id,
        "sensor": cred.sensor_id,
        "lines": parsed.lines,
        "accepted": fresh,
        "duplicates": duplicates,
        "rejected": len(parsed.rejects),
        "reasons": dict(Counter(r.reason for r in parsed.rejects)),
        "rejects": [
            {"line": r.line, "reason": r.reason, "message": r.message}
            for r in parsed.rejects[:MAX_LISTED_REJECTS]
        ],
    }


async def ingest_batch(state: GatewayState, request: Request) -> JSONResponse:
    cred = authenticate(state, request)
    if cred is None:
        return unauthorized()
    limits = state.options.limits
    # Authenticated above, before a single body byte was read.
    body = await _read_body(request, limits.max_body_bytes, state.options.body_timeout_s)
    if isinstance(body, JSONResponse):
        return body
    batch_id = request.headers.get("x-sigstream-batch", "")[:64] or uuid.uuid4().hex
    encoding = request.headers.get("content-encoding")
    identity = cred.identity()
    now = datetime.now(UTC)
    sent = sent_time_header(request.headers.get(SENT_TIME_HEADER))
    held = [body]  # popped by the parse, so the raw body is freed before delivery
    del body
    try:
        async with pipeline.turn(state, cred):
            try:
                parsed = await pipeline.decode(
                    state,
                    cred,
                    lambda counter: parse_batch(
                        held.pop(), identity, limits, now, encoding, counter, sent
                    ),
                )
            except BatchError as exc:
                state.totals[f"batch_{exc.reason}"] += 1
                state.metrics.refusal(exc.reason)
                return _problem(exc.status, exc.reason, str(exc))
            result = await pipeline.deliver(state, cred, parsed, batch_id)
    except pipeline.Refusal as exc:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = retry_after_header(exc.retry_after)
        return _problem(exc.status, exc.reason, exc.message, **headers)
    parsed.rejects = result.rejects
    return JSONResponse(_answer(batch_id, cred, parsed, len(result.fresh), len(result.duplicates)))


def sent_time_header(value: str | None) -> datetime | None:
    """The client's ``X-Sigstream-Sent-Time`` (epoch seconds) as a time, None when it is
    missing or not a plausible one (an unreadable header never costs the batch)."""
    if not value or len(value) > 32:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not 0 < seconds < 253402300799:  # finite, before year 10000
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def create_app(
    store: CredentialStore,
    sink: Sink,
    options: GatewayOptions | None = None,
    *,
    seed_ids: Any = None,
    syslog: Any = None,
) -> FastAPI:
    """The ASGI app. ``seed_ids``: a callable returning the (tenant, sensor, event id)
    triples already in Kafka, run once at start-up (None: start with an empty window).
    ``syslog``: ``syslog_server.SyslogOptions`` to run the syslog TLS listener beside."""
    opts = options or GatewayOptions()
    state = pipeline.new_state(store, sink, opts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if seed_ids is not None:
            try:
                ids = await asyncio.get_running_loop().run_in_executor(state.executor, seed_ids)
                state.recent.add_all(ids)
                log.info("de-duplication window seeded with %d event ids", len(ids))
            except Exception as exc:  # Kafka down at start: serve anyway, window empty
                log.warning("could not seed the de-duplication window: %r", exc)
        listener = None
        if syslog is not None:  # the syslog TLS listener, on this event loop and state
            from ingest.gateway.syslog_server import SyslogListener

            listener = SyslogListener(state, syslog)
            await listener.start()
        yield
        if listener is not None:
            await listener.stop()
        state.executor.shutdown(wait=False, cancel_futures=True)
        sink.close()

    app = FastAPI(title="sigstream ingest gateway", lifespan=lifespan, docs_url=None)
    app.state.gateway = state

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        """Ingest one NDJSON batch (Content-Encoding: identity, gzip or zstd)."""
        return await ingest_batch(state, request)

    @app.post("/v1/logs")
    async def otlp_logs(request: Request) -> Response:
        """OTLP/HTTP logs (protobuf or JSON; gzip or zstd): see ``otlp_http``."""
        from ingest.gateway.otlp_http import ingest_logs

        return await ingest_logs(state, request)

    from ingest.gateway import es_api  # imports this module: registered at app creation

    es_api.add_routes(app, state, authenticate, _read_body)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "totals": dict(state.totals), "recent_ids": len(state.recent)}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready_fn = getattr(sink, "ready", None)
        ok = (
            True
            if ready_fn is None
            else await asyncio.get_running_loop().run_in_executor(state.executor, ready_fn)
        )
        return JSONResponse({"kafka": ok}, status_code=200 if ok else 503)

    return app
