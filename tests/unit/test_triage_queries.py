"""The findings summary query puts severity first."""

from __future__ import annotations

from triage.queries import LEVEL_ORDER, summary_aggregation


def test_summary_groups_by_level_before_rule() -> None:
    aggs = summary_aggregation(10)
    by_level = aggs["by_level"]
    assert by_level["terms"]["field"] == "rule.level"
    by_rule = by_level["aggs"]["by_rule"]
    assert by_rule["terms"] == {"field": "rule.name", "size": 10, "order": {"_count": "desc"}}
    assert by_rule["aggs"]["hosts"]["terms"]["field"] == "host.name"


def test_levels_sort_most_severe_first() -> None:
    assert sorted(LEVEL_ORDER, key=LEVEL_ORDER.__getitem__)[:2] == ["critical", "high"]
