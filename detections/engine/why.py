"""Why a rule matched an event: its selections that held, and on which field and value.

Computed by the engine that matched, from the results it already has: a selection's
values are trees over the same slots (distinct predicates of the route) as the rule
(``to_arrow.ProgramBuilder.add_rule``), and ``run`` reads them from the batch's memo. A
slot the rule's short-circuiting ``and`` skipped is computed by the same slot function.
It runs only for rules that matched in the batch, and reads values only for their
matched rows. Output shape (``schemas.findings.MatchInfo``)::

    {"selections": [{"name": "selection_img", "fields": [{"field": "Image",
      "modifier": "endswith", "pattern": "\\\\powershell.exe",
      "value": "C:\\\\Windows\\\\...\\\\powershell.exe"}]}],
     "keywords": ["mimikatz"]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from detections.compiler.to_arrow import ExplainSelection, Result, Rows, Slot, run

#: An event value longer than this (UTF-8 bytes) is cut: a finding explains, it does
#: not copy the event (the finding carries the whole event anyway).
VALUE_LIMIT = 1024


def explain_rows(
    selections: Sequence[ExplainSelection],
    rows: Rows,
    memo: dict[int, Result],
    slots: list[Slot],
    at: np.ndarray,
) -> list[dict[str, Any]]:
    """The match details of the route rows ``at`` (positions among the route's rows, all
    matched by the rule whose ``selections`` these are), one dict per row."""
    n = int(at.size)
    out: list[dict[str, Any]] = [{"selections": [], "keywords": []} for _ in range(n)]
    for selection in selections:
        held = _at(run(selection.node, rows, memo, slots), at)
        if not held.any():
            continue
        entries: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        for value in selection.values:
            hits = _at(run(value.node, rows, memo, slots), at) & held
            if not hits.any():
                continue
            found = np.flatnonzero(hits)
            if value.key is None:  # a keyword: the value as written is the answer
                for i in found.tolist():
                    keywords = out[i]["keywords"]
                    if value.pattern not in keywords:
                        keywords.append(value.pattern)
                continue
            distinct = rows.distinct(value.key)
            texts = distinct.pylist()
            positions = distinct.positions[at[found]]
            for i, position in zip(found.tolist(), positions.tolist(), strict=True):
                entries[i].append(
                    {
                        "field": value.field,
                        "modifier": value.modifier,
                        "pattern": value.pattern,
                        "value": truncate(texts[position]),
                    }
                )
        for i in np.flatnonzero(held).tolist():
            if entries[i]:
                out[i]["selections"].append({"name": selection.name, "fields": entries[i]})
    return out


def _at(result: Result, at: np.ndarray) -> np.ndarray:
    if result is None:
        return np.zeros(at.size, dtype=bool)
    return result[at]


def truncate(value: str | None, limit: int = VALUE_LIMIT) -> str | None:
    """``value`` cut to at most ``limit`` UTF-8 bytes (never inside a character)."""
    if value is None or len(value) <= limit // 4:
        return value
    data = value.encode("utf-8")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", errors="ignore")
