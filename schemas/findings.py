"""What the detection job writes for analysts: one finding per (rule, event) match.

Field names follow the Elastic Common Schema (``@timestamp``, ``rule.*``, ``threat.*``,
``host.*``, ``process.*``, ``event.*``) so Kibana users can query the same documents;
Sigstream's own state lives under ``sigstream.*``.
"""

from __future__ import annotations

import hashlib
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


class FindingState(_Model):
    id: str
    status: Literal["open", "acknowledged", "closed"] = "open"
    schema_version: int = FINDING_SCHEMA_VERSION


class SigstreamInfo(_Model):
    tenant_id: str
    sensor_id: str
    finding: FindingState
    # The matching event exactly as the schema parsed it; stored, not indexed.
    event: dict[str, Any] = Field(default_factory=dict)


class Finding(_Model):
    timestamp: datetime = Field(alias="@timestamp")
    rule: RuleInfo
    threat: Threat = Field(default_factory=Threat)
    host: HostInfo
    process: ProcessInfo = Field(default_factory=ProcessInfo)
    event: EventInfo
    sigstream: SigstreamInfo


def finding_id(rule_id: str, event_id: str) -> str:
    """Deterministic id: the same rule matching the same event is always the same finding."""
    return hashlib.sha256(f"{rule_id}\x1f{event_id}".encode()).hexdigest()[:40]


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
