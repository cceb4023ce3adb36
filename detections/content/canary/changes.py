"""Which rules a deployment adds or changes (pure), so ``rules deploy`` proves those with
canaries before anyone promotes them: rules in rule files that are new or whose content
changed, and every rule when a filter or the placeholders changed (they change rules)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_ID = re.compile(r"^id:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


def rule_ids_in(text: str) -> list[str]:
    """Top-level ``id:`` values of a Sigma file (one per YAML document)."""
    return _ID.findall(text)


def changed_rule_ids(
    new_files: Sequence[Mapping[str, Any]], old_files: Sequence[Mapping[str, Any]] | None
) -> list[str]:
    """Rule ids of ``new_files`` (a bundle manifest's ``files``) that ``old_files`` did not
    hold in a file of the same content (compared by rule id, so a moved folder changes
    nothing); all of them when nothing was deployed before or a filter or the
    placeholders changed."""

    def by_rule(files: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        return {
            rid: str(f["sha256"])
            for f in files
            if f["role"] == "rule"
            for rid in rule_ids_in(str(f.get("content", "")))
        }

    def others(files: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
        return {(str(f["role"]), str(f["sha256"])) for f in files if f["role"] != "rule"}

    new = by_rule(new_files)
    if old_files is None or others(new_files) != others(old_files):
        return list(new)
    old = by_rule(old_files)
    return [rid for rid, sha in new.items() if old.get(rid) != sha]
