"""Judge a canary round (pure): which rules proved they fire, which did not, and why.

A rule's round is *proven* when any of its canary events came back as a finding *of that
rule* (in the findings or the shadow index; another rule matching the canary proves
nothing about this one); *not firing* when none did within the timeout, or at once
when the gateway refused its canaries. The likely cause is named from what is known, most
specific first: the gateway's refusal, the kill switch, a run-time quarantine, a refusal
by the job at load, the canary not reaching the rule (route empty) or lacking a field the
rule reads (checked by running the canary through the rule locally, with the engine's own
matcher), and finally a whole round without any finding (the job or Elasticsearch is down
or behind).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from detections.compiler import ir
from detections.compiler.logsources import Route, field_source
from detections.compiler.plan import DetectionPlan, PlannedRule
from schemas.rule_health import RuleHealth, RuleHealthState


@dataclass(frozen=True)
class RuleView:
    """What the deployment and the job say about one rule."""

    rule_id: str
    title: str
    mode: str = "active"  # active | shadow | canary | disabled
    mode_reason: str | None = None
    quarantined: str | None = None  # the job's reason
    refused: str | None = None  # refused by the job at load
    tests: int = 0


#: Sightings are keyed by (rule id, canary event id): a finding proves only its own rule.
SightingKey = tuple[str, str]


@dataclass(frozen=True)
class Sighting:
    """A canary's finding, by the rule the canary is for, found in Elasticsearch."""

    event_id: str
    index: Literal["active", "shadow"]
    seen: datetime  # when the runner saw it (visible in Elasticsearch)
    ingested: datetime | None = None  # when the job matched it (event.ingested)
    rule_id: str | None = None  # the finding's rule.id


@dataclass(frozen=True)
class Verdict:
    health: RuleHealth
    not_firing: bool = False  # raise the "rule not firing" finding for this round
    round_name: str | None = None


def standing_state(view: RuleView) -> RuleHealthState | None:
    """The state the deployment or the job decide alone, canary or not."""
    if view.mode == "disabled":
        return "killed"
    if view.quarantined:
        return "quarantined"
    if view.tests == 0:
        return "no_tests"
    return None


def fired_state(view: RuleView) -> RuleHealthState:
    return "shadow" if view.mode == "shadow" else "ok"


def attribute_cause(
    view: RuleView,
    *,
    rejected: str | None,
    local: str | None,
    round_fired: bool,
    timeout_s: float,
) -> str:
    """The likely reason a rule's canary made no finding, most specific first."""
    if rejected:
        return f"gateway rejected the canary: {rejected}"
    if view.mode == "disabled":
        why = f" ({view.mode_reason})" if view.mode_reason else ""
        return f"killed: the kill switch is on{why}"
    if view.quarantined:
        return f"quarantined at run time: {view.quarantined}"
    if view.refused:
        return f"refused by the detection job at load: {view.refused}"
    if local:
        return local
    if not round_fired:
        return (
            f"no canary of this round made a finding within {timeout_s:g} s: the detection "
            "job is down or behind, or Elasticsearch is unreachable"
        )
    return (
        f"no finding within {timeout_s:g} s although the rule matches its canary locally and "
        "other rules' canaries fired: look at `sigstream rules status` and the job's log"
    )


def derived_state(view: RuleView, doc: RuleHealth) -> RuleHealthState:
    """State from the deployment's view and the rule's canary record."""
    standing = standing_state(view)
    if standing is not None:
        return standing
    if doc.rounds == 0:
        return "pending"
    return "not_firing" if doc.failures else fired_state(view)


def evaluate_rule(
    doc: RuleHealth,
    view: RuleView,
    sightings: Mapping[SightingKey, Sighting],
    now: datetime,
    timeout_s: float,
    *,
    round_fired: bool,
    diagnose: Callable[[], str | None] = lambda: None,
) -> Verdict:
    """The rule's health after looking for its pending round's findings at ``now``.

    ``sightings`` are keyed by (rule id, event id): only this rule's own findings on its
    canary events count."""
    base = doc.model_copy(
        update={"title": view.title, "mode": view.mode, "tests": view.tests, "updated": now}
    )
    pending = base.pending_round
    if pending is None or base.pending_injected is None:
        return Verdict(base.model_copy(update={"state": derived_state(view, base)}))
    cleared: dict[str, Any] = {
        "pending_round": None,
        "pending_injected": None,
        "pending_event_ids": None,
        "pending_rejected": None,
        "updated": now,
        "rounds": base.rounds + 1,
    }
    found = [
        s
        for i in base.pending_event_ids or []
        if (s := sightings.get((base.rule_id, i))) is not None
    ]
    if found:
        first = min(found, key=lambda s: s.seen)
        injected = base.pending_injected
        ingested = [s.ingested for s in found if s.ingested is not None]
        job = (min(ingested) - injected).total_seconds() if ingested else None
        health = base.model_copy(
            update={
                **cleared,
                "cause": None,
                "failures": 0,
                "last_proven": first.seen,
                "latency_s": round(max((first.seen - injected).total_seconds(), 0.0), 3),
                "job_latency_s": None if job is None else round(max(job, 0.0), 3),
            }
        )
        health = health.model_copy(update={"state": derived_state(view, health)})
        return Verdict(health, round_name=pending)
    waited = (now - base.pending_injected).total_seconds()
    if not base.pending_rejected and waited < timeout_s:
        return Verdict(base.model_copy(update={"state": derived_state(view, base)}))
    local = None if (base.pending_rejected or view.mode == "disabled") else diagnose()
    cause = attribute_cause(
        view,
        rejected=base.pending_rejected,
        local=local,
        round_fired=round_fired,
        timeout_s=timeout_s,
    )
    health = base.model_copy(
        update={
            **cleared,
            "cause": cause,
            "failures": base.failures + 1,
        }
    )
    health = health.model_copy(update={"state": derived_state(view, health)})
    return Verdict(health, not_firing=True, round_name=pending)


# --- local diagnosis -------------------------------------------------------------------


def in_route(route: Route, event: Mapping[str, Any]) -> bool:
    """Whether the job would hand ``event`` (schema form) to rules of ``route``."""
    logsource = event.get("logsource") or {}
    if route.event_types is not None and event.get("event_type") not in route.event_types:
        return False
    for key, wanted in (("product", route.product), ("service", route.service)):
        have = logsource.get(key)
        if wanted is not None and (have is None or str(have).lower() != wanted):
            return False
    return True


def required_fields(node: ir.Node) -> frozenset[str]:
    """Fields that must be present for the rule to match: every branch of an ``or``
    needs them (a field of only one branch, or under a ``not``, is not named: on a true
    positive a filter's fields are usually absent)."""
    if isinstance(node, ir.Not):
        return frozenset()
    if isinstance(node, ir.Pred):
        absent = node.op == ir.NULL or (node.op == ir.EXISTS and node.value is False)
        if node.field is None or absent:
            return frozenset()
        return frozenset({node.field})
    parts = [required_fields(item) for item in node.items]
    if isinstance(node, ir.And):
        return frozenset().union(*parts)
    return frozenset.intersection(*parts) if parts else frozenset()


def _present(route: Route, event: Mapping[str, Any], name: str) -> bool:
    source = field_source(route, name)
    extra = event.get("extra") or {}
    in_col = event.get(name) not in (None, "")
    in_extra = extra.get(name) not in (None, "")
    return {"col": in_col, "extra": in_extra}.get(source, in_col or in_extra)


def diagnose_canary(
    planned: PlannedRule | None,
    events: Sequence[Mapping[str, Any]],
    matches: Callable[[DetectionPlan, Sequence[Mapping[str, Any]]], bool] | None = None,
) -> str | None:
    """Why the rule cannot fire on its canary events, or None when it can (the rule
    matches at least one of them with the engine's matcher, run here in-process)."""
    if planned is None:
        return "route empty: the rule is not in the deployed plan (refused or not deployed)"
    if not events:
        return None
    routed = [e for e in events if in_route(planned.route, e)]
    if not routed:
        first = events[0]
        ls = first.get("logsource") or {}
        got = f"{first.get('event_type')} of {ls.get('product') or '*'}/{ls.get('service') or '*'}"
        return (
            f"route empty: the canary is a {got} event, the rule reads {planned.route.describe()}"
        )
    alone = PlannedRule(index=0, rule=planned.rule, route=planned.route)
    plan = DetectionPlan(rules=(alone,), routes={planned.route: (0,)})
    check = matches or _engine_matches
    if check(plan, routed):
        return None
    wanted = sorted(required_fields(planned.rule.ir))
    missing = sorted({f for e in routed for f in wanted if not _present(planned.route, e, f)})
    if missing:
        return f"field missing: the canary event lacks {', '.join(missing)}, which the rule reads"
    return "the canary event no longer matches the rule (its values differ from the rule's)"


def _engine_matches(plan: DetectionPlan, events: Sequence[Mapping[str, Any]]) -> bool:
    from detections.engine.apply import match_events

    return bool(match_events(plan, [dict(e) for e in events]))
