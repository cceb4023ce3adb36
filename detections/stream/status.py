"""The detection job's status file: what is loaded, what was refused or quarantined and why.

The job rewrites it atomically at start, after each micro-batch and whenever a rule is
quarantined, so operators (``sigstream rules status``) see bad content without reading logs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.safe_yaml import ContentError, expect_mapping, load_json, read_content
from detections.compiler.plan import DetectionPlan


@dataclass
class QuarantinedRule:
    rule_id: str
    title: str
    reason: str
    at: str


@dataclass
class JobStatus:
    plan_version: str
    rules_loaded: int
    rejected_by_reason: dict[str, int]
    rejected: list[dict[str, Any]]
    quarantined: list[QuarantinedRule] = field(default_factory=list)
    batches: int = 0
    events: int = 0
    dead_letters: int = 0
    findings: int = 0  # finding documents written (findings and shadow index)
    matches: int = 0  # rule matches (also those of rules that write no finding)
    updated: str = ""

    @classmethod
    def for_plan(cls, plan: DetectionPlan) -> JobStatus:
        return cls(
            plan_version=plan.version,
            rules_loaded=len(plan.rules),
            rejected_by_reason=dict(Counter(r.reason for r in plan.rejections)),
            rejected=[asdict(r) for r in plan.rejections],
        )

    def quarantine(self, plan: DetectionPlan, bad: dict[int, str]) -> None:
        now = datetime.now(UTC).isoformat()
        for index, reason in bad.items():
            rule = plan.rules[index].rule
            self.quarantined.append(QuarantinedRule(str(rule.id), rule.title, reason, now))

    def write(self, path: Path) -> None:
        self.updated = datetime.now(UTC).isoformat()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status-")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(tmp, path)


def quarantined_reasons(status: Mapping[str, Any] | None) -> dict[str, str]:
    """Rule id -> reason of the rules a status (``read_status``) says are quarantined;
    an entry that is not an object (a hand-edited or damaged file) is skipped."""
    if not isinstance(status, Mapping):
        return {}
    entries = status.get("quarantined") or []
    if not isinstance(entries, list):
        return {}
    return {str(q.get("rule_id")): str(q.get("reason")) for q in entries if isinstance(q, dict)}


def quarantined_ids(status: Mapping[str, Any] | None) -> set[str]:
    """The ids of the rules a status says are quarantined (``quarantined_reasons``)."""
    return set(quarantined_reasons(status))


def read_status(path: Path) -> dict[str, Any]:
    """The job's status file; ContentError (one line) when it is not a JSON object."""
    try:
        return expect_mapping(load_json(read_content(path, 16 << 20), max_bytes=16 << 20), "status")
    except ContentError as exc:
        raise ContentError(f"{path}: {exc}") from None
