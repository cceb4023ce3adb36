"""The field-drift finding: a field active rules read stopped arriving on a logsource that
still has traffic. Pure.

A health-kind finding (like ``detections.health.finding_docs``) under a stable rule id, so
triage filters, suppressions and grouping work on it as on any other. Its id is derived
from (tenant, route, field, baseline): raised once per field and baseline, however many
batches see the field missing; a new baseline may raise it again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from detections.drift.report import RuleFields
from detections.drift.state import Drift
from detections.drift.versions import UNKNOWN
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

#: uuid5(URL, "sigstream:sensor-health:field-drift"), like the sensor-health rules.
FIELD_DRIFT_RULE = RuleInfo(
    id="6e6950ec-e8df-51f9-ba46-633921989aeb",
    name="Field used by active rules stopped arriving",
    level="high",
    tags=["sigstream.sensor_health", "sigstream.field_drift", "attack.defense_evasion"],
    description="A field that active Sigma rules read, and that the baseline says this "
    "logsource carries, has been missing from the logsource's events while it still has "
    "traffic: a sensor update or a shipper layout change renamed or dropped it, and the "
    "rules that read it can no longer fire. `sigstream rules drift` lists the details.",
    status="stable",
)
#: The "sensor" of a field-drift finding: it is about a logsource, not one sensor.
DRIFT_SENSOR = "field-drift"


def drift_finding(
    drift: Drift, rules: list[RuleFields], at: float, grouping: GroupingConfig | None = None
) -> Finding:
    """The finding for one gone field, naming the rules that read it."""
    rule = FIELD_DRIFT_RULE
    event_id = f"field-drift:{drift.route}:{drift.field}:{drift.baseline_id}"
    if drift.version != UNKNOWN:  # unknown: the id it had before versions were observed
        event_id += f":{drift.version}"
    fid = finding_id(rule.id, drift.tenant, DRIFT_SENSOR, event_id)
    when = datetime.fromtimestamp(at, tz=UTC)
    window_s = (grouping or GroupingConfig()).window_for(rule.id)
    key, start = group_key(when, event_id, window_s)
    titles = ", ".join(r.title for r in rules[:5]) + (
        f" and {len(rules) - 5} more" if len(rules) > 5 else ""
    )
    still = f" (still sent by {', '.join(drift.still_sent_by)})" if drift.still_sent_by else ""
    message = (
        f"{rule.name} | {drift.route} | sensor version {drift.version}{still} | field "
        f"{drift.field} missing from the last {drift.since:,} events (about "
        f"{drift.expected:,.0f} expected) | {len(rules)} rules: {titles} | sensors' versions: "
        f"{', '.join(drift.versions) or '-'}"
    )
    return Finding.model_validate(
        {
            "@timestamp": when,
            "rule": rule,
            "host": HostInfo(name=drift.route),
            "event": EventInfo(
                id=event_id,
                category="configuration",
                created=when,
                severity=LEVEL_SEVERITY[rule.level or "high"],
            ),
            "message": message,
            "sigstream": SigstreamInfo(
                tenant_id=drift.tenant,
                sensor_id=DRIFT_SENSOR,
                finding=FindingState(id=fid),
                group=GroupInfo(
                    id=group_id(drift.tenant, rule.id, drift.route, key),
                    window_s=max(window_s, 0),
                    window_start=start,
                    first_seen=when,
                    last_seen=when,
                ),
                event={
                    "kind": "field_drift",
                    "route": drift.route,
                    "field": drift.field,
                    "baseline_id": drift.baseline_id,
                    "sensor_version": drift.version,
                    "compared_with": drift.against,  # "version" baseline, or the "route"'s
                    "still_sent_by": list(drift.still_sent_by),
                    "events_without": drift.since,
                    "expected": round(drift.expected, 1),
                    "rules": [{"id": r.rule_id, "title": r.title} for r in rules],
                    "rule_count": len(rules),
                    "sensors": list(drift.sensors[:50]),
                    "sensor_versions": list(drift.versions),
                },
            ),
        }
    )
