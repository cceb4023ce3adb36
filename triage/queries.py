"""Read-side queries over the findings index (pure request bodies + thin execution)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch

from common.client_options import elasticsearch_kwargs
from common.settings import RESERVED_TENANT_PREFIX, Settings

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


def summary_query(include_reserved: bool = False) -> dict[str, Any]:
    """Every finding, but those of the reserved tenants (canaries) unless asked."""
    if include_reserved:
        return {"match_all": {}}
    return {"bool": {"must_not": [{"prefix": {"sigstream.tenant_id": RESERVED_TENANT_PREFIX}}]}}


def summary_rows(
    settings: Settings, top: int = 30, include_reserved: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """(rows of rule/level/host/count, most severe first, at most ``top``; total findings),
    canary findings left out unless ``include_reserved``."""
    es = Elasticsearch(
        list(settings.es_hosts), request_timeout=30, **elasticsearch_kwargs(settings)
    )
    try:
        es.indices.refresh(index=settings.findings_index)
        resp = es.search(
            index=settings.findings_index,
            size=0,
            track_total_hits=True,
            query=summary_query(include_reserved),
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


class QueryRejected(ValueError):
    """A free-text query over the bounds (the API answers 400 with this reason)."""


@dataclass(frozen=True)
class TextLimits:
    """Bounds of the free-text ``q`` (``simple_query_string``): its cost grows with the
    number of terms and, much faster, with fuzzy (``~``) and prefix (``*``) terms, each
    expanded against the index's terms; 2,000 fuzzy terms took ~10 s on 3 documents."""

    max_chars: int = 512
    max_terms: int = 32
    max_fuzzy: int = 4
    max_wildcards: int = 4
    max_depth: int = 8
    #: Terms a fuzzy term may expand to (Elasticsearch's default is 50).
    fuzzy_max_expansions: int = 20


#: Where one term of simple_query_string ends: whitespace and its operators.
_SPLIT = re.compile(r'[\s+|()"]+')


def check_text(text: str, limits: TextLimits) -> None:
    """Refuse (QueryRejected with the reason) a ``q`` over ``limits``."""
    if len(text) > limits.max_chars:
        raise QueryRejected(f"q is {len(text):,} characters; at most {limits.max_chars:,}")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise QueryRejected("q contains control characters")
    depth = deepest = 0
    for c in text:
        depth += c == "("
        depth -= c == ")" and depth > 0
        deepest = max(deepest, depth)
    if deepest > limits.max_depth:
        raise QueryRejected(f"q nests parentheses {deepest} deep; at most {limits.max_depth}")
    terms = [t.lstrip("-") for t in _SPLIT.split(text)]
    terms = [t for t in terms if t.strip("-~*0123456789")]
    if len(terms) > limits.max_terms:
        raise QueryRejected(f"q has {len(terms)} terms; at most {limits.max_terms}")
    # "~" after a word is fuzziness, after a phrase slop: both are expensive expansions.
    fuzzy = len(re.findall(r"[^\s~]~\d*", text))
    if fuzzy > limits.max_fuzzy:
        raise QueryRejected(f"q has {fuzzy} fuzzy (~) terms; at most {limits.max_fuzzy}")
    wildcards = text.count("*")
    if wildcards > limits.max_wildcards:
        raise QueryRejected(f"q has {wildcards} wildcard (*) terms; at most {limits.max_wildcards}")
