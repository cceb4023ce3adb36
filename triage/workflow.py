"""The triage workflow, pure: which state changes are allowed and what the audit says.

open -> acknowledged -> closed (with a resolution); a closed finding can be reopened.
Closing straight from open is allowed (obvious false positives). Every change appends an
entry to the finding's history; notes are appended with author and time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from schemas.findings import Resolution

#: The dispositions a closed finding records; false-positive rates and rule tuning read them.
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
ACTIONS = ("ack", "close", "reopen", "assign", "note")

_ALLOWED = {
    "ack": {"open"},
    "close": {"open", "acknowledged"},
    "reopen": {"closed", "acknowledged"},
}


class WorkflowError(ValueError):
    """The action is not allowed in the finding's current state, or lacks an argument."""


def _entry(at: datetime, actor: str, action: str, fld: str | None, old: Any, new: Any) -> dict:
    return {
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "field": fld,
        "old": None if old is None else str(old),
        "new": None if new is None else str(new),
    }


def apply(
    state: dict[str, Any],
    action: str,
    actor: str,
    at: datetime,
    *,
    resolution: str | None = None,
    assignee: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """The new ``sigstream.finding`` state after ``action`` (``state`` is not modified)."""
    new = {**state, "notes": list(state.get("notes") or []), "history": []}
    history = list(state.get("history") or [])
    status = state.get("status", "open")
    if action in _ALLOWED:
        if status not in _ALLOWED[action]:
            raise WorkflowError(f"cannot {action} a finding that is {status}")
        target = {"ack": "acknowledged", "close": "closed", "reopen": "open"}[action]
        if action == "close":
            if resolution not in RESOLUTIONS:
                raise WorkflowError(f"close needs a resolution: one of {', '.join(RESOLUTIONS)}")
            history.append(
                _entry(at, actor, action, "resolution", state.get("resolution"), resolution)
            )
            new["resolution"] = resolution
        if action == "reopen":
            new["resolution"] = None
        history.append(_entry(at, actor, action, "status", status, target))
        new["status"] = target
    elif action == "assign":
        if not assignee:
            raise WorkflowError("assign needs an assignee")
        history.append(_entry(at, actor, action, "assignee", state.get("assignee"), assignee))
        new["assignee"] = assignee
    elif action == "note":
        if not text or not text.strip():
            raise WorkflowError("a note needs text")
        new["notes"].append({"author": actor, "at": at.isoformat(), "text": text.strip()})
        history.append(_entry(at, actor, action, "notes", None, text.strip()[:200]))
    else:
        raise WorkflowError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    new["history"] = history
    new["updated"] = at.isoformat()
    return new
