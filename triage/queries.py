"""Read-side queries over the findings index (pure request bodies + thin execution)."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

from sigstream.settings import Settings


def summary_aggregation(top: int) -> dict[str, Any]:
    """Findings grouped by rule, then level and host, biggest groups first."""
    return {
        "by_rule": {
            "terms": {"field": "rule.name", "size": top, "order": {"_count": "desc"}},
            "aggs": {
                "level": {"terms": {"field": "rule.level", "size": 1}},
                "hosts": {"terms": {"field": "host.name", "size": 5}},
            },
        }
    }


def summary_rows(settings: Settings, top: int = 30) -> tuple[list[dict[str, Any]], int]:
    """(rows of rule/level/host/count, total findings)."""
    es = Elasticsearch(list(settings.es_hosts), request_timeout=30)
    try:
        es.indices.refresh(index=settings.findings_index)
        resp = es.search(
            index=settings.findings_index,
            size=0,
            track_total_hits=True,
            aggs=summary_aggregation(top),
        )
    finally:
        es.close()
    rows: list[dict[str, Any]] = []
    for bucket in resp["aggregations"]["by_rule"]["buckets"]:
        levels = bucket["level"]["buckets"]
        for host in bucket["hosts"]["buckets"]:
            rows.append(
                {
                    "rule": bucket["key"],
                    "level": levels[0]["key"] if levels else None,
                    "host": host["key"],
                    "count": host["doc_count"],
                }
            )
    return rows, int(resp["hits"]["total"]["value"])
