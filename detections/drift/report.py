"""Field drift crossed with the rules: which rules read a field that drifted, and which
rules read fields no sensor sends. Pure (the plan and the drift state's documents).

A rule's fields come from its compiled form (``ir.fields``: every field a predicate or
a field reference names); its route from the plan. A rule sees an observed route when
its route covers it (same product, event type and service, ``None`` meaning any), the
engine's own routing rule (``detections.engine.matcher``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detections.compiler import ir
from detections.compiler.logsources import Route
from detections.compiler.plan import DetectionPlan
from detections.drift.state import Drift, DriftConfig, judge, route_name

ObservedRoute = tuple[str | None, str | None, str | None]


@dataclass(frozen=True)
class RuleFields:
    """What drift needs to know about one planned rule."""

    rule_id: str
    title: str
    level: str | None
    route: Route
    fields: frozenset[str]
    active: bool = True  # not quarantined, killed or in shadow

    def covers(self, observed: ObservedRoute) -> bool:
        product, event_type, service = observed
        r = self.route
        return (
            (r.product is None or r.product == product)
            and (r.event_types is None or event_type in r.event_types)
            and (r.service is None or r.service == service)
        )


def rule_fields(plan: DetectionPlan, inactive: Collection[str] = ()) -> list[RuleFields]:
    """Every planned rule with its route and fields (``inactive``: rule ids not active)."""
    return [
        RuleFields(
            rule_id=str(p.rule.id),
            title=p.rule.title,
            level=p.rule.level,
            route=p.route,
            fields=ir.fields(p.rule.ir),
            active=str(p.rule.id) not in inactive,
        )
        for p in plan.rules
    ]


def observed_route(doc: Mapping[str, Any]) -> ObservedRoute:
    return (doc.get("product"), doc.get("event_type"), doc.get("service"))


def rules_using(
    rules: Iterable[RuleFields], route: ObservedRoute, name: str, active_only: bool = False
) -> list[RuleFields]:
    """The rules that read field ``name`` on events of ``route``."""
    return sorted(
        (
            r
            for r in rules
            if name in r.fields and r.covers(route) and (r.active or not active_only)
        ),
        key=lambda r: (r.title, r.rule_id),
    )


@dataclass(frozen=True)
class NeverSeen:
    """A rule reading fields that no event of the routes it covers carried."""

    rule: RuleFields
    fields: tuple[str, ...]
    routes: tuple[str, ...]  # the observed routes with traffic it covers

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule.rule_id,
            "title": self.rule.title,
            "route": self.rule.route.describe(),
            "fields": list(self.fields),
            "observed_routes": list(self.routes),
        }


def never_seen(
    rules: Iterable[RuleFields], states: Sequence[Mapping[str, Any]]
) -> tuple[list[NeverSeen], list[RuleFields]]:
    """Rules with fields never seen on the routes they cover that have traffic, and rules
    whose routes have no traffic at all (nothing to judge them by)."""
    missing: list[NeverSeen] = []
    silent: list[RuleFields] = []
    with_traffic = [s for s in states if s.get("rows")]
    for rule in rules:
        covered = [s for s in with_traffic if rule.covers(observed_route(s))]
        if not covered:
            silent.append(rule)
            continue
        seen: set[str] = set()
        for s in covered:
            seen.update((s.get("fields") or {}).keys())
        lacking = tuple(sorted(rule.fields - seen))
        if lacking:
            routes = tuple(sorted(str(s["route"]) for s in covered))
            missing.append(NeverSeen(rule, lacking, routes))
    return missing, silent


@dataclass(frozen=True)
class DriftReport:
    gone: list[tuple[Drift, list[RuleFields]]]
    type_changed: list[tuple[Drift, list[RuleFields]]]
    never_seen: list[NeverSeen]
    no_traffic: list[RuleFields]
    baselines: dict[str, str | None]  # tenant -> baseline id

    def to_dict(self) -> dict[str, Any]:
        def with_rules(items: list[tuple[Drift, list[RuleFields]]]) -> list[dict[str, Any]]:
            return [
                {
                    **d.to_dict(),
                    "rules": [{"id": r.rule_id, "title": r.title} for r in rules],
                }
                for d, rules in items
            ]

        return {
            "baselines": self.baselines,
            "gone": with_rules(self.gone),
            "type_changed": with_rules(self.type_changed),
            "never_seen": [n.to_dict() for n in self.never_seen],
            "no_traffic": [
                {"rule_id": r.rule_id, "title": r.title, "route": r.route.describe()}
                for r in self.no_traffic
            ],
        }


def build_report(
    rules: Sequence[RuleFields],
    states: Sequence[Mapping[str, Any]],
    baselines: Mapping[tuple[str, str, str], Mapping[str, Any]],
    tenants: Mapping[str, Mapping[str, Any]],
    cfg: DriftConfig,
) -> DriftReport:
    """The whole report: ``states`` are route documents (one per tenant, route and sensor
    version), ``baselines`` the baseline-route documents of each tenant's current baseline
    by (tenant, route, version), version ``*`` across versions
    (``detections.drift.store.current_baselines``), ``tenants`` the tenant documents
    (versions, baseline)."""
    gone: list[tuple[Drift, list[RuleFields]]] = []
    changed: list[tuple[Drift, list[RuleFields]]] = []
    known = {t: (doc or {}).get("versions") or {} for t, doc in tenants.items()}
    routes = {(str(s["tenant_id"]), str(s["route"])): observed_route(s) for s in states}
    for d in judge(states, baselines, cfg, known):
        users = rules_using(rules, routes[(d.tenant, d.route)], d.field)
        (gone if d.kind == "gone" else changed).append((d, users))
    missing, silent = never_seen(rules, states)
    return DriftReport(
        gone=gone,
        type_changed=changed,
        never_seen=missing,
        no_traffic=silent,
        baselines={t: (doc or {}).get("baseline_id") for t, doc in sorted(tenants.items())},
    )


def matches_filters(
    route: str, rules: Sequence[RuleFields], route_filter: str | None, rule_filter: str | None
) -> bool:
    """The CLI's ``--route`` (substring of the route name) and ``--rule`` (an id, or a
    substring of a title) filters."""
    if route_filter and route_filter.lower() not in route.lower():
        return False
    if rule_filter:
        needle = rule_filter.lower()
        return any(needle == r.rule_id.lower() or needle in r.title.lower() for r in rules)
    return True


__all__ = [
    "DriftReport",
    "NeverSeen",
    "RuleFields",
    "build_report",
    "matches_filters",
    "never_seen",
    "route_name",
    "rule_fields",
    "rules_using",
]
