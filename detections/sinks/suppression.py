"""Suppression rules: silence known-benign activity without losing it.

A suppression names a rule (or ``*``), exact field values on the finding document
(dotted ECS paths such as ``host.name``, ``process.executable`` or ``sigstream.event.User``;
compared case-insensitively, as Windows paths are) and a time window on the match's
``@timestamp``. Matching is pure; the sink marks suppressed matches
(``sigstream.suppressed_by``) and still stores them, so they are counted, not lost, and
they never open or grow a finding.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Suppression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = ""
    tenant_id: str
    rule_id: str = "*"
    fields: dict[str, str] = Field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    reason: str = ""
    author: str = ""
    created: datetime | None = None

    def with_id(self) -> Suppression:
        """Deterministic id from what it matches, so re-adding the same one is a no-op."""
        key = json.dumps(
            [
                self.tenant_id,
                self.rule_id,
                sorted(self.fields.items()),
                str(self.start),
                str(self.end),
            ]
        )
        return self.model_copy(update={"id": hashlib.sha256(key.encode()).hexdigest()[:20]})


def lookup(doc: dict[str, Any], path: str) -> Any:
    """Value at a dotted path of a nested document (``@timestamp`` style keys included)."""
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def matches(suppression: Suppression, doc: dict[str, Any]) -> bool:
    """Does ``suppression`` silence the finding document ``doc`` (JSON form)?"""
    if lookup(doc, "sigstream.tenant_id") != suppression.tenant_id:
        return False
    if suppression.rule_id not in ("*", lookup(doc, "rule.id")):
        return False
    when = _parse_time(lookup(doc, "@timestamp"))
    if suppression.start and (when is None or when < suppression.start):
        return False
    if suppression.end and (when is None or when >= suppression.end):
        return False
    for path, expected in suppression.fields.items():
        value = lookup(doc, path)
        if value is None or str(value).lower() != str(expected).lower():
            return False
    return True


def suppressed_by(suppressions: list[Suppression], doc: dict[str, Any]) -> list[str]:
    """Ids of every suppression that silences ``doc``."""
    return [s.id for s in suppressions if matches(s, doc)]
