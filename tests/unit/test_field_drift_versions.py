"""Field drift per sensor version, the pure parts: the driver's sensor -> version map,
observing rows per (route, version), records v1/v2, buckets per (tenant, route, version),
and the judgement of a version against its own baseline or the route's across versions
(the rollout that renames a field while old sensors still send it)."""

from __future__ import annotations

import pickle
from typing import Any

import pyarrow as pa
import pytest

from detections.compiler.logsources import Route
from detections.drift.finding_docs import drift_finding
from detections.drift.observe import FieldObservations, ObservationError, decode
from detections.drift.report import RuleFields, build_report
from detections.drift.state import (
    MAX_ROUTE_VERSIONS,
    DriftConfig,
    TenantState,
    across_versions,
    baseline_of,
    fold,
    judge,
    new_route_state,
)
from detections.drift.versions import SensorVersions, sensor_key, version_label
from schemas.generate import arrow_event_schema

PC = {"product": "windows", "category": "process_creation", "service": None}
ROUTE = ("windows", "process_creation", None)
NAME = "windows/process_creation/-"
CFG = DriftConfig(expected=20, min_events=50)
OLD, NEW = "sensor/1.4", "sensor/2.0"
#: ws-old* run 1.4, ws-new* 2.0 (the driver's map, as shipped to a task)
KNOWN = {sensor_key("acme", f"ws-old{i}"): OLD for i in range(3)} | {
    sensor_key("acme", f"ws-new{i}"): NEW for i in range(3)
}


def _event(sensor: str, i: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": "process_creation",
        "tenant_id": "acme",
        "sensor_id": sensor,
        "logsource": PC,
        "EventID": 1,
        **fields,
    }


def normal(n: int, who: str = "ws-old") -> list[dict[str, Any]]:
    return [
        _event(f"{who}{i % 3}", i, CommandLine=f"cmd /c {i}", Image="C:\\x.exe") for i in range(n)
    ]


def renamed(n: int, who: str = "ws-new") -> list[dict[str, Any]]:
    return [
        _event(f"{who}{i % 3}", i, Image="C:\\x.exe", extra={"CommandLin3": f"cmd /c {i}"})
        for i in range(n)
    ]


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.Table.from_pylist(rows, schema=arrow_event_schema()).to_batches()[0]


def _observe(rows: list[dict[str, Any]], known: dict[str, str] | None = KNOWN) -> Any:
    obs = FieldObservations(versions=known)
    obs.add(_batch(rows))
    return obs


def _fold(states: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    for o in _observe(rows).observations():
        if o.route == ROUTE:
            state = states.setdefault(o.version, new_route_state("acme", ROUTE, o.version))
            fold(state, o, 1000.0)


def _baselines(states: dict[str, dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
    docs = {v: baseline_of(s, "b1", 1000.0) for v, s in states.items()}
    out = {("acme", NAME, v): d for v, d in docs.items()}
    out[("acme", NAME, "*")] = across_versions(docs.values())
    return out


def test_the_driver_map_is_bounded_keeps_the_latest_and_ships_when_changed() -> None:
    versions = SensorVersions(cap=3)
    assert versions.update("acme", {"a": "1", "b": "1", "c": None}) == 2  # None: unknown
    assert versions.update("acme", {"a": "1"}) == 0 and versions.generation == 1
    versions.update("acme", {"c": "2", "d": "2"})  # over the cap: "a", least recent, goes
    assert versions.snapshot() == {sensor_key("acme", s): v for s, v in ["b1", "c2", "d2"]}
    assert version_label("*") == "other" and version_label("  ") == "unknown"
    assert len(version_label("x" * 500)) == 64
    assert version_label("2.0\x1fevil\n") == "2.0?evil?"  # never the records' separator
    again = pickle.loads(pickle.dumps(versions))  # no lock in the pickle
    assert again.snapshot() == versions.snapshot() and again.update("acme", {"e": "3"}) == 1

    shipped: list[dict[str, str]] = []

    def broadcast(value: dict[str, str]) -> list[dict[str, str]]:
        shipped.append(value)
        return [value]

    first = versions.shipped(broadcast, now=0.0)
    assert versions.shipped(broadcast, now=100.0) is first  # unchanged: not shipped again
    versions.update("acme", {"b": "9"})
    assert versions.shipped(broadcast, now=1.0) is first  # changed, but < REFRESH_S after
    assert versions.shipped(broadcast, now=200.0) is not first and len(shipped) == 2
    assert shipped[-1][sensor_key("acme", "b")] == "9"


def test_rows_are_grouped_by_their_sensors_version() -> None:
    rows = normal(6) + renamed(3) + [_event("ws-other", 0, CommandLine="x")]
    found = {(o.route, o.version): o for o in _observe(rows).observations()}
    assert {k[1] for k in found} == {OLD, NEW, "unknown"}
    old, new = found[(ROUTE, OLD)], found[(ROUTE, NEW)]
    assert (old.rows, new.rows, found[(ROUTE, "unknown")].rows) == (6, 3, 1)
    assert "CommandLine" in old.fields and "CommandLine" not in new.fields
    assert new.fields["CommandLin3"] == [3, 0, 0]
    assert new.sensors == {"ws-new0", "ws-new1", "ws-new2"}
    # Without a map (and without heartbeats), everything is "unknown", as before.
    assert {o.version for o in _observe(rows, None).observations()} == {"unknown"}


def test_a_heartbeat_in_the_task_overrides_the_drivers_map() -> None:
    beat = {
        "event_type": "heartbeat",
        "tenant_id": "acme",
        "sensor_id": "ws-old0",
        "logsource": {"product": "sigstream", "category": None, "service": "heartbeat"},
        "agent_version": "sensor/3.0",
    }
    obs = FieldObservations(versions=KNOWN)
    obs.add(_batch([beat, *normal(3)]))  # the heartbeat labels its own batch
    obs.add(_batch(normal(3)))  # ... and the task's later batches
    by_version = {o.version: o.rows for o in obs.observations() if o.route == ROUTE}
    assert by_version == {"sensor/3.0": 2, OLD: 4}
    assert obs.heartbeats() == [["acme", "ws-old0", "sensor/3.0"]]


def test_versions_beyond_a_tasks_bound_are_other() -> None:
    known = {sensor_key("acme", f"s{i}"): f"v{i}" for i in range(10)}
    obs = FieldObservations(versions=known, max_versions=4)  # "unknown" + 3 versions
    obs.add(_batch([_event(f"s{i}", i, Image="x") for i in range(10)]))
    counts = {o.version: o.rows for o in obs.observations()}
    assert counts == {"v0": 1, "v1": 1, "v2": 1, "other": 7}


def test_records_of_version_1_are_read_as_unknown_and_bad_versions_refused() -> None:
    v1 = b'{"v":1,"tenant":"a","route":["windows","process_creation",null],"n":3,"f":{}}'
    assert decode(v1).version == "unknown" and decode(v1).rows == 3
    v2 = v1.replace(b'"v":1', b'"v":2').replace(b'"n":3', b'"ver":"s/2","n":3')
    assert decode(v2).version == "s/2"
    for bad in (
        v1.replace(b'"v":1', b'"v":true'),
        v1.replace(b'"v":1', b'"v":3'),
        v2.replace(b'"ver":"s/2"', b'"ver":7'),
        v2.replace(b'"ver":"s/2"', b'"ver":""'),
        v2.replace(b'"ver":"s/2"', b'"ver":"' + b"x" * 65 + b'"'),
    ):
        with pytest.raises(ObservationError):
            decode(bad)
    new = _observe(renamed(3)).observations()[0]
    assert decode(new.to_json()).version == NEW


def test_a_new_version_renaming_a_field_drifts_while_the_old_one_still_sends_it() -> None:
    states: dict[str, dict[str, Any]] = {}
    _fold(states, normal(200))  # the fleet on 1.4
    baselines = _baselines(states)
    _fold(states, normal(100) + renamed(100))  # 2.0 rolls out on some sensors
    found = judge(list(states.values()), baselines, CFG)
    assert [(d.kind, d.field, d.version, d.against) for d in found] == [
        ("gone", "CommandLine", NEW, "route")
    ]
    gone = found[0]
    assert gone.since == 100 and gone.expected == pytest.approx(100.0)
    assert gone.still_sent_by == (OLD,)
    assert gone.sensors == ("ws-new0", "ws-new1", "ws-new2")


def test_a_new_version_sending_every_field_does_not_drift() -> None:
    states: dict[str, dict[str, Any]] = {}
    _fold(states, normal(200))
    baselines = _baselines(states)
    _fold(states, normal(100) + normal(100, "ws-new"))
    assert judge(list(states.values()), baselines, CFG) == []


def test_a_version_in_the_baseline_is_judged_against_its_own() -> None:
    states: dict[str, dict[str, Any]] = {}
    # 1.4 sends CommandLine; 2.0, already in the baseline, never did: not a drift of 2.0.
    _fold(states, normal(200) + renamed(100))
    baselines = _baselines(states)
    _fold(states, normal(100) + renamed(100))
    assert judge(list(states.values()), baselines, CFG) == []
    # 1.4 itself stops sending it: a drift of 1.4 against 1.4's baseline.
    _fold(states, renamed(100, "ws-old"))
    found = judge(list(states.values()), baselines, CFG)
    assert [(d.field, d.version, d.against, d.still_sent_by) for d in found] == [
        ("CommandLine", OLD, "version", ())
    ]


def test_a_version_with_a_tiny_baseline_is_judged_against_the_route() -> None:
    states: dict[str, dict[str, Any]] = {}
    _fold(states, normal(200) + renamed(3))  # 3 events of 2.0: too few to be its own norm
    baselines = _baselines(states)
    _fold(states, normal(100) + renamed(100))
    found = judge(list(states.values()), baselines, CFG)
    assert [(d.field, d.version, d.against, d.since) for d in found] == [
        ("CommandLine", NEW, "route", 100)
    ]


def test_an_old_baseline_without_versions_still_judges_the_unknown_bucket() -> None:
    state = new_route_state("acme", ROUTE)  # documents written before versions: "unknown"
    for o in _observe(normal(200), None).observations():
        fold(state, o, 1000.0)
    old = baseline_of(state, "b0", 1000.0)
    del old["version"], state["version"]
    for o in _observe(renamed(100), None).observations():
        fold(state, o, 1000.0)
    found = judge([state], {("acme", NAME, "unknown"): old}, CFG)
    assert [(d.field, d.version, d.against) for d in found] == [
        ("CommandLine", "unknown", "version")
    ]


def test_a_routes_versions_are_bounded() -> None:
    tenant = TenantState("acme")
    kept = [tenant.bucket(NAME, f"v{i}") for i in range(MAX_ROUTE_VERSIONS + 5)]
    assert kept[:MAX_ROUTE_VERSIONS] == [f"v{i}" for i in range(MAX_ROUTE_VERSIONS)]
    assert set(kept[MAX_ROUTE_VERSIONS:]) == {"other"}
    assert tenant.bucket(NAME, "v0") == "v0"
    again = TenantState.of(tenant.to_doc(), "acme")
    assert again.bucket(NAME, "v-late") == "other"


def test_the_report_and_the_finding_name_the_version_and_the_rules() -> None:
    states: dict[str, dict[str, Any]] = {}
    _fold(states, normal(200))
    baselines = _baselines(states)
    _fold(states, normal(100) + renamed(100))
    route = Route("windows", ("process_creation",), None)
    rules = [
        RuleFields("a", "rule a", "high", route, frozenset({"CommandLine"})),
        RuleFields("b", "rule b", "high", route, frozenset({"Image"})),
    ]
    report = build_report(
        rules, list(states.values()), baselines, {"acme": {"baseline_id": "b1"}}, CFG
    )
    assert [(d.version, d.field, [r.rule_id for r in users]) for d, users in report.gone] == [
        (NEW, "CommandLine", ["a"])
    ]
    assert report.to_dict()["gone"][0]["version"] == NEW
    drift, users = report.gone[0]
    finding = drift_finding(drift, users, 2000.0)
    event = finding.sigstream.event
    assert event["sensor_version"] == NEW and event["compared_with"] == "route"
    assert event["still_sent_by"] == [OLD] and event["rules"] == [{"id": "a", "title": "rule a"}]
    assert f"sensor version {NEW} (still sent by {OLD})" in finding.message
    # One finding per version: another version's drift of the same field is its own.
    other = drift_finding(type(drift)(**{**drift.__dict__, "version": "s/3"}), users, 2000.0)
    assert other.sigstream.finding.id != finding.sigstream.finding.id


def test_a_hostile_version_string_cannot_break_the_grouping() -> None:
    beat = {
        "event_type": "heartbeat",
        "tenant_id": "acme",
        "sensor_id": "ws-old0",
        "logsource": {"product": "sigstream", "category": None, "service": "heartbeat"},
        "agent_version": "9\x1fwindows\x1fx" + "y" * 300,
    }
    obs = FieldObservations(versions=KNOWN)
    obs.add(_batch([beat, *normal(3)]))
    versions = {o.version for o in obs.observations() if o.route == ROUTE}
    assert versions == {OLD, "9?windows?x" + "y" * 53}
    for o in obs.observations():
        assert decode(o.to_json()).version == o.version
