"""Read-side queries over the findings index (pure request bodies + thin execution)."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

from sigstream.connections import elasticsearch_kwargs
from sigstream.settings import Settings

#: Sigma levels, most severe first (for sorting what an analyst sees).
LEVEL_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "informational": 4}


def summary_aggregation(top: int) -> dict[str, Any]:
    """Findings grouped by level, then rule, then host, so severe findings are never
    crowded out of the summary by noisy low-severity rules."""
    return {
        "by_level": {
            "terms": {"field": "rule.level", "size": 10, "missing": ""},
            "aggs": {
                "by_rule": {
                    "terms": {"field": "rule.name", "size": top, "order": {"_count": "desc"}},
                    "aggs": {"hosts": {"terms": {"field": "host.name", "size": 5}}},
                }
            },
        }
    }


def summary_rows(settings: Settings, top: int = 30) -> tuple[list[dict[str, Any]], int]:
    """(rows of rule/level/host/count, most severe first, at most ``top``; total findings)."""
    es = Elasticsearch(
        list(settings.es_hosts), request_timeout=30, **elasticsearch_kwargs(settings)
    )
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
    for level in resp["aggregations"]["by_level"]["buckets"]:
        for rule in level["by_rule"]["buckets"]:
            for host in rule["hosts"]["buckets"]:
                rows.append(
                    {
                        "rule": rule["key"],
                        "level": level["key"] or None,
                        "host": host["key"],
                        "count": host["doc_count"],
                    }
                )
    rows.sort(key=lambda r: (LEVEL_ORDER.get(r["level"] or "", 9), -r["count"], r["rule"]))
    return rows[:top], int(resp["hits"]["total"]["value"])
