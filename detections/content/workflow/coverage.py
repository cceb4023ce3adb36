"""ATT&CK coverage of a rule set, from the rules' Sigma tags, and an ATT&CK Navigator layer.

Sigma tags rules ``attack.<tactic-short-name>`` and ``attack.tNNNN[.NNN]``, by convention
each tactic followed by its techniques; a technique is counted under the tactic tag before
it (techniques tagged before any tactic count under all of the rule's tactics). ATT&CK
itself is not downloaded: the machine that runs this may be offline, and the tags are
what the rule author asserted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Enterprise ATT&CK tactics in kill-chain order: short name -> (id, display name).
TACTICS: dict[str, tuple[str, str]] = {
    "reconnaissance": ("TA0043", "Reconnaissance"),
    "resource-development": ("TA0042", "Resource Development"),
    "initial-access": ("TA0001", "Initial Access"),
    "execution": ("TA0002", "Execution"),
    "persistence": ("TA0003", "Persistence"),
    "privilege-escalation": ("TA0004", "Privilege Escalation"),
    "defense-evasion": ("TA0005", "Defense Evasion"),
    "credential-access": ("TA0006", "Credential Access"),
    "discovery": ("TA0007", "Discovery"),
    "lateral-movement": ("TA0008", "Lateral Movement"),
    "collection": ("TA0009", "Collection"),
    "command-and-control": ("TA0011", "Command and Control"),
    "exfiltration": ("TA0010", "Exfiltration"),
    "impact": ("TA0040", "Impact"),
}
_TECHNIQUE = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
UNSPECIFIED = "(no tactic tag)"


@dataclass(frozen=True)
class CoveredRule:
    rule_id: str
    title: str
    tags: tuple[str, ...]
    mode: str = "active"


@dataclass
class Coverage:
    # tactic short name -> technique id -> titles of rules
    matrix: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    rules: int = 0
    untagged: list[str] = field(default_factory=list)  # rules with no ATT&CK technique

    @property
    def techniques(self) -> set[str]:
        return {t for by_tech in self.matrix.values() for t in by_tech}


def parse_tags(tags: Iterable[str]) -> list[tuple[str | None, str]]:
    """(tactic short name or None, technique id) pairs named by Sigma tags, in order."""
    pairs: list[tuple[str | None, str]] = []
    tactic: str | None = None
    for tag in tags:
        text = tag.strip().lower()
        match = _TECHNIQUE.match(text)
        if match:
            pairs.append((tactic, match.group(1).upper()))
        elif text.startswith("attack.") and text[7:].replace("_", "-") in TACTICS:
            tactic = text[7:].replace("_", "-")
    return pairs


def rule_cells(tags: Iterable[str]) -> set[tuple[str, str]]:
    """(tactic, technique) cells one rule covers."""
    tags = list(tags)
    pairs = parse_tags(tags)
    names = (t.strip().lower() for t in tags)
    tactics = {n[7:].replace("_", "-") for n in names if n.startswith("attack.")} & set(TACTICS)
    cells: set[tuple[str, str]] = set()
    for tactic, technique in pairs:
        for name in [tactic] if tactic else sorted(tactics) or [UNSPECIFIED]:
            cells.add((name, technique))
    return cells


def coverage(rules: Iterable[CoveredRule]) -> Coverage:
    result = Coverage()
    matrix: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for rule in rules:
        result.rules += 1
        cells = rule_cells(rule.tags)
        if not cells:
            result.untagged.append(rule.title)
        for tactic, technique in cells:
            matrix[tactic][technique].append(rule.title)
    order = [*TACTICS, UNSPECIFIED]
    result.matrix = {
        t: {k: sorted(v) for k, v in sorted(matrix[t].items())} for t in order if t in matrix
    }
    return result


def navigator_layer(cov: Coverage, name: str, description: str = "") -> dict[str, Any]:
    """An ATT&CK Navigator layer (format 4.5): score = number of rules per technique."""
    techniques: list[dict[str, Any]] = []
    parents: set[tuple[str, str]] = set()
    top = 1
    for tactic, by_tech in cov.matrix.items():
        for technique, titles in by_tech.items():
            top = max(top, len(titles))
            entry: dict[str, Any] = {
                "techniqueID": technique,
                "score": len(titles),
                "comment": "; ".join(titles),
                "enabled": True,
                "showSubtechniques": False,
            }
            if tactic != UNSPECIFIED:
                entry["tactic"] = tactic
            techniques.append(entry)
            if "." in technique and tactic != UNSPECIFIED:
                parents.add((technique.split(".")[0], tactic))
    for parent, tactic in sorted(parents):
        techniques.append({"techniqueID": parent, "tactic": tactic, "showSubtechniques": True})
    return {
        "name": name,
        "versions": {"layer": "4.5", "navigator": "5.1.0", "attack": "17"},
        "domain": "enterprise-attack",
        "description": description,
        "sorting": 3,
        "layout": {"layout": "side", "showID": True, "showName": True},
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": ["#ffffff", "#66b1ff", "#ff6666"], "minValue": 0, "maxValue": top},
        "legendItems": [],
        "metadata": [{"name": "rules", "value": str(cov.rules)}],
        "showTacticRowBackground": False,
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
    }
