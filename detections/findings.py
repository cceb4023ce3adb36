"""Turn one (rule, event) match into the finding document analysts triage. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.findings import (
    EventInfo,
    Finding,
    FindingState,
    HostInfo,
    ParentProcess,
    ProcessInfo,
    RuleInfo,
    SigstreamInfo,
    attack_from_tags,
    finding_id,
)


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _process(event: dict[str, Any]) -> ProcessInfo:
    """ECS ``process.*`` from whichever Sigma fields name the acting process."""
    executable = event.get("Image") or event.get("SourceImage")
    pid = event.get("ProcessId") or event.get("SourceProcessId")
    return ProcessInfo(
        executable=executable,
        command_line=event.get("CommandLine"),
        pid=pid,
        entity_id=event.get("ProcessGuid") or event.get("SourceProcessGuid"),
        parent=ParentProcess(
            executable=event.get("ParentImage"), command_line=event.get("ParentCommandLine")
        ),
    )


def build_finding(
    rule: RuleInfo, event: dict[str, Any], ingested: datetime | None = None
) -> Finding:
    """The finding for ``rule`` matching ``event`` (a schema event as a plain dict)."""
    event = {k: v for k, v in event.items() if v is not None and v != {}}
    fid = finding_id(rule.id, str(event["event_id"]))
    return Finding(
        timestamp=_time(event["event_time"]),
        rule=rule,
        threat=attack_from_tags(rule.tags),
        host=HostInfo(name=str(event["host"])),
        process=_process(event),
        event=EventInfo(
            id=str(event["event_id"]),
            category=str(event.get("event_type")),
            created=_time(event["event_time"]),
            ingested=ingested,
        ),
        sigstream=SigstreamInfo(
            tenant_id=str(event.get("tenant_id", "default")),
            sensor_id=str(event["sensor_id"]),
            finding=FindingState(id=fid),
            event=event,
        ),
    )


def finding_document(finding: Finding) -> tuple[str, dict[str, Any]]:
    """(document id, JSON-ready body) for the findings index."""
    return finding.sigstream.finding.id, finding.model_dump(mode="json", by_alias=True)
