"""The "rule not firing" finding (pure): a health finding like the sensor-health and
demotion ones, with a stable rule id, so triage filters, grouping and suppressions treat
it like any other rule's finding.

Tenant: the deployment is global (one bundle for every tenant), so a dead rule is a fact
about Sigstream, not about a customer. It is raised under the operator tenant
(``SIGSTREAM_OPERATOR_TENANT``, default ``sigstream``, the tenant demotion findings use
too): the detection engineers who own the content see it (``findings list --tenant
sigstream``), and no customer is shown another tenant's internals or a finding about
canary traffic they never sent. Never the canary tenant: its findings are hidden.

One finding per rule and failed round (its id derives from both); grouped per rule and
hour, so a rule dead for a day is one finding whose count grows, not 288.
"""

from __future__ import annotations

from datetime import datetime

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

NOT_FIRING_RULE_ID = "sigstream-health-rule-not-firing"
#: The host and sensor these findings name: the detection service itself.
SERVICE_HOST = "sigstream-detect"
SERVICE_SENSOR = "canary-runner"

NOT_FIRING_RULE = RuleInfo(
    id=NOT_FIRING_RULE_ID,
    name="Sigstream: deployed rule not firing",
    level="high",
    tags=["sigstream.health", "sigstream.canary"],
    description="A canary event built from the rule's true-positive test went through the "
    "gateway, Kafka and the detection job and produced no finding within the timeout: the "
    "rule no longer detects what it was written for.",
    status="stable",
)


def not_firing_finding(
    rule_id: str,
    title: str,
    round_name: str,
    cause: str,
    *,
    tenant: str,
    at: datetime,
    injected: datetime | None = None,
    mode: str | None = None,
    grouping: GroupingConfig | None = None,
) -> Finding:
    event_id = f"rule-not-firing:{rule_id}:{round_name}"
    window_s = (grouping or GroupingConfig()).window_for(NOT_FIRING_RULE_ID)
    key, start = group_key(at, event_id, window_s)
    return Finding.model_validate(
        {
            "@timestamp": at,
            "rule": NOT_FIRING_RULE,
            "host": HostInfo(name=SERVICE_HOST),
            "event": EventInfo(
                id=event_id,
                category="configuration",
                created=at,
                severity=LEVEL_SEVERITY["high"],
            ),
            "message": f"{NOT_FIRING_RULE.name} | rule '{title}' ({rule_id}) | {cause}",
            "sigstream": SigstreamInfo(
                tenant_id=tenant,
                sensor_id=SERVICE_SENSOR,
                finding=FindingState(
                    id=finding_id(NOT_FIRING_RULE_ID, tenant, SERVICE_SENSOR, event_id)
                ),
                # Per silent rule: its own group, not one for every rule of the hour.
                group=GroupInfo(
                    id=group_id(tenant, NOT_FIRING_RULE_ID, rule_id, key),
                    window_s=max(window_s, 0),
                    window_start=start,
                    first_seen=at,
                    last_seen=at,
                ),
                event={
                    "silent_rule_id": rule_id,
                    "silent_rule_title": title,
                    "round": round_name,
                    "cause": cause,
                    "mode": mode,
                    "injected": injected.isoformat() if injected else None,
                },
            ),
        }
    )
