"""Field drift's pure parts: observing fields on Arrow batches, folding them into route
state, judging against a baseline (gone, type changed, no traffic), crossing with rules."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from detections.compiler.logsources import Route
from detections.drift.finding_docs import FIELD_DRIFT_RULE, drift_finding
from detections.drift.observe import FieldObservations, ObservationError, decode
from detections.drift.report import RuleFields, build_report, never_seen, rules_using
from detections.drift.state import DriftConfig, baseline_of, drifts, fold, new_route_state
from schemas.generate import arrow_event_schema

PC = {"product": "windows", "category": "process_creation", "service": None}
ROUTE = ("windows", "process_creation", None)
CFG = DriftConfig(expected=20, min_events=50)


def _event(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": "process_creation",
        "tenant_id": "acme",
        "sensor_id": f"ws{i % 3}",
        "logsource": PC,
        "EventID": 1,
        **fields,
    }


def _observe(rows: list[dict[str, Any]]) -> Any:
    obs = FieldObservations()
    obs.add(pa.Table.from_pylist(rows, schema=arrow_event_schema()).to_batches()[0])
    return obs


def _state_after(*batches: list[dict[str, Any]], now: float = 1000.0) -> dict[str, Any]:
    state = new_route_state("acme", ROUTE)
    for rows in batches:
        for o in _observe(rows).observations():
            if o.route == ROUTE:
                fold(state, o, now)
    return state


def normal(n: int) -> list[dict[str, Any]]:
    return [
        _event(i, CommandLine=f"cmd /c {i}", Image="C:\\x.exe", extra={"LogonType": "3"})
        for i in range(n)
    ]


def renamed(n: int) -> list[dict[str, Any]]:
    return [
        _event(i, Image="C:\\x.exe", extra={"CommandLin3": f"cmd /c {i}", "LogonType": "3"})
        for i in range(n)
    ]


def test_observes_typed_columns_extra_keys_types_sensors_and_versions() -> None:
    rows = [
        *normal(4),
        {
            "event_type": "heartbeat",
            "tenant_id": "acme",
            "sensor_id": "ws1",
            "logsource": {"product": "sigstream", "category": None, "service": "heartbeat"},
            "agent_version": "sensor/2.0",
        },
    ]
    records = {(o.route, o.version): o for o in _observe(rows).observations()}
    # ws1's heartbeat (same batch) labels its events with its version; the others are
    # "unknown" (no heartbeat yet).
    assert {k for k in records if k[0] == ROUTE} == {(ROUTE, "unknown"), (ROUTE, "sensor/2.0")}
    pc, new = records[(ROUTE, "unknown")], records[(ROUTE, "sensor/2.0")]
    assert (pc.rows, new.rows) == (3, 1)
    assert pc.fields["CommandLine"] == [3, 0, 0] and new.fields["CommandLine"] == [1, 0, 0]
    assert pc.fields["EventID"] == [3, 3, 0]  # a typed number column
    assert pc.fields["LogonType"] == [3, 3, 0]  # a key of extra whose text is a number
    assert "ParentImage" not in pc.fields  # null on every row: absent
    assert pc.sensors == {"ws0", "ws2"} and new.sensors == {"ws1"}
    beat = records[(("sigstream", "heartbeat", "heartbeat"), "sensor/2.0")]
    assert beat.versions == {"ws1": "sensor/2.0"}
    # The record survives its topic (compact JSON, versioned).
    again = decode(new.to_json())
    assert again.fields == new.fields and again.route == ROUTE
    assert again.version == "sensor/2.0"


def test_types_are_read_on_a_sample_per_route_and_scaled() -> None:
    linux = {"product": "linux", "category": "process_creation", "service": None}
    rows = []
    for i in range(40):  # interleaved routes: each gets its own sample
        rows.append(_event(i, ProcessId=str(i) if i < 30 else f"p{i}"))
        rows.append({**_event(i, ProcessId=f"x{i}"), "logsource": linux})
    obs = FieldObservations(sample=10)
    obs.add(pa.Table.from_pylist(rows, schema=arrow_event_schema()).to_batches()[0])
    found = {o.route[0]: o.fields["ProcessId"] for o in obs.observations()}
    assert found == {"windows": [40, 40, 0], "linux": [40, 0, 0]}  # first 10: scaled
    exact = FieldObservations(sample=64)
    exact.add(pa.Table.from_pylist(rows, schema=arrow_event_schema()).to_batches()[0])
    assert {o.route[0]: o.fields["ProcessId"] for o in exact.observations()} == {
        "windows": [40, 30, 0],
        "linux": [40, 0, 0],
    }


def test_bad_records_are_refused_with_a_reason() -> None:
    for raw in (b"nope", b'{"v": 2}', b'{"v":1,"tenant":"a","route":[1,2,3],"n":1}'):
        with pytest.raises(ObservationError):
            decode(raw)


def test_a_renamed_field_is_gone_and_the_new_name_is_not_judged() -> None:
    state = _state_after(normal(200))
    baseline = baseline_of(state, "b1", 1000.0)
    state = _state_after(normal(200), renamed(100))
    found = drifts(state, baseline, CFG, {"ws0": "sensor/2.0"})
    assert [(d.kind, d.field) for d in found] == [("gone", "CommandLine")]
    gone = found[0]
    assert gone.since == 100 and gone.expected == pytest.approx(100.0)
    assert gone.sensors == ("ws0", "ws1", "ws2")
    assert gone.versions == ("sensor/2.0", "unknown")


def test_a_route_without_traffic_since_the_baseline_never_raises() -> None:
    state = _state_after(normal(200))
    baseline = baseline_of(state, "b1", 1000.0)
    assert drifts(state, baseline, CFG) == []  # nothing since: nothing is gone


def test_too_few_events_or_a_rare_field_is_not_judged_yet() -> None:
    state = _state_after(normal(200))
    baseline = baseline_of(state, "b1", 1000.0)
    assert drifts(_state_after(normal(200), renamed(30)), baseline, CFG) == []  # < min_events
    # A field on 5 % of events: 100 events without it predict 5 occurrences, not 20.
    rare = [_event(i, Image="x", ParentUser="u" if i % 20 == 0 else None) for i in range(400)]
    state = _state_after(rare)
    baseline = baseline_of(state, "b1", 1000.0)
    without = [_event(i, Image="x") for i in range(100)]
    assert drifts(_state_after(rare, without), baseline, CFG) == []
    gone = drifts(_state_after(rare, without * 5), baseline, CFG)
    assert [(d.kind, d.field) for d in gone] == [("gone", "ParentUser")]


def test_a_type_change_since_the_baseline() -> None:
    numbers = [_event(i, extra={"LogonType": "3"}) for i in range(100)]
    words = [_event(i, extra={"LogonType": "Network"}) for i in range(100)]
    state = _state_after(numbers)
    baseline = baseline_of(state, "b1", 1000.0)
    found = drifts(_state_after(numbers, words), baseline, CFG)
    assert [(d.kind, d.field, d.before, d.after) for d in found] == [
        ("type_changed", "LogonType", ("number",), ("string",))
    ]
    assert drifts(_state_after(numbers, numbers), baseline, CFG) == []


def _rule(rule_id: str, fields: set[str], route: Route | None = None) -> RuleFields:
    route = route or Route("windows", ("process_creation",), None)
    return RuleFields(rule_id, f"rule {rule_id}", "high", route, frozenset(fields))


def test_rules_named_are_those_reading_the_field_on_a_covering_route() -> None:
    rules = [
        _rule("a", {"CommandLine"}),
        _rule("b", {"Image"}),
        _rule("c", {"CommandLine"}, Route("windows", ("image_load",), None)),
        _rule("d", {"CommandLine", "Image"}, Route(None, ("process_creation",), None)),
        _rule("e", {"CommandLine"}, Route("linux", ("process_creation",), None)),
    ]
    assert [r.rule_id for r in rules_using(rules, ROUTE, "CommandLine")] == ["a", "d"]
    state = _state_after(normal(200))
    baseline = baseline_of(state, "b1", 1000.0)
    state = _state_after(normal(200), renamed(100))
    report = build_report(
        rules,
        [state],
        {("acme", state["route"], "unknown"): baseline},
        {"acme": {"baseline_id": "b1"}},
        CFG,
    )
    assert [(d.field, [r.rule_id for r in users]) for d, users in report.gone] == [
        ("CommandLine", ["a", "d"])
    ]
    assert [r.rule_id for r in report.no_traffic] == ["c", "e"]


def test_rules_with_fields_no_event_carried() -> None:
    rules = [_rule("a", {"CommandLine", "OriginalFileName"}), _rule("b", {"Image"})]
    missing, silent = never_seen(rules, [_state_after(normal(10))])
    assert [(m.rule.rule_id, m.fields) for m in missing] == [("a", ("OriginalFileName",))]
    assert silent == []


def test_the_finding_is_deterministic_per_route_field_and_baseline() -> None:
    state = _state_after(normal(200))
    baseline = baseline_of(state, "b1", 1000.0)
    gone = drifts(_state_after(normal(200), renamed(100)), baseline, CFG)[0]
    users = [_rule("a", {"CommandLine"})]
    first = drift_finding(gone, users, 2000.0)
    later = drift_finding(gone, users, 9000.0)
    assert first.sigstream.finding.id == later.sigstream.finding.id
    assert first.rule.id == FIELD_DRIFT_RULE.id
    assert first.sigstream.event["field"] == "CommandLine"
    assert first.sigstream.event["rules"] == [{"id": "a", "title": "rule a"}]
    other = drifts(_state_after(normal(200), renamed(100)), {**baseline, "baseline_id": "b2"}, CFG)
    assert drift_finding(other[0], users, 2000.0).sigstream.finding.id != first.sigstream.finding.id


def test_rules_the_pass_quarantined_are_not_active(tmp_path: Any) -> None:
    from detections.drift.stage import with_quarantine

    rules = [_rule("a", {"CommandLine"}), _rule("b", {"CommandLine"})]
    assert with_quarantine(rules, None) == rules
    status = tmp_path / "status.json"
    status.write_text('{"quarantined": [{"rule_id": "b", "title": "t", "reason": "r"}]}')
    assert [r.active for r in with_quarantine(rules, status)] == [True, False]
    assert [
        r.rule_id for r in rules_using(with_quarantine(rules, status), ROUTE, "CommandLine", True)
    ] == ["a"]
    status.write_text("not json")  # unreadable: every rule stays active, with a warning
    assert [r.active for r in with_quarantine(rules, status)] == [True, True]


def test_cli_filters_by_route_and_rule() -> None:
    from detections.drift.report import matches_filters

    rules = [_rule("abc", {"CommandLine"})]
    assert matches_filters("windows/process_creation/sysmon", rules, "process_creation", None)
    assert not matches_filters("windows/image_load/sysmon", rules, "process_creation", None)
    assert matches_filters("x", rules, None, "ABC") and matches_filters("x", rules, None, "rule a")
    assert not matches_filters("x", rules, None, "other")
