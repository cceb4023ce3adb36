"""The dead-letter convention shared by every stage that rejects a record.

A DLQ record (topic ``settings.dlq_topic``, default ``telemetry.dlq``) carries the
original bytes as its value (and key), and why it was rejected in headers: the reason,
where the record came from (``topic:partition:offset``, or the gateway's batch and line),
and the stage that refused it.
"""

from __future__ import annotations

DLQ_REASON_HEADER = "sigstream.reason"
DLQ_ORIGIN_HEADER = "sigstream.origin"
DLQ_STAGE_HEADER = "sigstream.stage"


def dlq_headers(reason: str, origin: str, stage: str) -> list[tuple[str, bytes]]:
    return [
        (DLQ_REASON_HEADER, reason.encode()),
        (DLQ_ORIGIN_HEADER, origin.encode()),
        (DLQ_STAGE_HEADER, stage.encode()),
    ]


def kafka_origin(topic: str | None, partition: int | None, offset: int | None) -> str:
    """``topic:partition:offset``: the origin header of a record read from Kafka."""
    return f"{topic}:{partition}:{offset}"
