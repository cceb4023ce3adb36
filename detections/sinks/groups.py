"""Keep group documents (the findings analysts see) in step with their matches.

A group's count and first/last seen are derived from the match documents (distinct match
ids, suppressed matches excluded) and written as a partial update guarded by
``if_seq_no``/``if_primary_term``: a writer with a stale view (smaller count) loses the
race and re-reads, so counts only grow, and the update never names triage fields, so an
analyst's status, assignee and notes are never overwritten. No scripts are needed.
"""

from __future__ import annotations

import logging
from typing import Any

from elasticsearch import Elasticsearch

from detections.sinks.indices import groups_index

log = logging.getLogger(__name__)

#: Below this many matches per group, cardinality is exact in practice; above it, approximate.
PRECISION = 40_000
MAX_ATTEMPTS = 8


def derive_groups(es: Elasticsearch, index: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """group id -> {count, first_seen, last_seen, first (the earliest match's source)}."""
    resp = es.search(
        index=index,
        size=0,
        query={
            "bool": {
                "filter": [{"terms": {"sigstream.group.id": ids}}],
                "must_not": [{"exists": {"field": "sigstream.suppressed_by"}}],
            }
        },
        aggs={
            "g": {
                "terms": {"field": "sigstream.group.id", "size": len(ids)},
                "aggs": {
                    "n": {
                        "cardinality": {
                            "field": "sigstream.finding.id",
                            "precision_threshold": PRECISION,
                        }
                    },
                    "first": {"min": {"field": "@timestamp"}},
                    "last": {"max": {"field": "@timestamp"}},
                    "rep": {"top_hits": {"size": 1, "sort": [{"@timestamp": "asc"}]}},
                },
            }
        },
    )
    out: dict[str, dict[str, Any]] = {}
    for b in resp["aggregations"]["g"]["buckets"]:
        out[b["key"]] = {
            "count": max(int(b["n"]["value"]), 1),
            "first_seen": b["first"]["value_as_string"],
            "last_seen": b["last"]["value_as_string"],
            "first": b["rep"]["hits"]["hits"][0]["_source"],
        }
    return out


def _group_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {"count": d["count"], "first_seen": d["first_seen"], "last_seen": d["last_seen"]}


def new_group_document(group_id: str, derived: dict[str, Any]) -> dict[str, Any]:
    """A fresh group document: the earliest match, re-keyed, with the derived size."""
    body = dict(derived["first"])
    sig = dict(body["sigstream"])
    sig["finding"] = {"id": group_id, "status": "open", "notes": [], "history": []}
    sig["group"] = {**sig["group"], **_group_fields(derived)}
    sig.pop("suppressed_by", None)
    body["sigstream"] = sig
    body["@timestamp"] = derived["first_seen"]
    return body


def _same(stored: dict[str, Any], d: dict[str, Any]) -> bool:
    g = stored.get("sigstream", {}).get("group", {})
    return (g.get("count"), g.get("first_seen"), g.get("last_seen")) == (
        d["count"],
        d["first_seen"],
        d["last_seen"],
    )


def _sync_many(es: Elasticsearch, groups: str, derived: dict[str, dict[str, Any]]) -> int:
    """Create or grow many group documents with one multi-get and one bulk request per
    round (a micro-batch can touch thousands of groups: one request per group made the
    findings write the job's bottleneck). Conflicting writers are retried; returns how
    many groups were written."""
    pending = dict(derived)
    written = 0
    for _ in range(MAX_ATTEMPTS):
        if not pending:
            return written
        found = es.mget(index=groups, ids=list(pending))["docs"]
        operations: list[dict[str, Any]] = []
        for doc in found:
            gid, d = doc["_id"], pending[doc["_id"]]
            if not doc.get("found"):
                operations += [
                    {"create": {"_index": groups, "_id": gid}},
                    new_group_document(gid, d),
                ]
                continue
            src = doc["_source"]
            stored = src.get("sigstream", {}).get("group", {})
            if _same(src, d) or int(stored.get("count", 0)) > d["count"]:
                pending.pop(gid)  # up to date, or our view is older than what is stored
                continue
            operations += [
                {
                    "update": {
                        "_index": doc["_index"],
                        "_id": gid,
                        "if_seq_no": doc["_seq_no"],
                        "if_primary_term": doc["_primary_term"],
                    }
                },
                {"doc": {"@timestamp": d["first_seen"], "sigstream": {"group": _group_fields(d)}}},
            ]
        if not operations:
            return written
        resp = es.bulk(operations=operations)
        for item in resp["items"]:
            ((_action, info),) = item.items()
            gid = info["_id"]
            if info.get("status") in (200, 201):
                written += 1
                pending.pop(gid, None)
            elif info.get("status") != 409:  # 409: another writer won; re-read and retry
                log.warning("group %s: %s %s", gid, info.get("status"), info.get("error"))
                pending.pop(gid, None)
    for gid in pending:
        log.warning("group %s: gave up after %d concurrent updates", gid, MAX_ATTEMPTS)
    return written


def sync_groups(es: Elasticsearch, index: str, group_ids: list[str], chunk: int = 500) -> int:
    """Recompute and write the groups ``group_ids`` of match index ``index``."""
    groups = groups_index(index)
    written = 0
    for i in range(0, len(group_ids), chunk):
        ids = group_ids[i : i + chunk]
        written += _sync_many(es, groups, derive_groups(es, index, ids))
    return written
