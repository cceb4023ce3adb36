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
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ingest.client import SENT_TIME_HEADER
from ingest.gateway.credentials import Credential, CredentialStore
from ingest.gateway.dedupe import RecentIds
from ingest.gateway.limits import ByteBudget, RateLimiter, retry_after_header
from ingest.gateway.parse import BatchError, Limits, ParsedBatch, parse_batch
from ingest.gateway.sink import Sink, SinkUnavailable

log = logging.getLogger(__name__)

#: How many rejections the answer lists one by one (all of them are counted by reason).
MAX_LISTED_REJECTS = 100


@dataclass(frozen=True)
class GatewayOptions:
    limits: Limits = field(default_factory=Limits)
    events_per_second: float = 20_000.0  # per credential; 0 disables the limit
    burst_events: float = 40_000.0
    #: Decoded bytes per second per credential (0 disables); every decoded byte is charged,
    #: blank lines too, and a credential in debt is refused before its next body is decoded.
    bytes_per_second: float = 32 * 1024 * 1024
    burst_bytes: float = 128 * 1024 * 1024
    #: Batches decoded or delivered at once (each holds up to one decoded body in memory).
    parallel_batches: int = 4
    #: Seconds for a whole request body to arrive once its headers are in (408 after).
    body_timeout_s: float = 60.0
    kafka_retry_after_s: float = 5.0
    dedupe_capacity: int = 1_000_000
    #: Seed the de-duplication window from the last N records of each events partition.
    restore_per_partition: int = 200_000


@dataclass
class GatewayState:
    store: CredentialStore
    sink: Sink
    options: GatewayOptions
    recent: RecentIds
    limiter: RateLimiter
    byte_limiter: ByteBudget
    executor: ThreadPoolExecutor
    slots: asyncio.Semaphore
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)


def _problem(status: int, reason: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"reason": reason, "message": message}, status_code=status, headers=headers)


def _authenticate(state: GatewayState, request: Request) -> Credential | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return state.store.verify(token)


async def _read_body(request: Request, cap: int, timeout_s: float) -> bytes | JSONResponse:
    """The body, or the answer refusing it: 413 as soon as it grows past ``cap`` (never
    buffered beyond it), 408 when it does not arrive within ``timeout_s``."""
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
    cred = _authenticate(state, request)
    if cred is None:
        return JSONResponse(
            {"reason": "unauthorized", "message": "missing, unknown or revoked credential"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    limits = state.options.limits
    # Authenticated above, before a single body byte was read.
    body = await _read_body(request, limits.max_body_bytes, state.options.body_timeout_s)
    if isinstance(body, JSONResponse):
        return body
    batch_id = request.headers.get("x-sigstream-batch", "")[:64] or uuid.uuid4().hex
    encoding = request.headers.get("content-encoding")
    loop = asyncio.get_running_loop()
    lock = state.locks.setdefault(cred.key_id, asyncio.Lock())
    async with lock, state.slots:
        debt = state.byte_limiter.debt(cred.key_id, time.monotonic())
        if debt > 0:  # refused before decoding anything: decoding is what costs
            state.totals["rate_limited"] += 1
            return _problem(
                429,
                "rate_limited",
                f"over {state.options.bytes_per_second:g} decoded bytes/s",
                **{"Retry-After": retry_after_header(debt)},
            )
        now = datetime.now(UTC)
        sent = sent_time_header(request.headers.get(SENT_TIME_HEADER))
        try:
            parsed = await loop.run_in_executor(
                state.executor, _parse_and_charge, state, cred, body, now, encoding, sent
            )
        except BatchError as exc:
            state.totals[f"batch_{exc.reason}"] += 1
            return _problem(exc.status, exc.reason, str(exc))
        del body
        wait = state.limiter.check(cred.key_id, parsed.lines, time.monotonic())
        if wait == float("inf"):
            return _problem(413, "batch_over_burst", "batch larger than the sensor's burst")
        if wait > 0:
            state.totals["rate_limited"] += 1
            return _problem(
                429,
                "rate_limited",
                f"over {state.options.events_per_second:g} events/s",
                **{"Retry-After": retry_after_header(wait)},
            )
        seen: set[tuple[str, str, str]] = set()
        fresh = []
        for event in parsed.events:
            key = event.dedupe_key  # (tenant, sensor, event id): one sensor's ids only
            if key in state.recent or key in seen:
                continue
            seen.add(key)
            fresh.append(event)
        duplicates = len(parsed.events) - len(fresh)
        try:
            delivery = await loop.run_in_executor(
                state.executor,
                state.sink.deliver,
                fresh,
                parsed.rejects,
                cred.identity(),
                batch_id,
            )
        except SinkUnavailable as exc:
            log.warning("batch %s of %s not delivered: %s", batch_id, cred.sensor_id, exc)
            state.totals["kafka_unavailable"] += 1
            return _problem(
                503,
                "kafka_unavailable",
                "events not stored; re-send the batch",
                **{"Retry-After": retry_after_header(state.options.kafka_retry_after_s)},
            )
        refused = delivery.refused if delivery is not None else []
        if refused:  # Kafka refused these events one by one: they are rejects (in the DLQ)
            lines = {r.line for r in refused}
            fresh = [e for e in fresh if e.line not in lines]
            parsed.rejects = sorted([*parsed.rejects, *refused], key=lambda r: r.line)
        state.recent.add_all(e.dedupe_key for e in fresh)
    state.totals["accepted"] += len(fresh)
    state.totals["duplicates"] += duplicates
    state.totals["rejected"] += len(parsed.rejects)
    return JSONResponse(_answer(batch_id, cred, parsed, len(fresh), duplicates))


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


def _parse_and_charge(
    state: GatewayState,
    cred: Credential,
    body: bytes,
    now: datetime,
    encoding: str | None,
    sent: datetime | None = None,
) -> ParsedBatch:
    """Parse on a worker thread; charge every decoded byte to the credential, also when
    the body turns out to be unusable (a bomb that hits the cap costs the cap)."""
    counter = [0]
    try:
        return parse_batch(
            body, cred.identity(), state.options.limits, now, encoding, counter, sent
        )
    finally:
        state.byte_limiter.charge(cred.key_id, counter[0], time.monotonic())


def create_app(
    store: CredentialStore,
    sink: Sink,
    options: GatewayOptions | None = None,
    *,
    seed_ids: Any = None,
) -> FastAPI:
    """The ASGI app. ``seed_ids``: a callable returning the (tenant, sensor, event id)
    triples already in Kafka, run once at start-up (None: start with an empty window)."""
    opts = options or GatewayOptions()
    if opts.events_per_second > 0 and opts.burst_events < opts.limits.max_events:
        raise ValueError("burst_events must be at least limits.max_events")
    if opts.bytes_per_second > 0 and opts.burst_bytes < opts.limits.max_decoded_bytes:
        raise ValueError("burst_bytes must be at least limits.max_decoded_bytes")
    state = GatewayState(
        store=store,
        sink=sink,
        options=opts,
        recent=RecentIds(opts.dedupe_capacity),
        limiter=RateLimiter(opts.events_per_second, opts.burst_events),
        byte_limiter=ByteBudget(opts.bytes_per_second, opts.burst_bytes),
        executor=ThreadPoolExecutor(
            max_workers=max(4, opts.parallel_batches), thread_name_prefix="gateway"
        ),
        slots=asyncio.Semaphore(max(1, opts.parallel_batches)),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if seed_ids is not None:
            try:
                ids = await asyncio.get_running_loop().run_in_executor(state.executor, seed_ids)
                state.recent.add_all(ids)
                log.info("de-duplication window seeded with %d event ids", len(ids))
            except Exception as exc:  # Kafka down at start: serve anyway, window empty
                log.warning("could not seed the de-duplication window: %r", exc)
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)
        sink.close()

    app = FastAPI(title="sigstream ingest gateway", lifespan=lifespan, docs_url=None)
    app.state.gateway = state

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        """Ingest one NDJSON batch (Content-Encoding: identity, gzip or zstd)."""
        return await ingest_batch(state, request)

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
