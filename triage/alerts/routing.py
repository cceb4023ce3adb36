"""Which routes and destinations a finding goes to. Pure.

Every enabled route whose ``match`` accepts the finding applies (routes are independent).
For each of its destinations the plan says ``send`` or ``silenced`` (a silence in force,
with its reason). A destination that does not belong to the finding's tenant is left out:
a tenant's finding never reaches another tenant's channel, whatever the routes say.
Findings of the reserved canary tenant are never routed. Throttling is stateful and done
after this (``throttle.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from common.settings import RESERVED_TENANT_PREFIX
from triage.alerts.config import LEVEL_RANK, Match, RoutesFile, Silence
from triage.alerts.kinds import finding_kind


@dataclass(frozen=True)
class Facts:
    """What routes match on, read once from a finding document."""

    tenant: str
    level: str
    rule_id: str
    rule_name: str
    tags: frozenset[str]
    host: str
    kind: str


def facts(doc: dict[str, Any]) -> Facts:
    rule = doc.get("rule") or {}
    threat = doc.get("threat") or {}
    tags = {str(t).lower() for t in rule.get("tags") or []}
    # ECS threat fields too, so `attack.t1059*` works for findings without Sigma tags.
    tags |= {f"attack.{str(t).lower()}" for t in (threat.get("technique") or {}).get("id") or []}
    tags |= {
        f"attack.{str(t).lower().replace('-', '_')}"
        for t in (threat.get("tactic") or {}).get("name") or []
    }
    return Facts(
        tenant=str((doc.get("sigstream") or {}).get("tenant_id") or ""),
        level=str(rule.get("level") or "informational").lower(),
        rule_id=str(rule.get("id") or ""),
        rule_name=str(rule.get("name") or ""),
        tags=frozenset(tags),
        host=str((doc.get("host") or {}).get("name") or ""),
        kind=finding_kind(doc),
    )


def _glob(patterns: list[str], *values: str) -> bool:
    return any(fnmatchcase(v.lower(), p.lower()) for p in patterns for v in values if v)


def matches(m: Match, f: Facts) -> bool:
    if m.tenants and f.tenant not in m.tenants:
        return False
    if m.min_level and LEVEL_RANK.get(f.level, 0) < LEVEL_RANK[m.min_level]:
        return False
    if m.kinds and f.kind not in m.kinds:
        return False
    if m.rules and not _glob(m.rules, f.rule_id, f.rule_name):
        return False
    if m.hosts and not _glob(m.hosts, f.host):
        return False
    return not m.tags or any(_glob(m.tags, tag) for tag in f.tags)


def silence_for(silences: list[Silence], route: str, f: Facts, now: datetime) -> Silence | None:
    """The first silence in force at ``now`` for this route and finding."""
    for s in silences:
        if now >= s.until or (s.starts is not None and now < s.starts):
            continue
        if s.routes and route not in s.routes:
            continue
        if matches(s.match, f):
            return s
    return None


@dataclass(frozen=True)
class Step:
    route: str
    destination: str
    action: Literal["send", "silenced"]
    silence: Silence | None = None


def plan(routes: RoutesFile, f: Facts, now: datetime) -> list[Step]:
    """The (route, destination) steps for one finding. Reserved tenants (``_``-prefixed:
    the canary tenant must be one) are Sigstream's own and never reach a destination."""
    if f.tenant.startswith(RESERVED_TENANT_PREFIX):
        return []
    steps: list[Step] = []
    for route in routes.routes:
        if not route.enabled or not matches(route.match, f):
            continue
        silence = silence_for(routes.silences, route.name, f, now)
        for name in route.destinations:
            if not routes.destinations[name].allows(f.tenant):
                continue  # another tenant's destination: never
            if silence is not None:
                steps.append(Step(route.name, name, "silenced", silence))
            else:
                steps.append(Step(route.name, name, "send"))
    return steps
