"""Index raw events for triage context (related events on a host, process ancestry).

Events are created with deterministic ids (tenant + event id) and ``op_type=create``, so
replays never duplicate them. The mappings are generated from the event models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from elasticsearch import Elasticsearch

from detections.sinks.elasticsearch import BulkResult, BulkWriteError, _bulk_create
from schemas.generate import es_event_mappings


def event_doc_id(event: dict[str, Any]) -> str:
    return f"{event.get('tenant_id', 'default')}:{event['event_id']}"


def ensure_events_index(es: Elasticsearch, index: str) -> None:
    """Template (also for rollover backing indices) and index for events."""
    mappings = es_event_mappings()
    es.indices.put_index_template(
        name=f"{index}-template",
        index_patterns=[index, f"{index}-0*"],
        template={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": mappings,
        },
        priority=100,
    )
    if es.indices.exists(index=index):
        es.indices.put_mapping(index=index, properties=mappings["properties"])
    else:
        es.options(ignore_status=400).indices.create(index=index)


def index_events(
    es: Elasticsearch, index: str, events: Iterable[dict[str, Any]], chunk_size: int = 1000
) -> BulkResult:
    """Bulk-create schema events (plain dicts as the job parses them); duplicates are 409s."""
    docs = [
        (event_doc_id(e), {k: v for k, v in e.items() if v is not None and v != {}}) for e in events
    ]
    result = _bulk_create(es, index, docs, chunk_size)
    if result.errors:
        raise BulkWriteError(f"{len(result.errors)} events refused; first: {result.errors[0]}")
    return result
