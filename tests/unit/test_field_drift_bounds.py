"""Field drift's review fixes: heartbeats read once per batch and sanitised wherever they
go, the dead sensor count gone from records, routes bounded (part length, per task, per
tenant), and a damaged status file's quarantined entries skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from detections.compiler.logsources import Route
from detections.drift.observe import (
    MAX_ROUTE_PART_LEN,
    FieldObservations,
    Observation,
    decode,
    other_route,
    route_key,
)
from detections.drift.report import RuleFields
from detections.drift.state import MAX_TENANT_ROUTES, TenantState, fold, new_route_state
from detections.drift.versions import SEP, sensor_key
from detections.stream.status import quarantined_ids, quarantined_reasons
from schemas.drift import DriftDoc
from schemas.generate import arrow_event_schema


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.Table.from_pylist(rows, schema=arrow_event_schema()).to_batches()[0]


def _event(sensor: str, product: str = "windows", service: str | None = "sysmon") -> dict:
    return {
        "event_type": "process_creation",
        "tenant_id": "acme",
        "sensor_id": sensor,
        "logsource": {"product": product, "category": "process_creation", "service": service},
        "EventID": 1,
        "Image": "C:\\x.exe",
    }


def _beat(sensor: str, version: str) -> dict:
    return {
        "event_type": "heartbeat",
        "tenant_id": "acme",
        "sensor_id": sensor,
        "logsource": {"product": "sigstream", "category": None, "service": "heartbeat"},
        "agent_version": version,
    }


def test_a_heartbeat_is_sanitised_in_the_record_the_tasks_map_and_the_tenant_state() -> None:
    raw = "  2.0\x1fevil\n" + "x" * 200
    obs = FieldObservations()
    obs.add(_batch([_beat("ws1", raw), _beat("ws2", "   "), _event("ws1")]))
    (label,) = {v for _, _, v in obs.heartbeats()}
    assert label.startswith("2.0?evil?") and len(label) == 64 and SEP not in label
    assert obs.heartbeats() == [["acme", "ws1", label]]  # a blank version is not heard
    beats = [o for o in obs.observations() if o.route[2] == "heartbeat"]
    assert {o.version: o.versions for o in beats} == {label: {"ws1": label}, "unknown": {}}
    # The event of the same batch is labelled by the (sanitised) heartbeat.
    assert {o.version for o in obs.observations() if o.route[0] == "windows"} == {label}
    record = json.loads(beats[0].to_json())
    assert record["hb"] == {"ws1": label} and "sn" not in record
    # A record carrying a raw version (an older or hostile writer) is sanitised on read,
    # and so is what the tenant state keeps of it.
    record["hb"] = {"ws1": raw, "ws2": None}
    decoded = decode(json.dumps(record))
    assert decoded.versions == {"ws1": label}
    tenant = TenantState("acme")
    tenant.observe(decoded, 1.0)
    assert tenant.versions == {"ws1": label}


def test_records_carry_no_sensor_count_and_older_ones_with_sn_still_decode() -> None:
    assert "sensor_count" not in Observation.__dataclass_fields__
    old = (
        b'{"v":2,"tenant":"a","route":["windows","process_creation",null],"ver":"s/1",'
        b'"n":3,"f":{},"s":["ws1"],"sn":7,"hb":{},"cut":0}'
    )
    o = decode(old)
    assert (o.rows, o.sensors, o.routes_cut) == (3, {"ws1"}, 0)
    assert "sn" not in json.loads(o.to_json())


def test_route_parts_are_cut_and_never_carry_the_key_separator() -> None:
    obs = FieldObservations()
    obs.add(_batch([_event("ws1", "Win" + "d" * 500, "sys\x1fmon\n")]))
    (o,) = obs.observations()
    product, _, service = o.route
    assert product is not None and len(product) == MAX_ROUTE_PART_LEN
    assert product.startswith("wind") and service == "sys?mon?"
    assert route_key(o.tenant, o.route, o.version).count(SEP.encode()) == 4


def test_routes_beyond_a_tasks_bound_go_to_other_and_are_counted() -> None:
    obs = FieldObservations(max_routes=3)
    obs.add(_batch([_event(f"s{i}", f"p{i}") for i in range(5)]))
    obs.add(_batch([_event("s9", "p4"), _event("s8", "p5"), _event("s0", "p0")]))
    rows = {o.route: o.rows for o in obs.observations()}
    other = other_route(("x", "process_creation", "x"))
    assert other == ("other", "process_creation", "other")
    assert rows == {
        ("p0", "process_creation", "sysmon"): 2,
        ("p1", "process_creation", "sysmon"): 1,
        ("p2", "process_creation", "sysmon"): 1,
        other: 4,  # p3, p4 (twice), p5
    }
    (folded,) = [o for o in obs.observations() if o.route == other]
    # routes_cut counts distinct routes once, not the batches or events that sent them
    assert folded.routes_cut == 3  # distinct routes p3, p4, p5
    assert folded.sensors == {"s3", "s4", "s9", "s8"}
    assert json.loads(folded.to_json())["rcut"] == 3
    assert decode(folded.to_json()).routes_cut == 3
    assert len(obs) == 4


def test_routes_beyond_a_tenants_bound_go_to_other_in_the_state() -> None:
    tenant = TenantState("acme")
    for i in range(3):
        o = tenant.admit(Observation("acme", (f"p{i}", "process_creation", None)), 3)
        assert o.route == (f"p{i}", "process_creation", None)
        tenant.bucket(f"p{i}/process_creation/-", o.version)
    kept = tenant.admit(Observation("acme", ("p1", "process_creation", None)), 3)
    assert kept.route == ("p1", "process_creation", None) and tenant.routes_cut == 0
    cut = tenant.admit(Observation("acme", ("p9", "process_creation", None), rows=4), 3)
    assert cut.route == ("other", "process_creation", "other") and cut.routes_cut == 1
    assert tenant.routes_cut == 1
    state = fold(new_route_state("acme", cut.route), cut, 1.0)
    assert state["routes_cut"] == 1 and state["rows"] == 4
    doc = tenant.to_doc()
    assert doc["routes_cut"] == 1 and TenantState.of(doc, "acme").routes_cut == 1
    DriftDoc.model_validate(doc)  # the index mapping knows the counter
    DriftDoc.model_validate(state)
    assert MAX_TENANT_ROUTES >= 256


def test_the_tasks_map_keys_are_the_drivers() -> None:
    obs = FieldObservations(versions={sensor_key("acme", "ws1"): "1.0"})
    obs.add(_batch([_event("ws1")]))
    assert {o.version for o in obs.observations()} == {"1.0"}


def test_quarantined_entries_that_are_not_objects_are_skipped(tmp_path: Path) -> None:
    from detections.content.canary.runner import job_view
    from detections.drift.stage import with_quarantine

    status = {"quarantined": ["b", None, 3, {"rule_id": "c", "reason": "budget"}]}
    assert quarantined_ids(status) == {"c"}
    assert quarantined_reasons(status) == {"c": "budget"}
    assert quarantined_ids({"quarantined": "b"}) == set()
    assert quarantined_ids(None) == set() and quarantined_ids({}) == set()
    assert job_view(status)[0] == {"c": "budget"}
    route = Route("windows", ("process_creation",), None)
    rules = [RuleFields(r, "t", "high", route, frozenset({"Image"})) for r in ("b", "c")]
    path = tmp_path / "status.json"
    path.write_text(json.dumps(status))
    assert [r.active for r in with_quarantine(rules, path)] == [True, False]
