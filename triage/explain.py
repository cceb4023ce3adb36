"""Why a finding matched, as text an analyst reads: its selections, fields and values
(``sigstream.match``), the rule's description, false positives, references and ATT&CK
links. Pure: the CLI prints it, the API returns the same data as JSON."""

from __future__ import annotations

import re
from typing import Any

ATTACK_TECHNIQUE_URL = "https://attack.mitre.org/techniques/{}/"
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$", re.IGNORECASE)


def attack_url(technique: str) -> str | None:
    """``T1059.001`` -> https://attack.mitre.org/techniques/T1059/001/ (None if not an id)."""
    if not _TECHNIQUE.match(technique):
        return None
    return ATTACK_TECHNIQUE_URL.format(technique.upper().replace(".", "/"))


def attack_links(finding: dict[str, Any]) -> list[tuple[str, str]]:
    """(technique id, ATT&CK page) for each technique of the finding."""
    techniques = ((finding.get("threat") or {}).get("technique") or {}).get("id") or []
    return [(t, url) for t in techniques if (url := attack_url(t))]


def _quoted(value: str | None) -> str:
    if value is None:
        return "null"
    return '"' + value + '"'


def field_line(entry: dict[str, Any]) -> str:
    """``Image|endswith "\\powershell.exe" = "C:\\...\\powershell.exe"``: the rule's
    field, modifiers and value as written, then the event's value (null: absent)."""
    name = entry.get("field") or ""
    modifier = entry.get("modifier") or ""
    key = f"{name}|{modifier}" if modifier else name
    return f"{key} {_quoted(entry.get('pattern'))} = {_quoted(entry.get('value'))}"


def why_lines(match: dict[str, Any] | None) -> list[str]:
    """The match details as lines: one per selection, its fields indented below it."""
    if not match:
        return []
    lines: list[str] = []
    for selection in match.get("selections") or []:
        lines.append(f"{selection.get('name')}:")
        lines += [f"  {field_line(entry)}" for entry in selection.get("fields") or []]
    keywords = match.get("keywords") or []
    if keywords:
        lines.append("keywords: " + ", ".join(_quoted(k) for k in keywords))
    return lines
