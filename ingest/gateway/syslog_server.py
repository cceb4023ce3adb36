"""Syslog over TCP+TLS (RFC 5425) beside the HTTPS gateway, through the same pipeline.

Each connection: TLS with the gateway's certificate, messages split by ``syslog.Framer``
(octet-counting or newline-delimited), gathered into batches of at most ``batch_max``
messages or ``batch_wait_s`` seconds, then every message -> a document -> an event or a
reject via ``pipeline.document_item`` and delivered with ``pipeline.deliver`` (rate limit,
de-duplication, Kafka with acknowledgements, DLQ with reasons).

**Authentication.** Every message names its credential in RFC 5424 structured data,
``[sigstream@32473 token="sst_..."]`` (the shippers add it in their template); it is
verified per batch, so a revocation takes effect on the next batch. A connection is
bound to the first credential it presents; later messages without a token (or whose
header cannot be parsed) are judged under it and go to the DLQ with their reason under
that tenant. A message with a wrong or revoked token, or one without a token before any
good one, closes the connection without storing anything (the HTTP 401 of syslog):
nothing can be attributed to a tenant, and an unauthenticated peer must not fill the DLQ.
Tenant and sensor rules are those of ``/v1/events`` (a relay credential may send for any
host of its tenant; a sensor credential only for itself).

**What a message becomes.** A MSG holding a JSON object is a record of one of the shipper
layouts (or a schema event); a plain-text MSG is a Linux log entry, a ``linux_log`` event
whose service comes from the program or facility (``ingest.adapters.linux_syslog``), so
SigmaHQ's sshd/sudo/cron/auth/syslog rules see it.

**Bounds.** ``max_connections`` open at once (more are closed at accept), the TLS
handshake within ``handshake_timeout_s``, no byte for ``idle_timeout_s`` closes the
connection, a message begun must complete within ``frame_timeout_s`` (slow senders), a
message is at most ``limits.max_event_bytes`` (longer ones are cut to that and rejected
``message_too_large``), at most ``batch_max`` messages are held per connection.

**Backpressure and loss.** While a batch is being delivered the connection is not read:
TCP flow control pushes back to the sender, whose own queue (rsyslog's action queue,
syslog-ng's disk buffer) holds the rest. A batch refused as a whole (429 rate limit, 503
Kafka down) is retried after its ``Retry-After`` on the same connection, still without
reading. Syslog has no per-message acknowledgement: what a sender has written to the
socket counts as sent, so a gateway crash loses the batch being gathered or delivered
(at most ``batch_max`` messages per connection) plus what sits in the kernel's socket
buffers; a shipper with RELP or an HTTP protocol (``/v1/logs``, ``/_bulk``) avoids that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingest.adapters import linux_syslog
from ingest.gateway import otlp, pipeline, syslog
from ingest.gateway.credentials import Credential, CredentialFileError
from ingest.gateway.parse import (
    Accepted,
    Identity,
    Limits,
    ParsedBatch,
    Reject,
    json_depth,
    loads,
)
from ingest.gateway.pipeline import GatewayState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyslogOptions:
    port: int
    host: str = "127.0.0.1"
    cert: Path | None = None  # None: plain TCP (tests of framing only; never in serve)
    key: Path | None = None
    max_connections: int = 256
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 120.0
    frame_timeout_s: float = 30.0
    batch_max: int = 2000
    batch_wait_s: float = 0.25
    #: Longest wait before re-trying a batch refused as a whole (429/503).
    max_retry_wait_s: float = 30.0
    #: SO_REUSEPORT, so that several gateway worker processes share the port.
    reuse_port: bool = False


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# -- one message -> a document (pure) ----------------------------------------------------


@dataclass(frozen=True)
class Judged:
    """One framed message: its header (or why it has none) and token."""

    index: int
    frame: syslog.Frame
    message: syslog.Message | None
    problem: tuple[str, str] | None  # (reason, message) when the frame is unusable
    token: str | None


def judge(index: int, frame: syslog.Frame) -> Judged:
    if frame.truncated:
        problem = ("message_too_large", f"message of {frame.size} bytes over {len(frame.data)}")
        return Judged(index, frame, None, problem, None)
    try:
        message = syslog.parse_message(frame.data)
    except syslog.SyslogError as exc:
        return Judged(index, frame, None, (exc.reason, str(exc)), None)
    return Judged(index, frame, message, None, syslog.token_of(message))


def message_item(
    judged: Judged, identity: Identity, limits: Limits, now: datetime
) -> Accepted | tuple[str, str]:
    """One judged message -> an event encoded for Kafka, or ``(reason, message)``."""
    if judged.problem is not None or judged.message is None:
        return judged.problem or ("syslog_invalid", "no header")
    msg = judged.message.msg.strip()
    if not msg:
        return "empty_message", "the syslog message has no MSG"
    if not msg.startswith((b"{", b"[")):  # a plain-text log entry, not a JSON record
        return text_entry_item(judged.message, identity, limits, now)
    try:
        obj = loads(msg.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"MSG not UTF-8 at byte {exc.start}"
    except RecursionError:
        return "too_deep", f"nesting deeper than {limits.max_depth}"
    except ValueError as exc:
        return "not_json", f"MSG is not a JSON object: {str(exc)[:120]}"
    if not isinstance(obj, dict):
        return "not_an_object", f"MSG is JSON {type(obj).__name__}, not an object"
    if json_depth(obj, limits.max_depth) > limits.max_depth:
        return "too_deep", f"nesting deeper than {limits.max_depth}"
    otlp.fill_host(obj, judged.message.hostname)
    return pipeline.document_item(msg, obj, identity, limits, now)


def text_entry_item(
    message: syslog.Message, identity: Identity, limits: Limits, now: datetime
) -> Accepted | tuple[str, str]:
    """A plain-text MSG -> a ``linux_log`` event through the schema path (its tenant and
    sensor rules). Undecodable bytes are replaced, visibly, rather than refusing the line."""
    text = message.msg.strip().decode("utf-8", "replace")
    host = (message.hostname or "").strip() or None
    payload = linux_syslog.entry_payload(
        text,
        hostname=host,
        program=message.app_name,
        procid=message.procid,
        facility=message.facility,
        timestamp=message.timestamp,
        rfc=message.rfc,
        now=now,
        sensor_id=host.lower() if identity.relay and host else None,
        fallback_host=None if identity.relay else identity.sensor_id,
    )
    raw = json.dumps(payload, ensure_ascii=False).encode()
    return pipeline.document_item(raw, payload, identity, limits, now)


def build_batch(
    items: Sequence[Judged], identity: Identity, limits: Limits, now: datetime
) -> ParsedBatch:
    batch = ParsedBatch(decoded_bytes=sum(len(j.frame.data) for j in items))
    for judged in items:
        result = message_item(judged, identity, limits, now)
        if isinstance(result, tuple):
            batch.rejects.append(Reject(judged.index, judged.frame.data, *result))
        else:
            batch.events.append(
                Accepted(
                    judged.index,
                    result.value,
                    result.tenant_id,
                    result.sensor_id,
                    result.event_id,
                )
            )
    return batch


# -- the listener -----------------------------------------------------------------------


class Closing(Exception):
    """The connection is closed: nothing more of it can be stored."""


class Unauthorized(Closing):
    pass


class SyslogListener:
    """The asyncio TLS server; ``start`` inside the gateway's event loop."""

    def __init__(self, state: GatewayState, options: SyslogOptions) -> None:
        self.state, self.options = state, options
        self.active = 0
        self._server: asyncio.Server | None = None

    @property
    def batch_limit(self) -> int:
        """``batch_max``, but never more than a batch the credential's burst can take."""
        gw = self.state.options
        limit = min(self.options.batch_max, gw.limits.max_events)
        if gw.events_per_second > 0:
            limit = min(limit, int(gw.burst_events))
        return max(1, limit)

    async def start(self) -> None:
        opts = self.options
        ctx = ssl_context(opts.cert, opts.key) if opts.cert and opts.key else None
        self._server = await asyncio.start_server(
            self._handle,
            opts.host,
            opts.port,
            ssl=ctx,
            ssl_handshake_timeout=opts.handshake_timeout_s if ctx else None,
            limit=64 * 1024,
            # Every gateway worker process listens on the port (``serve --workers``); the
            # kernel spreads new connections over them, as for the HTTPS socket.
            reuse_port=self.options.reuse_port,
        )
        log.info("syslog listener on %s:%d (%s)", opts.host, opts.port, "TLS" if ctx else "TCP")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        totals = self.state.totals
        if self.active >= self.options.max_connections:
            totals["syslog_connections_refused"] += 1
            self.state.metrics.refusal("syslog_connections_refused")
            writer.close()
            return
        self.active += 1
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, peer)
        except Closing as exc:
            key = "syslog_unauthorized" if isinstance(exc, Unauthorized) else "syslog_closed"
            totals[key] += 1
            self.state.metrics.refusal(key)
            log.warning("syslog connection from %s closed: %s", peer, exc)
        except syslog.FramingError as exc:
            totals["syslog_framing_error"] += 1
            self.state.metrics.refusal("syslog_framing_error")
            log.warning("syslog connection from %s closed: %s", peer, exc)
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("syslog connection from %s ended: %r", peer, exc)
        finally:
            self.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, peer: object) -> None:
        opts = self.options
        framer = syslog.Framer(self.state.options.limits.max_event_bytes)
        pending: list[syslog.Frame] = []
        bound: list[Credential] = []  # the connection's credential, once presented
        first_at = 0.0  # when the oldest pending message arrived
        partial_since: float | None = None
        while True:
            now = time.monotonic()
            timeout = opts.idle_timeout_s
            if pending:
                timeout = min(timeout, max(0.0, first_at + opts.batch_wait_s - now))
            if partial_since is not None:
                timeout = min(timeout, max(0.0, partial_since + opts.frame_timeout_s - now))
            try:
                data = await asyncio.wait_for(reader.read(64 * 1024), timeout)
            except TimeoutError:
                data = None
            except (ConnectionError, ssl.SSLError) as exc:  # reset or unclean TLS close:
                log.info("syslog connection from %s: %r", peer, exc)
                data = b""  # what arrived whole is still delivered
            now = time.monotonic()
            if data == b"":  # the peer closed: deliver what it sent, then end
                if pending:
                    await self._flush(pending, bound)
                return
            if data is not None:
                for frame in framer.feed(data):
                    if not pending:
                        first_at = now
                    pending.append(frame)
                    if len(pending) >= self.batch_limit:
                        await self._flush(pending, bound)
                        pending = []
                partial_since = (partial_since or now) if framer.buffered else None
            elif not pending and partial_since is None:
                raise TimeoutError(f"idle for {opts.idle_timeout_s:g} s")
            if partial_since is not None and now - partial_since > opts.frame_timeout_s:
                raise TimeoutError(f"message not completed within {opts.frame_timeout_s:g} s")
            if pending and now - first_at >= opts.batch_wait_s:
                await self._flush(pending, bound)
                pending = []

    def _runs(
        self, judged: list[Judged], bound: list[Credential]
    ) -> list[tuple[Credential, list[Judged]]]:
        """Consecutive messages of one credential; raises Unauthorized (see module doc)."""
        store = self.state.store
        verified: dict[str, Credential] = {}
        runs: list[tuple[Credential, list[Judged]]] = []
        for item in judged:
            if item.token is not None:
                cred = verified.get(item.token) or store.verify(item.token)
                if cred is None:
                    raise Unauthorized(f"message {item.index}: unknown or revoked token")
                verified[item.token] = cred
                if not bound:
                    bound.append(cred)
            elif bound:
                cred = bound[0]
            else:
                raise Unauthorized(f"message {item.index}: no [{syslog.SD_ID} token=...] yet")
            if runs and runs[-1][0].key_id == cred.key_id:
                runs[-1][1].append(item)
            else:
                runs.append((cred, [item]))
        return runs

    async def _flush(self, frames: list[syslog.Frame], bound: list[Credential]) -> None:
        state = self.state
        start = state.totals["syslog_messages"]
        judged = [judge(start + i + 1, f) for i, f in enumerate(frames)]
        state.totals["syslog_messages"] += len(frames)
        if bound:  # a revocation ends the connection at its next batch
            self._check_live(bound[0])
        for cred, items in self._runs(judged, bound):
            await self._deliver(cred, items)

    def _check_live(self, cred: Credential) -> None:
        try:
            live = {c.key_id: c for c in self.state.store.credentials()}.get(cred.key_id)
        except CredentialFileError:  # a bad file: the last good credentials stay in force
            return
        if live is None or live.revoked:
            raise Unauthorized(f"credential {cred.key_id} revoked")

    async def _deliver(self, cred: Credential, items: list[Judged]) -> None:
        state, limits = self.state, self.state.options.limits
        identity = cred.identity()
        batch_id = uuid.uuid4().hex
        while True:
            received = datetime.now(UTC)
            try:
                async with pipeline.turn(state, cred):
                    parsed = await pipeline.decode(
                        state,
                        cred,
                        functools.partial(_charged, items, identity, limits, received),
                    )
                    await pipeline.deliver(state, cred, parsed, batch_id)
                    return
            except pipeline.Refusal as exc:
                if exc.retry_after is None:  # e.g. a batch over the burst: cannot succeed
                    raise Closing(f"batch refused: {exc.reason}: {exc.message}") from exc
                wait = min(max(exc.retry_after, 0.1), self.options.max_retry_wait_s)
                state.totals[f"syslog_{exc.reason}"] += 1
                state.metrics.refusal(f"syslog_{exc.reason}")
                await asyncio.sleep(wait)


def _charged(
    items: list[Judged], identity: Identity, limits: Limits, now: datetime, counter: list[int]
) -> ParsedBatch:
    batch = build_batch(items, identity, limits, now)
    counter[0] += batch.decoded_bytes
    return batch
