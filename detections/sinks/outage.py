"""Wait out an Elasticsearch outage instead of failing the micro-batch.

Every write the job makes is replay-safe (deterministic ids, ``op_type=create``, groups
recomputed from the match documents), so a write that failed half-way can simply be
repeated. When Elasticsearch is down, restarting or recovering its shards, the task
retries the whole write with capped exponential backoff for up to ``patience_s``;
the micro-batch stalls (Kafka keeps the backlog) and completes when the cluster is back.
Past the patience the error is raised and the query stops, with the reason, rather than
spinning forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError

from detections.sinks.base import RetriableSinkError
from detections.sinks.elasticsearch import BulkWriteError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses that mean "not now" (overloaded, no master, shards not yet allocated).
RETRIABLE_STATUSES = frozenset({429, 502, 503, 504})


def is_outage(error: BaseException) -> bool:
    """True when ``error`` says the cluster is unreachable or not ready, not that the
    request was wrong."""
    if isinstance(error, RetriableSinkError | TransportConnectionError | ConnectionTimeout):
        return True
    if isinstance(error, ApiError):
        return error.meta.status in RETRIABLE_STATUSES
    if isinstance(error, BulkWriteError):
        return error.retriable
    return False


def outlasting_outages(
    write: Callable[[], T],
    patience_s: float,
    *,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``write()``, repeated through an outage for up to ``patience_s`` seconds."""
    deadline = clock() + patience_s
    backoff = first_backoff_s
    while True:
        try:
            return write()
        except Exception as error:
            if not is_outage(error) or clock() + backoff > deadline:
                raise
            log.warning("Elasticsearch unavailable (%s); retrying in %.1fs", error, backoff)
            sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
