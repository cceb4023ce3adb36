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
    have with the same content (all of them when nothing was deployed before)."""
    old = {f["path"]: f["sha256"] for f in old_files or []}
    everything = (
        old_files is None
        or any(f["role"] != "rule" and old.get(f["path"]) != f["sha256"] for f in new_files)
        or any(
            f["role"] != "rule" and f["path"] not in {n["path"] for n in new_files}
            for f in old_files or []
        )
    )
    out: list[str] = []
    for f in new_files:
        if f["role"] == "rule" and (everything or old.get(f["path"]) != f["sha256"]):
            out.extend(rule_ids_in(str(f.get("content", ""))))
    return list(dict.fromkeys(out))
