"""The triage page's view queries (triage/dashboard.py): bounded, tenant-scoped bodies and
the shaping of Elasticsearch's answers, without services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from detections.content.canary.finding_docs import NOT_FIRING_RULE_ID
from detections.content.deploy.demotion import DEMOTION_RULE_ID
from detections.drift.finding_docs import FIELD_DRIFT_RULE
from detections.health.finding_docs import HEALTH_RULES
from triage import dashboard
from triage.auth import Caller

ACME = Caller("alice", "analyst", "acme")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_interval_keeps_the_chart_within_its_bars() -> None:
    for span in (
        timedelta(minutes=5),
        timedelta(hours=24),
        timedelta(days=7),
        timedelta(days=30),
        timedelta(days=3650),
    ):
        name = dashboard.interval_for(T0, T0 + span)
        size = dict(dashboard.INTERVALS)[name]
        assert span / size <= dashboard.MAX_BUCKETS or name == dashboard.INTERVALS[-1][0]
    assert dashboard.interval_for(T0, T0 + timedelta(hours=24)) == "30m"
    assert dashboard.interval_for(T0, T0 + timedelta(days=7)) == "3h"
    assert dashboard.interval_for(T0, T0) == "1m"  # one instant: still a chart


def test_overview_query_is_tenant_scoped_bounded_and_timed() -> None:
    body = dashboard.overview_query(ACME, T0, T0 + timedelta(days=1), "30m", top=500, timeout_s=2)
    assert body["size"] == 0 and body["timeout"] == "2000ms"
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"sigstream.tenant_id": "acme"}} in filters
    assert filters[-1]["range"]["@timestamp"]["gte"].startswith("2026-12-01")
    aggs = body["aggs"]
    assert aggs["over_time"]["date_histogram"]["fixed_interval"] == "30m"
    assert aggs["over_time"]["date_histogram"]["extended_bounds"]["min"].startswith("2026-12-01")
    for name in ("rules", "hosts", "tactics", "techniques"):
        assert aggs[name]["terms"]["size"] == dashboard.MAX_TOP  # 500 asked, capped
    health_ids = aggs["kinds"]["filters"]["filters"]["sensor_health"]["terms"]["rule.id"]
    assert sorted(health_ids) == sorted(r.id for r in HEALTH_RULES.values())
    # Demotions, canaries not firing and field drift are not counted as Sigma findings.
    own = aggs["kinds"]["filters"]["filters"]["detection_health"]["terms"]["rule.id"]
    assert DEMOTION_RULE_ID in own and NOT_FIRING_RULE_ID in own and FIELD_DRIFT_RULE.id in own


def test_an_open_range_has_no_time_clause() -> None:
    body = dashboard.span_query(ACME, None, None)
    assert body["query"]["bool"]["filter"] == [{"term": {"sigstream.tenant_id": "acme"}}]


def _terms(*pairs: tuple[str, int]) -> dict[str, Any]:
    return {"buckets": [{"key": k, "doc_count": n} for k, n in pairs]}


def test_shape_overview() -> None:
    resp = {
        "hits": {"total": {"value": 9}},
        "aggregations": {
            "over_time": {
                "buckets": [
                    {
                        "key_as_string": "2026-12-01T00:00:00.000Z",
                        "doc_count": 3,
                        "levels": None,
                        "level": _terms(("high", 2), ("", 1)),
                    }
                ]
            },
            "levels": _terms(("low", 4), ("critical", 5)),
            "status": _terms(("open", 8), ("closed", 1)),
            "rules": {
                "buckets": [
                    {
                        "key": "r1",
                        "doc_count": 6,
                        "name": _terms(("Rule one", 6)),
                        "level": _terms(("low", 6)),
                    }
                ]
            },
            "hosts": _terms(("WS1", 7)),
            "tactics": _terms(("execution", 5)),
            "techniques": _terms(("T1059.001", 5)),
            "kinds": {
                "buckets": {
                    "correlation": {"doc_count": 1},
                    "sensor_health": {"doc_count": 2},
                    "sigma": {"doc_count": 6},
                    "detection_health": {"doc_count": 1},
                }
            },
        },
    }
    out = dashboard.shape_overview(resp, "1h")
    assert out["total"] == 9 and out["interval"] == "1h"
    assert out["series"] == [
        {"t": "2026-12-01T00:00:00.000Z", "total": 3, "levels": {"high": 2, "none": 1}}
    ]
    assert list(out["levels"]) == ["critical", "low"]  # most severe first
    assert out["status"] == {"open": 8, "acknowledged": 0, "closed": 1}
    assert out["kinds"] == {
        "sigma": 6,
        "correlation": 1,
        "sensor_health": 2,
        "detection_health": 1,
    }
    assert out["top_rules"] == [{"id": "r1", "name": "Rule one", "level": "low", "count": 6}]
    assert out["top_hosts"] == [{"key": "WS1", "count": 7}]


def test_shape_overview_of_nothing() -> None:
    out = dashboard.shape_overview({}, "1d")
    assert out["total"] == 0 and out["series"] == [] and out["top_rules"] == []
    assert out["status"] == {"open": 0, "acknowledged": 0, "closed": 0}


def test_sensor_pages_run_worst_state_first_across_states() -> None:
    counts = {"silent": 3, "degraded": 4, "healthy": 100}
    assert dashboard.plan_sensor_page(counts, None, 1, 5) == [("silent", 0, 3), ("degraded", 0, 2)]
    assert dashboard.plan_sensor_page(counts, None, 2, 5) == [("degraded", 2, 2), ("healthy", 0, 3)]
    assert dashboard.plan_sensor_page(counts, "healthy", 3, 10) == [("healthy", 20, 10)]
    assert dashboard.plan_sensor_page(counts, None, 99, 50) == []
    # a page is never larger than the cap, whatever is asked
    plan = dashboard.plan_sensor_page({"healthy": 10_000}, None, 1, 10_000)
    assert plan == [("healthy", 0, dashboard.MAX_SENSOR_PAGE)]


def test_sensor_queries_are_tenant_scoped() -> None:
    q = dashboard.sensors_query(ACME, "silent", 0, 10)
    assert {"term": {"tenant_id": "acme"}} in q["query"]["bool"]["filter"]
    assert {"term": {"state": "silent"}} in q["query"]["bool"]["filter"]
    counts = dashboard.sensor_counts_query(ACME)
    assert counts["query"]["bool"]["filter"] == [{"term": {"tenant_id": "acme"}}]
    health = dashboard.health_findings_query(ACME)
    assert {"term": {"sigstream.tenant_id": "acme"}} in health["query"]["bool"]["filter"]


def test_sensor_problems_in_words() -> None:
    doc = {
        "state": "silent",
        "gaps": 2,
        "missing": 40,
        "resets": 1,
        "skewed": "ahead",
        "skew_s": 3600.4,
        "stop_reason": "SIGTERM",
        "sources": {"exec": "ok", "file": "unavailable"},
    }
    assert dashboard.sensor_problems(doc) == [
        "silent",
        "gaps: 2 (40 missing)",
        "resets: 1",
        "clock ahead +3600s",
        "stopped: SIGTERM",
        "sources lost: file",
    ]
    assert dashboard.sensor_problems({"state": "healthy"}) == []


def test_shape_health_lists_every_kind() -> None:
    silent = HEALTH_RULES["silent"]
    resp = {
        "aggregations": {
            "kinds": {
                "buckets": [
                    {
                        "key": silent.id,
                        "doc_count": 2,
                        "hosts": _terms(("WS1", 2)),
                        "latest": {"hits": {"hits": [{"_source": {"host": {"name": "WS1"}}}]}},
                    }
                ]
            }
        }
    }
    rows = dashboard.shape_health(resp)
    assert rows[0]["kind"] == "silent"
    assert {r["kind"] for r in rows} == set(HEALTH_RULES)
    assert rows[0]["count"] == 2 and rows[0]["hosts"] == [{"key": "WS1", "count": 2}]
    assert all(r["count"] == 0 for r in rows[1:])


def test_base_findings_are_bounded_ordered_and_missing_ones_listed() -> None:
    from triage import store

    class OneSearch:
        def __init__(self) -> None:
            self.body: dict[str, Any] = {}

        def search(self, **body: Any) -> dict[str, Any]:
            self.body = body
            return {"hits": {"hits": hits}}

    hits = [
        {"_id": "m1", "_source": {"sigstream": {"group": {"id": "g1"}}, "rule": {"name": "B"}}},
        {
            "_id": "m0",
            "_source": {"sigstream": {"group": {"id": "g0"}, "match": {"keywords": ["x"]}}},
        },
    ]
    es = OneSearch()
    ids = [f"m{i}" for i in range(store.MAX_BASE_FINDINGS + 50)]
    store.base_findings(es, "f", ACME, {"sigstream": {"correlation": {"base_findings": ids}}})  # type: ignore[arg-type]
    assert len(es.body["query"]["bool"]["filter"][0]["ids"]["values"]) == store.MAX_BASE_FINDINGS
    assert {"term": {"sigstream.tenant_id": "acme"}} in es.body["query"]["bool"]["filter"]
    finding = {"sigstream": {"correlation": {"base_findings": ["m0", "m1", "gone"]}}}
    out = store.base_findings(es, "f", ACME, finding)  # type: ignore[arg-type]
    assert [i["finding_id"] for i in out if i["found"]] == ["g0", "g1"]
    assert out[0]["match"] == {"keywords": ["x"]}
    assert [i["id"] for i in out if not i["found"]] == ["gone"] and len(out) == 3
