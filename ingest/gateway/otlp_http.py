"""``POST /v1/logs``: OTLP/HTTP logs through the gateway's pipeline, answered per the spec.

Order as for ``/v1/events``: credential from ``Authorization`` (401 before any body byte),
body bounded as sent (413) and in time (408), the credential's turn and byte budget (429),
decompression (gzip/zstd) and decoding on a worker thread with every decoded byte charged,
then every record -> a document (``otlp.documents``) -> an event or a reject
(``pipeline.document_item``), rate limit, de-duplication and Kafka (``pipeline.deliver``).

Answers (OTLP/HTTP 1.x): 200 with an ``ExportLogsServiceResponse`` in the request's
content type, with ``partial_success`` (``rejected_log_records`` and an error message
naming the reasons) when some records went to the DLQ — the sender must not retry them;
400 for a malformed request (not retryable); 413 (too large, too many records), 415;
429 and 503 with ``Retry-After`` (retryable: rate limit, Kafka not acknowledging). Error
bodies are ``google.rpc.Status`` in the request's content type (JSON when it is unknown).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ingest.gateway import otlp, pipeline
from ingest.gateway.limits import retry_after_header
from ingest.gateway.parse import (
    Accepted,
    BatchError,
    Identity,
    Limits,
    ParsedBatch,
    Reject,
    decoded_chunks,
)
from ingest.gateway.pipeline import GatewayState

#: Decoded OTLP body cap: a request is held whole while parsed, and the JSON mapping's
#: parse tree costs several times its size, so it is lower than NDJSON's streaming cap.
MAX_DECODED_BYTES = 16 * 1024 * 1024


def _error(status: int, message: str, media: str, **headers: str) -> Response:
    code = otlp.GRPC_CODE.get(status, 2)
    return Response(
        otlp.status_body(code, message, media),
        status_code=status,
        media_type=media,
        headers=headers,
    )


def decode_batch(
    body: bytes,
    media: str,
    encoding: str | None,
    limits: Limits,
    counter: list[int],
    now: datetime,
    identity: Identity,
) -> ParsedBatch:
    """Body -> decoded request -> documents -> events and rejects (numbered by record)."""
    cap = min(limits.max_decoded_bytes, MAX_DECODED_BYTES)
    chunks: list[bytes] = []
    for chunk in decoded_chunks(body, encoding, limits):
        counter[0] += len(chunk)
        if counter[0] > cap:
            raise BatchError(413, "decoded_too_large", f"decoded body over {cap} bytes")
        chunks.append(chunk)
    del body
    request = otlp.decode_request(b"".join(chunks), media)
    del chunks
    records = otlp.count_records(request)
    if records > limits.max_events:
        raise BatchError(413, "too_many_events", f"{records} log records over {limits.max_events}")
    decoded = otlp.documents(request, limits)
    del request
    batch = ParsedBatch(decoded_bytes=counter[0])
    for rej in decoded.rejects:
        batch.rejects.append(Reject(rej.index, rej.raw, rej.reason, rej.message))
    for doc in decoded.documents:
        result = pipeline.document_item(doc.raw, doc.obj, identity, limits, now)
        if isinstance(result, tuple):
            batch.rejects.append(Reject(doc.index, doc.raw, *result))
        else:
            batch.events.append(
                Accepted(
                    doc.index, result.value, result.tenant_id, result.sensor_id, result.event_id
                )
            )
    batch.rejects.sort(key=lambda r: r.line)
    return batch


def _summary(rejects: list[Reject]) -> str:
    reasons = Counter(r.reason for r in rejects)
    first = rejects[0]
    text = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
    return (
        f"{len(rejects)} log records rejected to the DLQ ({text}); record {first.line}: "
        + (first.message[:200])
    )


async def ingest_logs(state: GatewayState, request: Request) -> Response:
    from ingest.gateway.app import _read_body, authenticate  # the shared HTTP helpers

    content_type = request.headers.get("content-type")
    try:
        media = otlp.media_type(content_type)
    except BatchError as exc:
        return _error(exc.status, str(exc), otlp.JSON)
    cred = authenticate(state, request)
    if cred is None:
        return _error(
            401, "missing, unknown or revoked credential", media, **{"WWW-Authenticate": "Bearer"}
        )
    limits = state.options.limits
    body = await _read_body(request, limits.max_body_bytes, state.options.body_timeout_s)
    if isinstance(body, JSONResponse):
        problem = json.loads(bytes(body.body))
        return _error(body.status_code, problem.get("message", ""), media)
    encoding = request.headers.get("content-encoding")
    identity = cred.identity()
    now = datetime.now(UTC)
    held = [body]
    del body
    batch_id = uuid.uuid4().hex
    try:
        async with pipeline.turn(state, cred):
            try:
                parsed = await pipeline.decode(
                    state,
                    cred,
                    lambda counter: decode_batch(
                        held.pop(), media, encoding, limits, counter, now, identity
                    ),
                )
            except BatchError as exc:
                state.totals[f"otlp_{exc.reason}"] += 1
                state.metrics.refusal(exc.reason)
                return _error(exc.status, str(exc), media)
            result = await pipeline.deliver(state, cred, parsed, batch_id)
    except pipeline.Refusal as exc:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = retry_after_header(exc.retry_after)
        return _error(exc.status, exc.message, media, **headers)
    state.totals["otlp_records"] += result.lines
    rejected = len(result.rejects)
    message = _summary(result.rejects) if rejected else ""
    return Response(otlp.export_response(rejected, message, media), media_type=media)
