"""`sigstream sensors` formatting and query building (the Elasticsearch side is covered by
tests/integration/test_sensor_health.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from sigstream.commands.sensors import _age, sensors_query, sort_rows, sources_cell, table_row

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_query_filters_by_state_and_tenant() -> None:
    assert sensors_query(None, None, include_reserved=True) == {"match_all": {}}
    q = sensors_query("silent", "acme")
    assert q["bool"]["filter"] == [{"term": {"state": "silent"}}, {"term": {"tenant_id": "acme"}}]


def test_the_canary_sensor_is_left_out_unless_asked_for() -> None:
    hidden = {"bool": {"must_not": [{"prefix": {"tenant_id": "_"}}]}}
    assert sensors_query(None, None)["bool"]["filter"] == [hidden]
    assert sensors_query("healthy", None)["bool"]["filter"][1] == hidden
    assert sensors_query(None, "_canary")["bool"]["filter"] == [{"term": {"tenant_id": "_canary"}}]


def test_age_and_row() -> None:
    assert _age(None, NOW) == "never"
    assert _age("2026-11-27T11:59:18+00:00", NOW) == "42s"
    assert _age("2026-11-27T09:00:00Z", NOW) == "3h"
    doc = {
        "tenant_id": "acme",
        "sensor_id": "ws01",
        "host": "WS01",
        "last_seen": "2026-11-27T11:55:00+00:00",
        "events": 12345,
        "rate": 1.5,
        "gaps": 2,
        "missing": 7,
        "resets": 1,
        "skew_s": -320.4,
        "state": "degraded",
    }
    assert table_row(doc, NOW) == [
        "acme",
        "ws01",
        "WS01",
        "5m",
        "12,345",
        "1.50/s",
        "2 (7 missing)",
        "1",
        "-320s",
        "",
        "degraded",
    ]


def test_sources_cell_puts_the_sources_that_are_not_ok_first() -> None:
    assert sources_cell(None) == ""
    assert sources_cell({"execs": "ok", "files": "ok", "network": "ok"}) == "3 ok"
    assert (
        sources_cell({"execs": "ok", "files": "degraded: fanotify unavailable", "auditd": "lost"})
        == "auditd: lost; files: degraded: fanotify unavailable; 1 ok"
    )


def test_worst_state_first() -> None:
    docs = [
        {"tenant_id": "t", "sensor_id": "b", "state": "healthy"},
        {"tenant_id": "t", "sensor_id": "c", "state": "silent"},
        {"tenant_id": "t", "sensor_id": "a", "state": "degraded"},
    ]
    assert [d["state"] for d in sort_rows(docs)] == ["silent", "degraded", "healthy"]
