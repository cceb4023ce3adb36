"""Write findings to Elasticsearch with bulk requests and deterministic ids.

Documents are sent with ``op_type=create``: a finding that already exists (a replay after
a crash, a re-processed micro-batch) is a 409 that we count as a duplicate, so replays
never duplicate findings and never overwrite an analyst's triage state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch, helpers

from schemas.findings import Finding
from schemas.generate import es_mappings


@dataclass
class BulkResult:
    created: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


class BulkWriteError(RuntimeError):
    """Some documents were refused for a reason other than "already exists"."""


def connect(hosts: Sequence[str], **kwargs: Any) -> Elasticsearch:
    return Elasticsearch(
        list(hosts), request_timeout=60, retry_on_timeout=True, max_retries=5, **kwargs
    )


def ensure_findings_index(es: Elasticsearch, index: str) -> None:
    """Create the index template and index for findings if they do not exist yet."""
    template = f"{index}-template"
    if not es.indices.exists_index_template(name=template):
        es.indices.put_index_template(
            name=template,
            index_patterns=[f"{index}*"],
            template={
                "settings": {
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                    "refresh_interval": "1s",
                },
                "mappings": es_mappings(Finding),
            },
            priority=100,
        )
    if not es.indices.exists(index=index):
        es.options(ignore_status=400).indices.create(index=index)


def write_documents(
    es: Elasticsearch,
    index: str,
    documents: Iterable[tuple[str, dict[str, Any]]],
    chunk_size: int = 1000,
) -> BulkResult:
    """Bulk-create documents; raise BulkWriteError on any failure but duplicates."""
    result = BulkResult()
    actions = (
        {"_op_type": "create", "_index": index, "_id": doc_id, "_source": body}
        for doc_id, body in documents
    )
    for ok, item in helpers.streaming_bulk(
        es,
        actions,
        chunk_size=chunk_size,
        raise_on_error=False,
        raise_on_exception=True,
        max_retries=5,
        initial_backoff=1,
    ):
        if ok:
            result.created += 1
            continue
        info = item.get("create", {})
        if info.get("status") == 409:
            result.duplicates += 1
        else:
            result.errors.append(f"{info.get('_id')}: {info.get('status')} {info.get('error')}")
    if result.errors:
        raise BulkWriteError(f"{len(result.errors)} findings refused; first: {result.errors[0]}")
    return result
