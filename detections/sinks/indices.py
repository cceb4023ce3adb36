"""Names of the indices that sit beside a findings index."""

from __future__ import annotations


def groups_index(index: str) -> str:
    """One document per finding group (counts, first and last seen, triage state)."""
    return f"{index}-groups"


def suppressions_index(index: str) -> str:
    """The suppression rules analysts set for the findings of ``index``."""
    return f"{index}-suppressions"
