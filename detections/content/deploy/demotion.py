"""Automatic demotion: which rules crossed their alert-rate or cost threshold in a batch.

Pure: the job gathers per-rule numbers for a micro-batch, asks :func:`rules_to_demote`,
calls ``DeploymentWatcher.record_demotion`` for each answer and writes the
:func:`demotion_finding` that tells analysts why. Only rules that analysts
see (active or canary) are demoted; a rule already in shadow stays there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from detections.content.deploy.modes import RuleMode
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


@dataclass(frozen=True)
class DemotionPolicy:
    max_alert_rate: float = 0.05  # matches / events evaluated by the rule
    max_alerts_per_batch: int = 1000
    max_cost_us_per_event: float = 500.0
    min_events: int = 1000  # below this many evaluated events, the rate is not judged


@dataclass(frozen=True)
class RuleBatchStats:
    rule_id: str
    events: int  # events of the rule's route in the batch
    matches: int
    cost_us_per_event: float | None = None


@dataclass(frozen=True)
class Demotion:
    rule_id: str
    reason: str
    metrics: dict[str, float]


def rules_to_demote(
    stats: Iterable[RuleBatchStats], modes: Mapping[str, RuleMode], policy: DemotionPolicy
) -> list[Demotion]:
    out: list[Demotion] = []
    for s in stats:
        mode = modes.get(s.rule_id)
        if mode is not None and mode.mode not in ("active", "canary"):
            continue
        metrics = {"events": float(s.events), "matches": float(s.matches)}
        reasons: list[str] = []
        if s.matches > policy.max_alerts_per_batch:
            reasons.append(
                f"{s.matches:,} alerts in one batch > {policy.max_alerts_per_batch:,} allowed"
            )
        if s.events >= policy.min_events:
            rate = s.matches / s.events
            metrics["alert_rate"] = rate
            if rate > policy.max_alert_rate:
                reasons.append(
                    f"alert rate {rate:.1%} of {s.events:,} events > {policy.max_alert_rate:.1%}"
                )
        if s.cost_us_per_event is not None:
            metrics["cost_us_per_event"] = s.cost_us_per_event
            if s.cost_us_per_event > policy.max_cost_us_per_event:
                reasons.append(
                    f"evaluation cost {s.cost_us_per_event:,.1f} µs/event > "
                    f"{policy.max_cost_us_per_event:,.1f}"
                )
        if reasons:
            out.append(Demotion(s.rule_id, "; ".join(reasons), metrics))
    return out


def policy_from_settings(settings: object) -> DemotionPolicy:
    """The thresholds configured as ``SIGSTREAM_DEMOTE_*`` settings."""
    return DemotionPolicy(
        max_alert_rate=getattr(settings, "demote_max_alert_rate", DemotionPolicy.max_alert_rate),
        max_alerts_per_batch=getattr(
            settings, "demote_max_alerts_per_batch", DemotionPolicy.max_alerts_per_batch
        ),
        max_cost_us_per_event=getattr(
            settings, "demote_max_cost_us", DemotionPolicy.max_cost_us_per_event
        ),
        min_events=getattr(settings, "demote_min_events", DemotionPolicy.min_events),
    )


#: The rule id findings about demotions carry (a Sigstream health "rule", not a Sigma rule).
DEMOTION_RULE_ID = "sigstream-health-rule-demoted"


def demotion_finding(
    rule: RuleInfo,
    demotion: Demotion,
    generation: int,
    at: datetime | None = None,
    tenant: str = "sigstream",
) -> Finding:
    """The finding that tells analysts a rule was moved to shadow, and why.

    Its id is derived from (rule, deployment generation), so writing it twice (a replayed
    batch) does not duplicate it. It is its own group (one per demoted rule and
    generation), so the triage list, which shows groups, shows it.
    """
    when = at or datetime.now(UTC)
    event_id = f"demotion:{demotion.rule_id}:{generation}"
    return Finding.model_validate(
        {
            "@timestamp": when,
            "rule": RuleInfo(
                id=DEMOTION_RULE_ID,
                name="Sigstream: detection rule automatically demoted to shadow",
                level="medium",
                tags=["sigstream.health"],
                description="A rule crossed its alert-rate or evaluation-cost threshold.",
            ),
            "host": HostInfo(name="sigstream-detect"),
            "event": EventInfo(
                id=event_id,
                category="configuration",
                created=when,
                severity=LEVEL_SEVERITY["medium"],
            ),
            "message": f"rule '{rule.name}' ({rule.id}) demoted to shadow: {demotion.reason}",
            "sigstream": SigstreamInfo(
                tenant_id=tenant,
                sensor_id="detect-job",
                finding=FindingState(
                    id=finding_id(DEMOTION_RULE_ID, tenant, "detect-job", event_id)
                ),
                group=GroupInfo(
                    id=group_id(tenant, DEMOTION_RULE_ID, "sigstream-detect", event_id),
                    window_s=0,
                    first_seen=when,
                    last_seen=when,
                ),
                event={
                    "demoted_rule": rule.model_dump(),
                    "reason": demotion.reason,
                    "metrics": demotion.metrics,
                    "generation": generation,
                },
            ),
        }
    )
