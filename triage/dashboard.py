"""What the triage page's overview and sensor-health views ask Elasticsearch
(pure request bodies and response shaping; the thin execution is in ``triage.views``).

Every body is bounded whatever the size of the index: aggregations only (``size: 0``),
a date histogram of at most ``MAX_BUCKETS`` buckets (the interval is chosen from the time
range), terms aggregations of at most ``MAX_TOP`` keys, and pages of at most
``MAX_SENSOR_PAGE`` sensors; every body carries the tenant clause of ``triage.store``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from detections.health.finding_docs import HEALTH_RULES
from triage.alerts.kinds import RULE_IDS_OF_KIND
from triage.auth import Caller
from triage.store import tenant_filter, tenant_filter_plain

#: Bars of the findings-over-time chart, at most.
MAX_BUCKETS = 60
#: Keys of a "top" list, at most.
MAX_TOP = 20
#: Sensors of one page of the sensor-health view, at most.
MAX_SENSOR_PAGE = 200
#: Sigma levels, most severe first (the chart stacks them in this order).
LEVELS = ("critical", "high", "medium", "low", "informational")
#: Fixed intervals the histogram may use, shortest first (Elasticsearch units).
INTERVALS: tuple[tuple[str, timedelta], ...] = (
    ("1m", timedelta(minutes=1)),
    ("5m", timedelta(minutes=5)),
    ("15m", timedelta(minutes=15)),
    ("30m", timedelta(minutes=30)),
    ("1h", timedelta(hours=1)),
    ("3h", timedelta(hours=3)),
    ("6h", timedelta(hours=6)),
    ("12h", timedelta(hours=12)),
    ("1d", timedelta(days=1)),
    ("7d", timedelta(days=7)),
    ("30d", timedelta(days=30)),
    ("90d", timedelta(days=90)),
    ("365d", timedelta(days=365)),
)
#: Health kind -> its rule id, and back (the sensor-health view groups findings by kind).
HEALTH_RULE_IDS = {kind: rule.id for kind, rule in HEALTH_RULES.items()}
HEALTH_KIND_OF = {rule_id: kind for kind, rule_id in HEALTH_RULE_IDS.items()}
#: Sigstream's findings about its own detection content (demotions, canaries not firing,
#: field drift): counted apart from Sigma findings.
DETECTION_HEALTH_IDS = sorted(
    RULE_IDS_OF_KIND["rule_demotion"]
    | RULE_IDS_OF_KIND["rule_health"]
    | RULE_IDS_OF_KIND["field_drift"]
)
#: Sensor states, worst first.
SENSOR_STATES = ("silent", "degraded", "healthy")


def interval_for(start: datetime, end: datetime, max_buckets: int = MAX_BUCKETS) -> str:
    """The shortest fixed interval that draws ``start``..``end`` in at most ``max_buckets``
    bars (the longest one when even that is not enough)."""
    span = max(end - start, timedelta(seconds=1))
    for name, size in INTERVALS:
        if span / size <= max_buckets:
            return name
    return INTERVALS[-1][0]


def _range(start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    bounds: dict[str, str] = {}
    if start:
        bounds["gte"] = start.isoformat()
    if end:
        bounds["lte"] = end.isoformat()
    return [{"range": {"@timestamp": bounds}}] if bounds else []


def span_query(caller: Caller, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """First and last finding in the range: the histogram's bounds when the range is open."""
    return {
        "size": 0,
        "query": {"bool": {"filter": [*tenant_filter(caller), *_range(start, end)]}},
        "aggs": {
            "first": {"min": {"field": "@timestamp"}},
            "last": {"max": {"field": "@timestamp"}},
        },
    }


def overview_query(
    caller: Caller,
    start: datetime | None,
    end: datetime | None,
    interval: str,
    top: int = 10,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Counts of the caller's findings (groups, by first seen) in the range: over time by
    level, by status, by kind, and the top rules, hosts and ATT&CK tactics."""
    top = max(1, min(top, MAX_TOP))
    terms = lambda fld: {"terms": {"field": fld, "size": top}}  # noqa: E731
    extra = {"timeout": f"{int(timeout_s * 1000)}ms"} if timeout_s else {}
    return {
        **extra,
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": [*tenant_filter(caller), *_range(start, end)]}},
        "aggs": {
            "over_time": {
                "date_histogram": {
                    "field": "@timestamp",
                    "fixed_interval": interval,
                    "min_doc_count": 0,
                    **(
                        {"extended_bounds": {"min": start.isoformat(), "max": end.isoformat()}}
                        if start and end
                        else {}
                    ),
                },
                "aggs": {"level": {"terms": {"field": "rule.level", "size": 10, "missing": ""}}},
            },
            "levels": {"terms": {"field": "rule.level", "size": 10, "missing": ""}},
            "status": {"terms": {"field": "sigstream.finding.status", "size": 5}},
            "rules": {
                "terms": {"field": "rule.id", "size": top},
                "aggs": {
                    "name": {"terms": {"field": "rule.name", "size": 1}},
                    "level": {"terms": {"field": "rule.level", "size": 1}},
                },
            },
            "hosts": terms("host.name"),
            "tactics": terms("threat.tactic.name"),
            "techniques": terms("threat.technique.id"),
            "kinds": {
                "filters": {
                    "filters": {
                        "correlation": {"term": {"event.category": "correlation"}},
                        "sensor_health": {"terms": {"rule.id": sorted(HEALTH_KIND_OF)}},
                        "detection_health": {"terms": {"rule.id": DETECTION_HEALTH_IDS}},
                    },
                    "other_bucket_key": "sigma",
                }
            },
        },
    }


def _buckets(aggs: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(aggs.get(name, {}).get("buckets", []))


def _first_key(bucket: dict[str, Any], name: str) -> str | None:
    keys = bucket.get(name, {}).get("buckets", [])
    return str(keys[0]["key"]) if keys else None


def shape_overview(resp: dict[str, Any], interval: str) -> dict[str, Any]:
    """The API's answer from the search response: plain lists, levels most severe first."""
    aggs = resp.get("aggregations") or {}
    series = []
    for b in _buckets(aggs, "over_time"):
        counts = {str(x["key"]) or "none": int(x["doc_count"]) for x in _buckets(b, "level")}
        series.append({"t": b["key_as_string"], "total": int(b["doc_count"]), "levels": counts})
    levels = {str(x["key"]) or "none": int(x["doc_count"]) for x in _buckets(aggs, "levels")}
    status = {s: 0 for s in ("open", "acknowledged", "closed")}
    status.update({str(x["key"]): int(x["doc_count"]) for x in _buckets(aggs, "status")})
    kinds = {
        k: int(v["doc_count"]) for k, v in (aggs.get("kinds", {}).get("buckets") or {}).items()
    }
    order = {lv: i for i, lv in enumerate(LEVELS)}
    top = lambda name: [  # noqa: E731
        {"key": str(x["key"]), "count": int(x["doc_count"])} for x in _buckets(aggs, name)
    ]
    return {
        "total": int(resp.get("hits", {}).get("total", {}).get("value", 0)),
        "timed_out": bool(resp.get("timed_out")),
        "interval": interval,
        "series": series,
        "levels": dict(sorted(levels.items(), key=lambda kv: order.get(kv[0], 9))),
        "status": status,
        "kinds": {
            k: kinds.get(k, 0)
            for k in ("sigma", "correlation", "sensor_health", "detection_health")
        },
        "top_rules": [
            {
                "id": str(x["key"]),
                "name": _first_key(x, "name") or str(x["key"]),
                "level": _first_key(x, "level"),
                "count": int(x["doc_count"]),
            }
            for x in _buckets(aggs, "rules")
        ],
        "top_hosts": top("hosts"),
        "top_tactics": top("tactics"),
        "top_techniques": top("techniques"),
    }


# --- sensor health ----------------------------------------------------------------------


def sensor_counts_query(caller: Caller) -> dict[str, Any]:
    """How many of the caller's sensors are in each state."""
    return {
        "size": 0,
        "query": {"bool": {"filter": tenant_filter_plain(caller)}},
        "aggs": {"states": {"terms": {"field": "state", "size": len(SENSOR_STATES)}}},
    }


def shape_counts(resp: dict[str, Any]) -> dict[str, int]:
    found = {
        b["key"]: int(b["doc_count"]) for b in _buckets(resp.get("aggregations") or {}, "states")
    }
    return {s: found.get(s, 0) for s in SENSOR_STATES}


def plan_sensor_page(
    counts: dict[str, int], state: str | None, page: int, size: int
) -> list[tuple[str, int, int]]:
    """(state, from, size) searches that make one page of sensors, worst state first:
    the states are concatenated silent, degraded, healthy (no scripts here to sort by a
    fixed order, so one bounded search per state the page touches)."""
    size = max(1, min(size, MAX_SENSOR_PAGE))
    start = (max(1, page) - 1) * size
    out: list[tuple[str, int, int]] = []
    offset = 0
    for s in (state,) if state else SENSOR_STATES:
        n = counts.get(s, 0)
        lo, hi = max(start, offset), min(start + size, offset + n)
        if hi > lo:
            out.append((s, lo - offset, hi - lo))
        offset += n
    return out


def sensors_query(caller: Caller, state: str, start: int, size: int) -> dict[str, Any]:
    """A slice of the caller's sensors in ``state``, stalest first."""
    return {
        "query": {"bool": {"filter": [*tenant_filter_plain(caller), {"term": {"state": state}}]}},
        "sort": [{"last_seen": {"order": "asc", "missing": "_first"}}, {"sensor_id": "asc"}],
        "from": start,
        "size": size,
    }


def health_findings_query(caller: Caller, top_hosts: int = 10) -> dict[str, Any]:
    """Open and acknowledged sensor-health findings of the caller by kind, with the hosts
    most affected and the newest one (what the sensor-health view lists per problem)."""
    return {
        "size": 0,
        "query": {
            "bool": {
                "filter": [
                    *tenant_filter(caller),
                    {"terms": {"rule.id": sorted(HEALTH_KIND_OF)}},
                    {"terms": {"sigstream.finding.status": ["open", "acknowledged"]}},
                ]
            }
        },
        "aggs": {
            "kinds": {
                "terms": {"field": "rule.id", "size": len(HEALTH_KIND_OF)},
                "aggs": {
                    "hosts": {"terms": {"field": "host.name", "size": top_hosts}},
                    "latest": {
                        "top_hits": {
                            "size": 1,
                            "sort": [{"@timestamp": "desc"}],
                            "_source": {
                                "includes": [
                                    "@timestamp",
                                    "host.name",
                                    "message",
                                    "sigstream.finding.id",
                                ]
                            },
                        }
                    },
                },
            }
        },
    }


def shape_health(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per health kind (every kind, zero when none), most findings first."""
    found = {b["key"]: b for b in _buckets(resp.get("aggregations") or {}, "kinds")}
    rows = []
    for kind, rule in HEALTH_RULES.items():
        b = found.get(rule.id)
        latest = b["latest"]["hits"]["hits"][0]["_source"] if b else None
        rows.append(
            {
                "kind": kind,
                "rule_id": rule.id,
                "name": rule.name,
                "level": rule.level,
                "description": rule.description,
                "count": int(b["doc_count"]) if b else 0,
                "hosts": [
                    {"key": str(h["key"]), "count": int(h["doc_count"])}
                    for h in _buckets(b or {}, "hosts")
                ],
                "latest": latest,
            }
        )
    rows.sort(key=lambda r: -r["count"])
    return rows


def sensor_problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with one sensor, in words an analyst scans: silent, gaps, resets,
    skew, stopped, lost event sources (from its status document)."""
    out: list[str] = []
    if doc.get("state") == "silent":
        out.append("silent")
    if doc.get("gaps"):
        out.append(f"gaps: {doc['gaps']} ({doc.get('missing', 0)} missing)")
    if doc.get("resets"):
        out.append(f"resets: {doc['resets']}")
    if doc.get("skewed"):
        skew = doc.get("skew_s")
        out.append(f"clock {doc['skewed']}" + ("" if skew is None else f" {skew:+.0f}s"))
    if doc.get("stop_reason"):
        out.append(f"stopped: {doc['stop_reason']}")
    lost = sorted(k for k, v in (doc.get("sources") or {}).items() if v not in ("ok", "running"))
    if lost:
        out.append("sources lost: " + ", ".join(lost))
    return out
