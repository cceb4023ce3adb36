"""Turn one (rule, event) match into the finding document analysts triage. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detections.sinks.grouping import GroupingConfig, group_key
from schemas.findings import (
    LEVEL_SEVERITY,
    EventInfo,
    Finding,
    FindingState,
    GroupInfo,
    HostInfo,
    MatchInfo,
    ParentProcess,
    ProcessInfo,
    RuleInfo,
    SigstreamInfo,
    attack_from_tags,
    finding_id,
    group_id,
)


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _process(event: dict[str, Any]) -> ProcessInfo:
    """ECS ``process.*`` from whichever Sigma fields name the acting process (auditd
    records name it ``exe`` and ``pid``)."""
    executable = event.get("Image") or event.get("SourceImage") or event.get("exe")
    pid = event.get("ProcessId") or event.get("SourceProcessId") or event.get("pid")
    return ProcessInfo(
        executable=executable,
        command_line=event.get("CommandLine"),
        pid=pid,
        entity_id=event.get("ProcessGuid") or event.get("SourceProcessGuid"),
        parent=ParentProcess(
            executable=event.get("ParentImage"), command_line=event.get("ParentCommandLine")
        ),
    )


def _message(rule: RuleInfo, host: str, process: ProcessInfo) -> str:
    """What free-text search looks in: rule, host and the acting process."""
    parts = [rule.name, rule.id, host, process.executable, process.command_line]
    parts += [process.parent.executable, process.parent.command_line]
    return " | ".join(p for p in parts if p)


def build_finding(
    rule: RuleInfo,
    event: dict[str, Any],
    ingested: datetime | None = None,
    grouping: GroupingConfig | None = None,
    match: dict[str, Any] | None = None,
) -> Finding:
    """The finding for ``rule`` matching ``event`` (a schema event as a plain dict), with
    the group it belongs to (``grouping``, from the job; the default window when not given)
    and why it matched (``match``: the engine's details, ``detections.engine.why``)."""
    event = {k: v for k, v in event.items() if v is not None and v != {}}
    event_id = str(event["event_id"])
    when = _time(event["event_time"])
    host = str(event["host"])
    tenant = str(event.get("tenant_id", "default"))
    fid = finding_id(rule.id, tenant, str(event.get("sensor_id", "")), event_id)
    window_s = (grouping or GroupingConfig()).window_for(rule.id)
    key, start = group_key(when, event_id, window_s)
    process = _process(event)
    return Finding(
        timestamp=when,
        rule=rule,
        threat=attack_from_tags(rule.tags),
        host=HostInfo(name=host),
        process=process,
        event=EventInfo(
            id=event_id,
            category=str(event.get("event_type")),
            created=when,
            ingested=ingested,
            severity=LEVEL_SEVERITY.get((rule.level or "").lower()),
        ),
        message=_message(rule, host, process),
        sigstream=SigstreamInfo(
            tenant_id=tenant,
            sensor_id=str(event["sensor_id"]),
            finding=FindingState(id=fid),
            group=GroupInfo(
                id=group_id(tenant, rule.id, host, key),
                window_s=max(window_s, 0),
                window_start=start,
                first_seen=when,
                last_seen=when,
            ),
            event=event,
            match=MatchInfo.model_validate(match) if match is not None else None,
        ),
    )


def finding_document(finding: Finding) -> tuple[str, dict[str, Any]]:
    """(document id, JSON-ready body) for the findings index."""
    return finding.sigstream.finding.id, finding.model_dump(mode="json", by_alias=True)
