"""What every protocol of the gateway does once it holds a list of documents.

``/v1/events`` (NDJSON schema events) and the Elasticsearch bulk API (shippers' own
layouts) differ only in how a body becomes documents and how the answer looks. The rest
is here, so both get the same rules:

* ``turn``: one batch of a credential at a time (keeps each sensor's order), at most
  ``parallel_batches`` in flight, and a credential in decoded-byte debt is refused (429)
  before its body is decoded;
* ``decode``: run a body's decoding on a worker thread and charge every decoded byte,
  also when the body turns out unusable;
* ``document_item``: one source document -> an encoded event or ``(reason, message)``:
  schema events through ``parse.parse_line`` (tenant/sensor rules, limits), foreign
  layouts through ``ingest.adapters.layouts.normalize`` (tenant from the credential,
  sensor from the credential or, for a relay, the record's host);
* ``deliver``: the event rate limit, de-duplication and delivery to Kafka with
  acknowledgements, returning every item's outcome (accepted, duplicate, rejected with
  its reason, or refused by Kafka and therefore in the DLQ).

Batch-level refusals (rate limited, Kafka unavailable) are raised as ``Refusal``; each
protocol words them its own way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from ingest.gateway.credentials import Credential, CredentialStore
from ingest.gateway.dedupe import RecentIds
from ingest.gateway.limits import ByteBudget, RateLimiter
from ingest.gateway.metrics import GatewayMetrics
from ingest.gateway.parse import Accepted, Identity, Limits, ParsedBatch, Reject, parse_line
from ingest.gateway.sink import Sink, SinkUnavailable
from ingest.producer import encode_event

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The layout name of records that already are schema events (``event_type`` present).
SCHEMA_LAYOUT = "sigstream"


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
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    def refuse(self, reason: str) -> None:
        """Count one whole request refused (the totals of /healthz and the metrics)."""
        self.totals[reason] += 1
        self.metrics.refusal(reason)


class Refusal(Exception):
    """The whole batch is refused (nothing of it was written); ``retry_after`` in seconds
    when the sender should simply try again later."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


Status = Literal["accepted", "duplicate", "rejected", "kafka_refused"]


@dataclass(frozen=True)
class Outcome:
    """What became of one item (``index`` as the protocol numbered it)."""

    index: int
    status: Status
    event_id: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass
class Result:
    """A delivered batch: the events written, those Kafka already had, and every reject
    (validation rejects and events Kafka refused one by one, all in the DLQ)."""

    fresh: list[Accepted]
    duplicates: list[Accepted]
    rejects: list[Reject]
    lines: int

    def outcomes(self) -> list[Outcome]:
        """One outcome per item, in index order."""
        out = [Outcome(e.line, "accepted", e.event_id) for e in self.fresh]
        out += [Outcome(e.line, "duplicate", e.event_id) for e in self.duplicates]
        out += [
            Outcome(
                r.line,
                "kafka_refused" if r.reason == "kafka_refused" else "rejected",
                None,
                r.reason,
                r.message,
            )
            for r in self.rejects
        ]
        return sorted(out, key=lambda o: o.index)


def new_state(store: CredentialStore, sink: Sink, opts: GatewayOptions) -> GatewayState:
    if opts.events_per_second > 0 and opts.burst_events < opts.limits.max_events:
        raise ValueError("burst_events must be at least limits.max_events")
    if opts.bytes_per_second > 0 and opts.burst_bytes < opts.limits.max_decoded_bytes:
        raise ValueError("burst_bytes must be at least limits.max_decoded_bytes")
    return GatewayState(
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
async def turn(state: GatewayState, cred: Credential) -> AsyncIterator[None]:
    """This credential's turn: its batches one at a time, ``parallel_batches`` overall;
    raises Refusal(429) when the credential still owes decoded bytes."""
    lock = state.locks.setdefault(cred.key_id, asyncio.Lock())
    async with lock, state.slots:
        debt = state.byte_limiter.debt(cred.key_id, time.monotonic())
        if debt > 0:  # refused before decoding anything: decoding is what costs
            state.refuse("rate_limited")
            raise Refusal(
                429,
                "rate_limited",
                f"over {state.options.bytes_per_second:g} decoded bytes/s",
                debt,
            )
        yield


async def decode(state: GatewayState, cred: Credential, fn: Callable[[list[int]], T]) -> T:
    """``fn(counter)`` on a worker thread; every decoded byte it counts in ``counter[0]``
    is charged to the credential, also when it raises (a bomb that hits the cap costs the
    cap)."""

    def run() -> T:
        counter = [0]
        try:
            return fn(counter)
        finally:
            state.byte_limiter.charge(cred.key_id, counter[0], time.monotonic())

    return await asyncio.get_running_loop().run_in_executor(state.executor, run)


def document_item(
    raw: bytes,
    obj: Mapping[str, Any] | None,
    identity: Identity,
    limits: Limits,
    now: datetime,
    sent: datetime | None = None,
    number: int = 0,
) -> Accepted | tuple[str, str]:
    """One source document (item ``number``) -> the event encoded for Kafka, or
    ``(reason, message)``.

    ``obj`` is the parsed document when the caller already has it (None: schema path
    only). Schema events (``event_type`` present, or ``obj`` None) go through
    ``parse_line`` with all its rules; other layouts through ``layouts.normalize``.
    Never raises."""
    from ingest.adapters.eslogger import is_eslogger  # its event_type is an integer

    schema = obj is None or "event_type" in obj or "schema_version" in obj
    if schema and (obj is None or not is_eslogger(obj)):
        return _numbered(parse_line(raw, identity, limits, now, sent), number)
    if len(raw) > limits.max_event_bytes:
        return "event_too_large", f"event of {len(raw)} bytes over {limits.max_event_bytes}"
    from ingest.adapters import layouts  # the foreign layouts' adapters
    from ingest.adapters.windows import AdapterError

    try:
        event = layouts.normalize(
            obj,
            raw,
            tenant_id=identity.tenant_id,
            sensor_id=None if identity.relay else identity.sensor_id,
            received_time=now,
            sent_time=sent,
        )
    except AdapterError as exc:
        return getattr(exc, "reason", "adapter_invalid"), str(exc)[:500]
    except Exception as exc:  # an adapter bug must cost one document, not the batch
        log.exception("layout adapter failed on a document")
        return "adapter_invalid", f"{type(exc).__name__}: {exc}"[:500]
    if event.tenant_id != identity.tenant_id:  # pragma: no cover - normalize sets it
        return "tenant_mismatch", "event names a tenant other than the credential's"
    try:
        value = encode_event(event)
    except Exception as exc:  # whatever fails here is this document's fault
        return "unencodable", f"cannot encode the event: {exc}"[:300]
    return Accepted(number, value, event.tenant_id, event.sensor_id, event.event_id)


def _numbered(result: Accepted | tuple[str, str], number: int) -> Accepted | tuple[str, str]:
    if isinstance(result, tuple) or result.line == number:
        return result
    return Accepted(number, result.value, result.tenant_id, result.sensor_id, result.event_id)


async def deliver(
    state: GatewayState, cred: Credential, batch: ParsedBatch, batch_id: str
) -> Result:
    """Rate limit, de-duplicate and write one batch (call inside ``turn``). Raises
    Refusal: 413 for a batch larger than the credential's burst, 429 over the event rate,
    503 when Kafka did not acknowledge (nothing of the batch is then counted as written:
    the sender re-sends it and already-acknowledged ids come back as duplicates)."""
    opts = state.options
    wait = state.limiter.check(cred.key_id, batch.lines, time.monotonic())
    if wait == float("inf"):
        state.metrics.refusal("batch_over_burst")
        raise Refusal(413, "batch_over_burst", "batch larger than the sensor's burst")
    if wait > 0:
        state.refuse("rate_limited")
        raise Refusal(429, "rate_limited", f"over {opts.events_per_second:g} events/s", wait)
    seen: set[tuple[str, str, str]] = set()
    fresh: list[Accepted] = []
    duplicates: list[Accepted] = []
    for event in batch.events:
        key = event.dedupe_key  # (tenant, sensor, event id): one sensor's ids only
        if key in state.recent or key in seen:
            duplicates.append(event)
            continue
        seen.add(key)
        fresh.append(event)
    rejects = batch.rejects
    try:
        delivery = await asyncio.get_running_loop().run_in_executor(
            state.executor,
            state.sink.deliver,
            fresh,
            rejects,
            cred.identity(),
            batch_id,
        )
    except SinkUnavailable as exc:
        log.warning("batch %s of %s not delivered: %s", batch_id, cred.sensor_id, exc)
        state.refuse("kafka_unavailable")
        raise Refusal(
            503,
            "kafka_unavailable",
            "events not stored; re-send the batch",
            opts.kafka_retry_after_s,
        ) from exc
    refused = delivery.refused if delivery is not None else []
    if refused:  # Kafka refused these events one by one: they are rejects (in the DLQ)
        lines = {r.line for r in refused}
        fresh = [e for e in fresh if e.line not in lines]
        rejects = sorted([*rejects, *refused], key=lambda r: r.line)
    state.recent.add_all(e.dedupe_key for e in fresh)
    state.totals["accepted"] += len(fresh)
    state.totals["duplicates"] += len(duplicates)
    state.totals["rejected"] += len(rejects)
    state.metrics.delivered(len(fresh), len(duplicates), (r.reason for r in rejects))
    return Result(fresh, duplicates, rejects, batch.lines)
