"""What the detection job writes for analysts: one finding per (rule, event) match.

Field names follow the Elastic Common Schema (``@timestamp``, ``rule.*``, ``threat.*``,
``host.*``, ``process.*``, ``event.*``) so Kibana users can query the same documents;
Sigstream's own state lives under ``sigstream.*``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FINDING_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class RuleInfo(_Model):
    id: str
    name: str
    level: str | None = None
    tags: list[str] = Field(default_factory=list)
    author: str | None = None
    description: str | None = None
    status: str | None = None
    references: list[str] = Field(default_factory=list)
    falsepositives: list[str] = Field(default_factory=list)


class Technique(_Model):
    id: list[str] = Field(default_factory=list)


class Tactic(_Model):
    name: list[str] = Field(default_factory=list)


class Threat(_Model):
    framework: str = "MITRE ATT&CK"
    technique: Technique = Field(default_factory=Technique)
    tactic: Tactic = Field(default_factory=Tactic)


class HostInfo(_Model):
    name: str


class ParentProcess(_Model):
    executable: str | None = None
    command_line: str | None = None


class ProcessInfo(_Model):
    executable: str | None = None
    command_line: str | None = None
    pid: str | None = None
    entity_id: str | None = None
    parent: ParentProcess = Field(default_factory=ParentProcess)


class EventInfo(_Model):
    id: str
    kind: Literal["alert"] = "alert"
    category: str
    created: datetime
    ingested: datetime | None = None
    # ECS numeric severity from the rule level, so "most severe first" is a plain sort.
    severity: int | None = None


Status = Literal["open", "acknowledged", "closed"]
Resolution = Literal["true_positive", "benign", "false_positive"]


class Note(_Model):
    author: str
    at: datetime
    text: str


class Change(_Model):
    """One audit-history entry: who changed what, when, from which value to which."""

    at: datetime
    actor: str
    action: str
    field: str | None = None
    old: str | None = None
    new: str | None = None


class FindingState(_Model):
    """Triage state. Authoritative on group documents (the ``-groups`` index); per-match
    documents keep the defaults and are never updated."""

    id: str
    status: Status = "open"
    resolution: Resolution | None = None
    assignee: str | None = None
    updated: datetime | None = None
    notes: list[Note] = Field(default_factory=list)
    history: list[Change] = Field(default_factory=list)
    schema_version: int = FINDING_SCHEMA_VERSION


class GroupInfo(_Model):
    """Which group (the finding an analyst sees) a match belongs to, and on group
    documents its derived size: count and first/last seen are recomputed from the
    per-match documents, never incremented, so replays cannot double-count."""

    id: str
    window_s: int
    window_start: datetime | None = None
    count: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class CorrelationInfo(_Model):
    """A correlation finding (Sigma correlation rule): its window, group and the base
    findings (ids as ``finding_id(base rule, tenant, sensor, event)``) that made it."""

    type: str
    group_key: str
    group_by: dict[str, str] = Field(default_factory=dict)
    window_start: datetime
    window_end: datetime
    value: float
    condition: str
    rules: list[str] = Field(default_factory=list)
    base_findings: list[str] = Field(default_factory=list)
    base_events: list[str] = Field(default_factory=list)


class MatchedField(_Model):
    """One value of a selection that held: the rule's field, modifier chain ("contains|all",
    "re", "" for equals) and value as written, and the event's value (cut to 1 KiB;
    None for a ``null`` check)."""

    field: str
    modifier: str = ""
    pattern: str | None = None
    value: str | None = None


class MatchedSelection(_Model):
    name: str
    fields: list[MatchedField] = Field(default_factory=list)


class MatchInfo(_Model):
    """Why a Sigma finding matched, as the engine that matched computed it: the
    selections the condition references positively that held, and the keywords found."""

    selections: list[MatchedSelection] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)


class SigstreamInfo(_Model):
    tenant_id: str
    sensor_id: str
    finding: FindingState
    group: GroupInfo | None = None
    # Ids of the suppression rules that silenced this match (kept and counted, not lost).
    suppressed_by: list[str] = Field(default_factory=list)
    correlation: CorrelationInfo | None = None
    match: MatchInfo | None = None  # why it matched (Sigma findings)
    # The matching event exactly as the schema parsed it; stored, not indexed.
    event: dict[str, Any] = Field(default_factory=dict)


class Finding(_Model):
    timestamp: datetime = Field(alias="@timestamp")
    rule: RuleInfo
    threat: Threat = Field(default_factory=Threat)
    host: HostInfo
    process: ProcessInfo = Field(default_factory=ProcessInfo)
    event: EventInfo
    # ECS ``message``: rule, host and process in one analysed text field for free-text search.
    message: str | None = None
    sigstream: SigstreamInfo


#: Sigma level -> ECS ``event.severity`` (the scale Elastic's detection rules use).
LEVEL_SEVERITY = {"informational": 0, "low": 21, "medium": 47, "high": 73, "critical": 99}


def finding_id(rule_id: str, tenant_id: str, sensor_id: str, event_id: str) -> str:
    """Deterministic id: the same rule matching the same event is always the same finding.

    An event is identified by (tenant, sensor, event id), never by its id alone: event ids
    are chosen by sensors, so two tenants (or two sensors of one tenant) may send the same
    id, and neither may turn the other's finding into a "duplicate" that is never written.
    """
    raw = json.dumps([rule_id, tenant_id, sensor_id, event_id])  # no separator collisions
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def group_id(tenant_id: str, rule_id: str, host: str, key: str) -> str:
    """Deterministic group id: same tenant, rule, host and window key -> same finding."""
    raw = "\x1f".join((tenant_id, rule_id, host, key))
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def attack_from_tags(tags: list[str]) -> Threat:
    """Split Sigma ``attack.*`` tags into ATT&CK technique ids and tactic names."""
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        if not tag.lower().startswith("attack."):
            continue
        name = tag.split(".", 1)[1]
        if name[:1].lower() == "t" and name[1:2].isdigit():
            techniques.append(name.upper())
        elif not (name[:1].lower() in ("g", "s") and name[1:2].isdigit()):
            tactics.append(name.replace("_", "-").lower())
    return Threat(technique=Technique(id=techniques), tactic=Tactic(name=tactics))
