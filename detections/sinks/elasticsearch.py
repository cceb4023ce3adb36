"""Write findings to Elasticsearch, replay-safe.

Three indices per findings name ``<index>``:

* ``<index>``: one immutable document per (rule, event) match, id = finding_id(rule, tenant,
  sensor, event), sent with ``op_type=create``: a replayed match is a 409 counted as a
  duplicate.
* ``<index>-groups``: the findings analysts triage, one per (tenant, rule, host, window),
  id = group id. Count and first/last seen are *recomputed* from the match documents
  (distinct match ids) and written with optimistic concurrency as partial updates that
  never touch triage state, so a replay can neither double-count nor overwrite status,
  assignee or notes.
* ``<index>-suppressions``: suppression rules; matches they silence are stored (and
  counted) but never open or grow a finding.

The stripped Elasticsearch distribution has no scripting, so nothing here uses scripts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError, helpers

from common.client_options import elasticsearch_kwargs, merge_es_kwargs
from common.settings import get_settings
from detections.sinks.finding_docs import finding_document
from detections.sinks.groups import sync_groups
from detections.sinks.indices import groups_index, suppressions_index
from detections.sinks.suppression import Suppression, suppressed_by
from schemas.findings import Finding
from schemas.generate import es_mappings


@dataclass
class BulkResult:
    created: int = 0
    duplicates: int = 0
    suppressed: int = 0
    groups_synced: int = 0
    errors: list[str] = field(default_factory=list)
    refused_statuses: list[int] = field(default_factory=list)

    def raise_refusals(self, what: str) -> None:
        if self.errors:
            raise BulkWriteError(
                f"{len(self.errors)} {what} refused; first: {self.errors[0]}",
                self.refused_statuses,
            )


class BulkWriteError(RuntimeError):
    """Some documents were refused for a reason other than "already exists".

    ``retriable`` when every refusal was a "not now" status (429 or 5xx: shards not yet
    allocated after a restart, a full write queue), so repeating the write can succeed."""

    def __init__(self, message: str, statuses: Iterable[int] = ()) -> None:
        super().__init__(message)
        self.statuses = sorted(set(statuses))
        self.retriable = bool(self.statuses) and all(s == 429 or s >= 500 for s in self.statuses)


def connect(hosts: Sequence[str], *, from_settings: bool = True, **kwargs: Any) -> Elasticsearch:
    """A client; authentication and CA come from the settings (SIGSTREAM_ES_*) unless given.
    ``from_settings=False`` (Spark executors): only ``kwargs``, which the job passes from
    the driver's settings."""
    options = kwargs
    if from_settings:
        options = merge_es_kwargs(elasticsearch_kwargs(get_settings()), kwargs)
    return Elasticsearch(
        list(hosts), request_timeout=60, retry_on_timeout=True, max_retries=5, **options
    )


def finding_mappings() -> dict[str, Any]:
    """Generated strict mappings, with ECS ``message`` analysed for free-text search:
    ``standard`` keeps ``winword.exe`` and ``t1059`` whole, ``message.words`` (``simple``)
    splits paths into words (the stripped distribution has only the built-in analyzers)."""
    mappings = es_mappings(Finding)
    mappings["properties"]["message"] = {
        "type": "text",
        "fields": {"words": {"type": "text", "analyzer": "simple"}},
    }
    return mappings


SUPPRESSION_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "tenant_id": {"type": "keyword"},
        "rule_id": {"type": "keyword"},
        "fields": {"type": "object", "enabled": False},
        "start": {"type": "date"},
        "end": {"type": "date"},
        "reason": {"type": "text"},
        "author": {"type": "keyword"},
        "created": {"type": "date"},
    },
}

_SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}


def put_template(
    es: Elasticsearch, name: str, patterns: list[str], mappings: dict[str, Any]
) -> None:
    """An index template (``<name>-template``-style) with the project's index settings."""
    es.indices.put_index_template(
        name=name,
        index_patterns=patterns,
        template={"settings": _SETTINGS, "mappings": mappings},
        priority=100,
    )


def ensure_index(es: Elasticsearch, index: str, mappings: dict[str, Any]) -> None:
    """Create ``index`` (from its template) or add new fields to an existing one."""
    if es.indices.exists(index=index):
        es.indices.put_mapping(index=index, properties=mappings["properties"])
    else:
        es.options(ignore_status=400).indices.create(index=index)


def put_findings_templates(es: Elasticsearch, index: str) -> None:
    """Index templates for matches, groups and suppressions; they also cover rollover
    backing indices (``<name>-000001`` ...), see triage/lifecycle.py."""
    mappings = finding_mappings()
    put_template(es, f"{index}-template", [index, f"{index}-0*"], mappings)
    groups = groups_index(index)
    put_template(es, f"{groups}-template", [groups, f"{groups}-0*"], mappings)
    sup = suppressions_index(index)
    put_template(es, f"{sup}-template", [sup], SUPPRESSION_MAPPINGS)


def ensure_findings_index(es: Elasticsearch, index: str) -> None:
    """Templates and indices for matches, groups and suppressions. Existing indices get
    new fields added (mappings only grow)."""
    put_findings_templates(es, index)
    mappings = finding_mappings()
    groups, sup = groups_index(index), suppressions_index(index)
    for name, m in ((index, mappings), (groups, mappings), (sup, SUPPRESSION_MAPPINGS)):
        ensure_index(es, name, m)


def drop_findings_index(es: Elasticsearch, index: str) -> None:
    """Delete the indices and templates ``ensure_findings_index`` made (tests, benchmarks)."""
    for name in (index, groups_index(index), suppressions_index(index)):
        es.options(ignore_status=404).indices.delete(index=name)
        es.options(ignore_status=404).indices.delete_index_template(name=f"{name}-template")


def active_suppressions(es: Elasticsearch, index: str) -> list[Suppression]:
    """Every suppression rule of ``index`` (few: a page of 10,000 is plenty)."""
    try:
        resp = es.search(index=suppressions_index(index), size=10_000, query={"match_all": {}})
    except NotFoundError:
        return []
    return [Suppression.model_validate(h["_source"]) for h in resp["hits"]["hits"]]


def _mark_suppressed(docs: list[tuple[str, dict[str, Any]]], sups: list[Suppression]) -> int:
    count = 0
    for _, body in docs:
        sig = body.get("sigstream")
        if not sups or not isinstance(sig, dict):
            continue
        ids = suppressed_by(sups, body)
        if ids:
            sig["suppressed_by"] = ids
            count += 1
    return count


def _bulk_create(
    es: Elasticsearch, index: str, docs: list[tuple[str, dict[str, Any]]], chunk_size: int
) -> BulkResult:
    result = BulkResult()
    actions = (
        {"_op_type": "create", "_index": index, "_id": doc_id, "_source": body}
        for doc_id, body in docs
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
            result.refused_statuses.append(int(info.get("status") or 0))
    return result


def write_documents(
    es: Elasticsearch,
    index: str,
    documents: Iterable[tuple[str, dict[str, Any]]],
    chunk_size: int = 1000,
    suppressions: list[Suppression] | None = None,
) -> BulkResult:
    """Bulk-create match documents, then bring their groups up to date.

    ``suppressions`` are the index's suppression rules if the caller has them at hand
    (the job caches them for a few seconds per worker); otherwise they are read.

    Groups are synced for duplicates too: if a crash hit between the two steps, the
    replayed batch (all 409s) still repairs the group. Raises BulkWriteError on any
    refusal but "already exists"."""
    docs = list(documents)
    if suppressions is None and docs:
        suppressions = active_suppressions(es, index)
    suppressed = _mark_suppressed(docs, suppressions or [])
    result = _bulk_create(es, index, docs, chunk_size)
    result.suppressed = suppressed
    result.raise_refusals("findings")
    group_ids = {
        body["sigstream"]["group"]["id"]
        for _, body in docs
        if (body.get("sigstream") or {}).get("group") and not body["sigstream"].get("suppressed_by")
    }
    if group_ids:
        es.indices.refresh(index=index)
        result.groups_synced = sync_groups(es, index, sorted(group_ids))
    return result


def write_findings(es: Elasticsearch, index: str, findings: Iterable[Finding]) -> BulkResult:
    """The typed entry point: write ``findings`` (matches) and sync their groups."""
    return write_documents(es, index, (finding_document(f) for f in findings))
