"""Correlation firings and late matches -> documents for Elasticsearch. Pure.

A firing becomes a :class:`~schemas.findings.Finding` (``event.category`` =
``correlation``, ``sigstream.correlation.*``) in the findings index, in its own group so
analysts triage it like any finding. A late match becomes a small report document in the
late index: counted and searchable, never silently dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detections.correlation.model import CorrelationSpec, late_report_id
from detections.correlation.state import Firing, Late, Match
from schemas.findings import (
    LEVEL_SEVERITY,
    CorrelationInfo,
    EventInfo,
    Finding,
    FindingState,
    GroupInfo,
    HostInfo,
    RuleInfo,
    SigstreamInfo,
    attack_from_tags,
    finding_id,
    group_id,
)

#: Separates group-by values in a group key.
KEY_SEPARATOR = "\x1f"

LATE_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": {"type": "date"},
        "correlation_id": {"type": "keyword"},
        "correlation_title": {"type": "keyword"},
        "rule_id": {"type": "keyword"},
        "event_id": {"type": "keyword"},
        "finding_id": {"type": "keyword"},
        "event_time": {"type": "date"},
        "watermark": {"type": "date"},
        "lateness_ms": {"type": "long"},
        "host": {"type": "keyword"},
        "tenant_id": {"type": "keyword"},
        "group_key": {"type": "keyword"},
    },
}


def _ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def group_values(spec: CorrelationSpec, group_key: str) -> dict[str, str]:
    if not spec.group_by:
        return {}
    return dict(zip(spec.group_by, group_key.split(KEY_SEPARATOR), strict=False))


def rule_info(spec: CorrelationSpec) -> RuleInfo:
    return RuleInfo(
        id=spec.id,
        name=spec.title,
        level=spec.level,
        tags=list(spec.tags),
        author=spec.author,
        description=spec.description,
        references=list(spec.references),
        falsepositives=list(spec.falsepositives),
    )


def correlation_finding(
    spec: CorrelationSpec, firing: Firing, ingested: datetime | None = None
) -> Finding:
    """The finding for one firing; its id is deterministic (correlation, group, window)."""
    fid = firing.finding_id
    matches = sorted(firing.matches)
    first, last = _ms(matches[0].time_ms), _ms(matches[-1].time_ms)
    groups = group_values(spec, firing.group_key)
    host = groups.get("host") or matches[-1].host
    tenant = matches[-1].tenant_id
    value = f"{firing.value:g}"
    message = (
        f"{spec.title} | {spec.id} | {host} | {spec.type} {value} ({spec.condition.describe()})"
    )
    return Finding(
        timestamp=last,
        rule=rule_info(spec),
        threat=attack_from_tags(list(spec.tags)),
        host=HostInfo(name=host),
        event=EventInfo(
            id=fid,
            category="correlation",
            created=last,
            ingested=ingested,
            severity=LEVEL_SEVERITY.get((spec.level or "").lower()),
        ),
        message=message,
        sigstream=SigstreamInfo(
            tenant_id=tenant,
            sensor_id=matches[-1].sensor_id,
            finding=FindingState(id=fid),
            group=GroupInfo(
                id=group_id(tenant, spec.id, host, f"correlation:{fid}"),
                window_s=spec.timespan_s,
                window_start=_ms(firing.window_start_ms),
                first_seen=first,
                last_seen=last,
            ),
            correlation=CorrelationInfo(
                type=spec.type,
                group_key=firing.group_key,
                group_by=groups,
                window_start=_ms(firing.window_start_ms),
                window_end=_ms(firing.window_end_ms),
                value=firing.value,
                condition=spec.condition.describe(),
                rules=sorted({m.rule for m in matches}),
                base_findings=[_base_finding(m, spec) for m in matches],
                base_events=[m.event_id for m in matches],
            ),
        ),
    )


def _base_finding(m: Match, spec: CorrelationSpec) -> str:
    """The finding a match stands for: a base rule's, or, in a chained correlation, the
    upstream correlation's finding, whose id the match carries as its event id."""
    if m.rule in spec.upstream:
        return m.event_id
    return finding_id(m.rule, m.tenant_id, m.sensor_id, m.event_id)


def late_document(spec: CorrelationSpec, group_key: str, late: Late) -> tuple[str, dict[str, Any]]:
    """(id, body) of the report of one late match."""
    m = late.match
    return late_report_id(spec.id, m.rule, m.tenant_id, m.sensor_id, m.event_id), {
        "@timestamp": datetime.now(UTC).isoformat(),
        "correlation_id": spec.id,
        "correlation_title": spec.title,
        "rule_id": m.rule,
        "event_id": m.event_id,
        "finding_id": _base_finding(m, spec),
        "event_time": _ms(m.time_ms).isoformat(),
        "watermark": _ms(late.watermark_ms).isoformat(),
        "lateness_ms": late.watermark_ms - m.time_ms,
        "host": m.host,
        "tenant_id": m.tenant_id,
        "group_key": group_key,
    }
