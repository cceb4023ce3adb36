"""Correlation rules -> specs: types, conditions (incl. ranges), references by id and name,
and bad correlations quarantined with their reason while the others load."""

from __future__ import annotations

from pathlib import Path

import pytest

from detections.compiler.plan import DetectionPlan, load_plan, plan_rules
from detections.compiler.sigma_to_ir import compile_yaml
from detections.correlation.compile import (
    CorrelationSet,
    base_plan,
    compile_correlations,
    correlation_only_rules,
    load_correlations,
)
from detections.correlation.model import Condition

OWN = Path(__file__).resolve().parents[2] / "detections" / "correlation" / "rules"

BASE = """
title: Base A
id: 00000000-0000-4000-8000-00000000000a
name: base_a
logsource: {category: process_creation, product: windows}
detection: {sel: {Image|endswith: '\\\\a.exe'}, condition: sel}
level: low
---
title: Base B
id: 00000000-0000-4000-8000-00000000000b
name: base_b
logsource: {category: process_creation, product: windows}
detection: {sel: {Image|endswith: '\\\\b.exe'}, condition: sel}
level: low
---
title: Base C
id: 00000000-0000-4000-8000-00000000000c
logsource: {category: process_creation, product: windows}
detection: {sel: {Image|endswith: '\\\\c.exe'}, condition: sel}
level: low
"""
A, B, C = (f"00000000-0000-4000-8000-00000000000{x}" for x in "abc")


def correlation(body: str, rid: str = "00000000-0000-4000-8000-0000000000f1") -> str:
    return f"---\ntitle: Corr {rid[-2:]}\nid: {rid}\nlevel: high\ncorrelation:\n{body}"


def compile_text(text: str, base: str = BASE) -> tuple[DetectionPlan, CorrelationSet]:
    """Base rules in one file, correlations in another (pySigma refuses a whole file when
    one correlation has a range condition, so ranges live apart from their base rules)."""
    rules, rejections = compile_yaml(base, path="base.yml")
    plan = plan_rules(rules, rejections)
    return plan, compile_correlations([("base.yml", base), ("corr.yml", text)], plan)


def one(text: str):  # type: ignore[no-untyped-def]
    _, cs = compile_text(text)
    assert not cs.rejections, cs.rejections
    (spec,) = cs.specs
    return spec


def test_event_count_by_name_and_id_with_group_by_and_timespan() -> None:
    spec = one(
        correlation(
            f"  type: event_count\n  rules: [base_a, {B}]\n  group-by: [host, User]\n"
            "  timespan: 5m\n  condition: {gte: 10}\n"
        )
    )
    assert spec.type == "event_count"
    assert spec.rules == (A, B)
    assert spec.group_by == ("host", "User")
    assert spec.timespan_s == 300
    assert spec.condition == Condition((("gte", 10.0),))
    assert spec.generate is False
    assert spec.path == "corr.yml"


def test_value_count_needs_and_keeps_its_field() -> None:
    spec = one(
        correlation(
            "  type: value_count\n  rules: base_a\n  group-by: host\n  timespan: 1h\n"
            "  condition: {field: CommandLine, gt: 3}\n"
        )
    )
    assert spec.condition.field == "CommandLine"
    assert spec.condition.terms == (("gt", 3.0),)
    assert spec.timespan_s == 3600


def test_temporal_types_default_to_all_rules_in_order() -> None:
    spec = one(
        correlation(
            "  type: temporal_ordered\n  rules: [base_b, base_a]\n  group-by: host\n"
            "  timespan: 30s\n  generate: true\n"
        )
    )
    assert spec.type == "temporal_ordered"
    assert spec.rules == (B, A)  # the order of the rule, not of the files
    assert spec.condition.terms == (("gte", 2.0),)
    assert spec.generate is True


def test_range_condition_is_one_lower_and_one_upper_bound() -> None:
    spec = one(
        correlation(
            "  type: event_count\n  rules: base_a\n  timespan: 1m\n  condition: {gte: 3, lte: 5}\n"
        )
    )
    assert spec.condition.terms == (("gte", 3.0), ("lte", 5.0))
    assert [n for n in range(8) if spec.condition.holds(n)] == [3, 4, 5]
    assert not spec.condition.monotone


@pytest.mark.parametrize(
    ("op", "holding"),
    [("gt", [4, 5]), ("gte", [3, 4, 5]), ("lt", [0, 1, 2]), ("lte", [0, 1, 2, 3]), ("eq", [3])],
)
def test_condition_operators(op: str, holding: list[int]) -> None:
    cond = Condition(((op, 3.0),))
    assert [n for n in range(6) if cond.holds(n)] == holding
    assert cond.monotone == (op in ("gt", "gte"))


def test_bad_correlations_are_quarantined_with_reason_and_file_others_run() -> None:
    good = correlation(
        "  type: event_count\n  rules: base_a\n  timespan: 1m\n  condition: {gte: 2}\n"
    )
    bad_ref = correlation(
        "  type: event_count\n  rules: nope\n  timespan: 1m\n  condition: {gte: 2}\n",
        "00000000-0000-4000-8000-0000000000f2",
    )
    bad_type = correlation(
        "  type: value_sum\n  rules: base_a\n  timespan: 1m\n  condition: {field: X, gte: 2}\n",
        "00000000-0000-4000-8000-0000000000f3",
    )
    bad_range = correlation(
        "  type: event_count\n  rules: base_a\n  timespan: 1m\n  condition: {gte: 2, gt: 3}\n",
        "00000000-0000-4000-8000-0000000000f4",
    )
    chained = correlation(
        "  type: event_count\n  rules: 00000000-0000-4000-8000-0000000000f1\n  timespan: 1m\n"
        "  condition: {gte: 2}\n",
        "00000000-0000-4000-8000-0000000000f5",
    )
    _, cs = compile_text(good + bad_ref + bad_type + bad_range + chained)
    # issue 18: value_sum (f3) and a correlation of a correlation (f5) are supported now
    # (they were quarantined as unsupported_type / chained_correlation before); the
    # refusals of every type and chain are in tests/unit/test_correlation_types.py.
    assert [s.id for s in cs.specs] == [
        "00000000-0000-4000-8000-0000000000f1",
        "00000000-0000-4000-8000-0000000000f3",
        "00000000-0000-4000-8000-0000000000f5",
    ]
    reasons = {r.rule_id: r.reason for r in cs.rejections}
    assert reasons == {
        "00000000-0000-4000-8000-0000000000f2": "unknown_rule",
        "00000000-0000-4000-8000-0000000000f4": "bad_condition",
    }
    assert all(r.message.startswith("corr.yml") for r in cs.rejections)


def test_reference_to_a_refused_base_rule_says_why() -> None:
    text = correlation(
        "  type: event_count\n  rules: base_a\n  timespan: 1m\n  condition: {gte: 2}\n"
    )
    _, cs = compile_text(text, BASE.replace("Image|endswith", "NoSuchField"))
    (rejection,) = cs.rejections
    assert rejection.reason == "base_rule_not_loaded"
    assert "unknown_field" in rejection.message


def test_aliases_map_a_group_by_name_to_each_rules_field() -> None:
    spec = one(
        correlation(
            "  type: temporal\n  rules: [base_a, base_b]\n  group-by: [who]\n  timespan: 1m\n"
            "  aliases:\n    who:\n      base_a: User\n      base_b: ParentUser\n"
        )
    )
    assert spec.field_for(A, "who") == "User"
    assert spec.field_for(B, "who") == "ParentUser"
    assert spec.field_for(A, "host") == "host"


def test_correlation_only_rules_are_generate_false_bases_not_used_elsewhere() -> None:
    silent = correlation(
        "  type: event_count\n  rules: [base_a, base_b]\n  timespan: 1m\n  condition: {gte: 2}\n"
    )
    loud = correlation(
        f"  type: temporal\n  rules: [base_b, {C}]\n  timespan: 1m\n  generate: true\n",
        "00000000-0000-4000-8000-0000000000f2",
    )
    plan, cs = compile_text(silent + loud)
    only = correlation_only_rules(plan, cs.specs)
    assert {str(plan.rules[i].rule.id) for i in only} == {A}
    sub = base_plan(plan, cs.specs)
    assert sorted(str(p.rule.id) for p in sub.rules) == [A, B, C]
    assert [p.index for p in sub.rules] == [0, 1, 2]


def test_the_projects_own_correlations_load() -> None:
    plan = load_plan([OWN])
    cs = load_correlations([OWN], plan)
    assert not cs.rejections
    assert {s.type for s in cs.specs} == {"event_count", "value_count", "temporal_ordered"}
    assert {r.reason for r in plan.rejections} == {"correlation_rule"}


def test_a_correlation_over_a_rule_the_engine_refuses_is_quarantined_others_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from detections.compiler import sigma_to_ir
    from detections.correlation.query import runnable

    # Compiler and engine both run regexes on RE2 now, and the compiler refuses what the
    # engine cannot run. To stand in for a gap between them (content compiled by an older
    # compiler), its check is switched off: ``a{,1001}`` is Python's {0,1001}, past RE2's
    # repeat limit of 1,000, so the engine refuses it.
    monkeypatch.setattr(sigma_to_ir, "regex_refusal", lambda *args: None)
    refused = BASE.replace("Image|endswith: '\\\\c.exe'", "CommandLine|re: 'a{,1001}'")
    assert refused != BASE
    ok = correlation(
        "  type: event_count\n  rules: base_a\n  timespan: 1m\n  condition: {gte: 2}\n"
    )
    bad = correlation(
        f"  type: temporal\n  rules: [base_a, {C}]\n  timespan: 1m\n",
        "00000000-0000-4000-8000-0000000000f2",
    )
    plan, cs = compile_text(ok + bad, refused)
    assert len(cs.specs) == 2  # the compiler accepts the regex; the engine does not
    content = runnable(plan, cs.specs, cs.rejections)
    assert [s.id for s in content.specs] == ["00000000-0000-4000-8000-0000000000f1"]
    (rejection,) = content.rejections
    assert rejection.reason == "base_rule_quarantined" and C in rejection.message
    assert [str(p.rule.id) for p in content.plan.rules] == [A]


def test_references_and_false_positives_reach_the_correlation_finding() -> None:
    from detections.correlation.finding_docs import rule_info

    text = correlation(
        "  type: event_count\n  rules: [base_a]\n  group-by: [host]\n"
        "  timespan: 5m\n  condition: {gte: 3}\n"
    ).replace(
        "level: high\n",
        "level: high\nreferences: [https://example.org/a]\nfalsepositives: [Patch days]\n",
    )
    spec = one(text)
    info = rule_info(spec)
    assert (info.references, info.falsepositives) == (["https://example.org/a"], ["Patch days"])
