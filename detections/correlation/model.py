"""The compiled form of a correlation rule: frozen, pure data shipped to the executors."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from dataclasses import dataclass

CORRELATION_TYPES = ("event_count", "value_count", "temporal", "temporal_ordered")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
    "neq": operator.ne,
}


@dataclass(frozen=True)
class Condition:
    """pySigma's condition (one operator and a threshold), extended to ranges: every
    ``(op, threshold)`` term must hold, so ``{gte: 3, lte: 5}`` is the range 3..5."""

    terms: tuple[tuple[str, float], ...]
    field: str | None = None  # value_count: the field whose distinct values are counted

    def holds(self, value: float) -> bool:
        return all(_OPS[op](value, threshold) for op, threshold in self.terms)

    @property
    def monotone(self) -> bool:
        """True when more matches can only turn the condition on (gt/gte only): such a
        window may fire as soon as it holds, others only once the window has closed."""
        return all(op in ("gt", "gte") for op, _ in self.terms)

    def describe(self) -> str:
        text = " and ".join(f"{op} {threshold:g}" for op, threshold in self.terms)
        return f"{self.field} {text}" if self.field else text


@dataclass(frozen=True)
class CorrelationSpec:
    """One correlation rule resolved against the detection plan.

    ``rules`` are the base rules' ids in the order the rule lists them (the order that
    matters for ``temporal_ordered``); ``rule_fields`` maps, per base rule, a group-by or
    condition field to the event field that rule's events carry it in (Sigma ``aliases``).
    """

    id: str
    title: str
    type: str
    rules: tuple[str, ...]
    group_by: tuple[str, ...]
    timespan_s: int
    condition: Condition
    generate: bool
    level: str | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    author: str | None = None
    path: str | None = None
    rule_fields: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    @property
    def timespan_ms(self) -> int:
        return self.timespan_s * 1000

    def field_for(self, rule_id: str, name: str) -> str:
        """The event field holding ``name`` for matches of ``rule_id`` (alias resolved)."""
        for alias, mapping in self.rule_fields:
            if alias == name:
                return dict(mapping).get(rule_id, name)
        return name


@dataclass(frozen=True)
class CorrelationRejection:
    """A correlation that is not run (quarantined), and why; the others keep running."""

    path: str | None
    rule_id: str | None
    reason: str
    message: str


def correlation_finding_id(
    correlation_id: str, group_key: str, window_start_ms: int, tenant_id: str = "default"
) -> str:
    """Deterministic id of a firing: same correlation, tenant, group and window -> same
    finding, so a replayed batch or a restart from the checkpoint can never write it twice,
    and two tenants' firings on the same group key never share an id (the default
    tenant's ids are those of releases before tenants counted)."""
    parts = ["correlation", correlation_id, group_key, str(window_start_ms)]
    if tenant_id != "default":
        parts.append(tenant_id)
    raw = "\x1f".join(parts)
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def late_report_id(
    correlation_id: str, rule_id: str, tenant_id: str, sensor_id: str, event_id: str
) -> str:
    """Deterministic id of a late-match report (an event is tenant, sensor and id)."""
    raw = "\x1f".join(("late", correlation_id, rule_id, tenant_id, sensor_id, event_id))
    return hashlib.sha256(raw.encode()).hexdigest()[:40]
