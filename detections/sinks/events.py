"""Index raw events for triage context (related events on a host, process ancestry).

Events are created with deterministic ids (tenant + sensor + event id) and ``op_type=create``, so
replays never duplicate them. The mappings are generated from the event models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from elasticsearch import Elasticsearch

from detections.sinks.elasticsearch import (
    BulkResult,
    _bulk_create,
    ensure_index,
    put_template,
)
from schemas.generate import es_event_mappings


def event_doc_id(event: dict[str, Any]) -> str:
    """An event's document id: (tenant, sensor, event id), as findings identify events, so
    one sensor reusing another's event id cannot replace its stored event."""
    raw = json.dumps([event.get("tenant_id", "default"), event["sensor_id"], event["event_id"]])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def put_events_template(es: Elasticsearch, index: str) -> None:
    """The events index template (also for rollover backing indices)."""
    put_template(es, f"{index}-template", [index, f"{index}-0*"], es_event_mappings())


def ensure_events_index(es: Elasticsearch, index: str) -> None:
    """Template and index for events."""
    put_events_template(es, index)
    ensure_index(es, index, es_event_mappings())


def index_events(
    es: Elasticsearch, index: str, events: Iterable[dict[str, Any]], chunk_size: int = 1000
) -> BulkResult:
    """Bulk-create schema events (plain dicts as the job parses them); duplicates are 409s."""
    docs = [
        (event_doc_id(e), {k: v for k, v in e.items() if v is not None and v != {}}) for e in events
    ]
    result = _bulk_create(es, index, docs, chunk_size)
    result.raise_refusals("events")
    return result
