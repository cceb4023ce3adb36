"""Health observations -> findings analysts triage beside rule matches, and the
per-sensor status document of the sensors index. Pure.

Each kind is a "rule" of its own with a stable id, so triage filters, suppressions and
grouping work on health findings exactly as on Sigma findings. The finding id is derived
from (rule, tenant, sensor, episode key): replaying the same data writes the same ids.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from detections.health.state import (
    HealthConfig,
    Observation,
    SensorState,
    event_rate,
    health,
    interval,
)
from detections.sinks.grouping import GroupingConfig, group_key
from schemas.findings import (
    LEVEL_SEVERITY,
    EventInfo,
    Finding,
    FindingState,
    GroupInfo,
    HostInfo,
    RuleInfo,
    SigstreamInfo,
    finding_id,
    group_id,
)
from schemas.generate import es_mappings
from schemas.sensors import SensorStatus

_TAGS = ["sigstream.sensor_health", "attack.defense_evasion", "attack.t1562.001"]

#: kind -> the rule it reports under. Ids are uuid5(URL, "sigstream:sensor-health:<kind>").
HEALTH_RULES: dict[str, RuleInfo] = {
    "silent": RuleInfo(
        id="5a0e7c25-d9e3-5ab9-b0f9-0caca968581f",
        name="Sensor silent",
        level="high",
        tags=_TAGS,
        description="A sensor sent neither events nor heartbeats for several of its expected "
        "intervals: an outage, or the sensor was stopped or tampered with.",
        status="stable",
    ),
    "gap": RuleInfo(
        id="1245c0bf-4f10-5881-be42-ca2ffc063d3d",
        name="Sensor sequence gap",
        level="medium",
        tags=_TAGS,
        description="Sequence numbers of a sensor's events are missing and did not arrive "
        "within the grace: events were lost, or deleted on the endpoint.",
        status="stable",
    ),
    "reset": RuleInfo(
        id="f7ddfed5-9642-5b8a-baef-6ad671b8c4de",
        name="Sensor sequence reset",
        level="low",
        tags=_TAGS,
        description="A sensor started numbering its events again: it was restarted, "
        "reinstalled or its state was wiped.",
        status="stable",
    ),
    "stopped": RuleInfo(
        id="9645ceb1-44cd-5e40-9cca-9c85688d1e57",
        name="Sensor stopped",
        level="medium",
        tags=_TAGS,
        description="A sensor said it was stopping (SIGTERM, systemd stop) and has sent "
        "nothing since: stopped cleanly, by an administrator or an intruder with the rights "
        "to stop services.",
        status="stable",
    ),
    "tampered": RuleInfo(
        id="e324f1c6-da62-51ae-b952-883caed901da",
        name="Sensor code or configuration changed",
        level="high",
        tags=_TAGS,
        description="The sha256 of a sensor's own code or of its configuration in its "
        "heartbeat differs from the previous heartbeat's: an upgrade or a configuration "
        "change, or the sensor being tampered with.",
        status="stable",
    ),
    "source_lost": RuleInfo(
        id="d5209d88-766f-55c9-927d-9d6a8f685bfc",
        name="Sensor event source lost",
        level="high",
        tags=_TAGS,
        description="An event source of a sensor (process executions, file writes, network "
        "connections) that was working became unavailable: the sensor no longer sees that "
        "activity.",
        status="stable",
    ),
    "skew": RuleInfo(
        id="940268fc-9777-5d3f-849e-a387803ee539",
        name="Sensor clock skew",
        level="low",
        tags=["sigstream.sensor_health", "attack.defense_evasion", "attack.t1070.006"],
        description="A sensor's event times differ from the time the backend received them "
        "by more than the threshold: a wrong clock, or timestamps being tampered with.",
        status="stable",
    ),
}


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _message(rule: RuleInfo, host: str, sensor: str, details: dict[str, Any]) -> str:
    facts = " ".join(f"{k}={v}" for k, v in details.items())
    return f"{rule.name} | {host} | sensor {sensor} | {facts}"


def health_finding(
    tenant: str,
    sensor: str,
    host: str,
    obs: Observation,
    grouping: GroupingConfig | None = None,
) -> Finding:
    """The finding for one observation (``recovered`` has none: it closes a silence)."""
    rule = HEALTH_RULES[obs.kind]
    event_id = f"sensor-health:{tenant}:{sensor}:{obs.kind}:{obs.key}"
    fid = finding_id(rule.id, tenant, sensor, event_id)
    when = _time(obs.at)
    window_s = (grouping or GroupingConfig()).window_for(rule.id)
    key, start = group_key(when, event_id, window_s)
    return Finding.model_validate(
        {
            "@timestamp": when,
            "rule": rule,
            "host": HostInfo(name=host or sensor),
            "event": EventInfo(
                id=event_id,
                category="host",
                created=when,
                severity=LEVEL_SEVERITY[rule.level or "low"],
            ),
            "message": _message(rule, host, sensor, obs.details),
            "sigstream": SigstreamInfo(
                tenant_id=tenant,
                sensor_id=sensor,
                finding=FindingState(id=fid),
                group=GroupInfo(
                    id=group_id(tenant, rule.id, host or sensor, key),
                    window_s=max(window_s, 0),
                    window_start=start,
                    first_seen=when,
                    last_seen=when,
                ),
                event={"kind": obs.kind, "key": obs.key, **obs.details},
            ),
        }
    )


def sensor_doc_id(tenant: str, sensor: str) -> str:
    return hashlib.sha256(f"{tenant}\x1f{sensor}".encode()).hexdigest()[:40]


def _time_or_none(epoch: float | None) -> datetime | None:
    return None if epoch is None else _time(epoch)


def sensor_status(
    tenant: str, sensor: str, state: SensorState, now: float, cfg: HealthConfig
) -> SensorStatus:
    """The sensors-index document: what ``sigstream sensors`` lists."""
    return SensorStatus(
        tenant_id=tenant,
        sensor_id=sensor,
        host=state.host or None,
        state=health(state, now, cfg),
        updated=_time(now),
        first_seen=_time_or_none(state.first_seen),
        last_seen=_time_or_none(state.last_seen),
        last_event_time=_time_or_none(state.last_event_time),
        silent_since=_time_or_none(state.silent_since),
        events=state.events,
        heartbeats=state.heartbeats,
        rate=round(event_rate(state, now, cfg), 4),
        last_seq=state.max_seq,
        missing=state.missing,
        gaps=state.gaps,
        pending_gaps=len(state.pending),
        resets=state.resets,
        duplicates=state.duplicates,
        silences=state.silences,
        skew_s=None if state.skew_s is None else round(state.skew_s, 3),
        skewed=state.skewed,
        expected_interval_s=interval(state, cfg),
        agent_version=state.agent_version,
        events_sent=state.events_sent,
        events_dropped=state.events_dropped,
        events_spooled=state.events_spooled,
        sensor_sha256=state.sensor_sha256,
        config_sha256=state.config_sha256,
        sources=state.sources or None,
        stop_reason=state.stop_reason,
    )


def sensors_mappings() -> dict[str, Any]:
    return es_mappings(SensorStatus)
