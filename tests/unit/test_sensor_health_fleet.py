"""The synthetic fleet and the OTRF corpus through the pure health state machine, with a
simulated clock: exactly the expected sensors raise exactly the expected findings."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from detections.health.finding_docs import HEALTH_RULES, health_finding, sensor_status
from detections.health.state import HealthConfig, Record, SensorState, expire, observe
from ingest.fleet import Fleet, FleetSpec
from schemas.events import Envelope, Heartbeat
from tests.conftest import shared_path

T0 = 1_800_000_000.0


def record(e: Envelope, received: float) -> Record:
    hb = isinstance(e, Heartbeat)
    return Record(
        event_id=e.event_id,
        event_time=e.event_time.timestamp(),
        received=received,
        seq=e.seq,
        host=e.host,
        heartbeat=hb,
        interval_s=float(e.expected_interval_s) if hb and e.expected_interval_s else None,
    )


def simulate(fleet: Fleet, rounds: int, cfg: HealthConfig) -> dict[str, set[str]]:
    """Each round is one micro-batch; sensors without records get their timer."""
    states: dict[str, SensorState] = defaultdict(SensorState)
    found: dict[str, set[str]] = defaultdict(set)
    for number in range(rounds):
        now = T0 + number * fleet.spec.round_s
        batch: dict[str, list[Record]] = defaultdict(list)
        for e in fleet.round(number, now):
            batch[e.sensor_id].append(record(e, now))
        for sensor in set(states) | set(batch):
            st = states[sensor]
            obs = observe(st, batch[sensor], now, cfg) if batch[sensor] else expire(st, now, cfg)
            for o in obs:
                found[o.kind].add(sensor)
    return dict(found)


def test_fleet_is_deterministic_and_disjoint() -> None:
    spec = FleetSpec(sensors=200, seed=3)
    a, b = Fleet.build(spec).expected(), Fleet.build(spec).expected()
    assert a == b and all(len(v) == 10 for v in a.values())
    assert len(set().union(*a.values())) == 40
    assert Fleet.build(FleetSpec(sensors=200, seed=4)).expected() != a


def test_fleet_through_the_state_machine_gives_exactly_the_expected_findings() -> None:
    spec = FleetSpec(sensors=300, round_s=1.0, heartbeat_every=2, silent_after=3)
    fleet = Fleet.build(spec)
    cfg = HealthConfig(default_interval_s=60, skew_threshold_s=300, gap_grace_s=2)
    found = simulate(fleet, rounds=12, cfg=cfg)
    assert {k: found.get(k, set()) for k in ("silent", "gap", "reset", "skew")} == fleet.expected()
    assert "recovered" not in found


def test_health_findings_have_their_own_rules_and_stable_ids() -> None:
    from detections.health.state import Observation

    obs = Observation("gap", T0, "0:5", {"first_missing": 5, "last_missing": 9, "missing": 5})
    a = health_finding("acme", "ws01", "WS01", obs)
    b = health_finding("acme", "ws01", "WS01", obs)
    assert a.sigstream.finding.id == b.sigstream.finding.id
    assert a.rule.name == "Sensor sequence gap" and a.rule.id == HEALTH_RULES["gap"].id
    assert a.sigstream.group is not None and a.host.name == "WS01"
    other = health_finding("acme", "ws02", "WS02", obs)
    assert other.sigstream.finding.id != a.sigstream.finding.id
    names = {r.name for r in HEALTH_RULES.values()}
    assert names == {
        "Sensor silent",
        "Sensor sequence gap",
        "Sensor sequence reset",
        "Sensor clock skew",
        "Sensor stopped",
        "Sensor code or configuration changed",
        "Sensor event source lost",
    }
    assert len({r.id for r in HEALTH_RULES.values()}) == 7
    status = sensor_status("acme", "ws01", SensorState(host="WS01"), T0, HealthConfig())
    assert status.state == "healthy" and status.expected_interval_s == 60


def test_otrf_corpus_with_deleted_events_reports_exactly_the_deleted_ranges() -> None:
    """Real telemetry (hosts recorded by OTRF), every 50th event deleted "on the
    endpoint": each deletion is one gap of one seq on its host, nothing else is raised."""
    from ingest.sources import iter_items

    folder: Path = shared_path("otrf", "credential_access")
    files = sorted(folder.rglob("*.zip"))[:3]
    states: dict[str, SensorState] = defaultdict(SensorState)
    deleted: dict[str, set[int]] = defaultdict(set)
    gaps: dict[str, set[int]] = defaultdict(set)
    others: list[str] = []
    cfg = HealthConfig(gap_grace_s=1, skew_threshold_s=10**10)
    events = 0
    for n, item in enumerate(iter_items(files)):
        e = item.event
        if e is None:
            continue
        events += 1
        assert e.seq is not None
        if n % 50 == 49:
            deleted[e.sensor_id].add(e.seq)
            continue
        now = T0 + n  # one record per simulated second, received as produced
        for o in observe(states[e.sensor_id], [record(e, now)], now, cfg):
            if o.kind == "gap":
                gaps[e.sensor_id].update(
                    range(o.details["first_missing"], o.details["last_missing"] + 1)
                )
            else:
                others.append(o.kind)
    assert events > 1000
    last = {s: st.max_seq for s, st in states.items()}
    expected = {s: {q for q in seqs if q < (last[s] or 0)} for s, seqs in deleted.items()}
    assert {s: v for s, v in gaps.items() if v} == {s: v for s, v in expected.items() if v}
    assert others == []
