"""What kind of finding a document is: the small table routes match ``kind`` against.

A kind is decided by the first row whose test accepts the document; Sigma is the
fallback. A new stage's findings get a kind by appending a ``(kind, test)`` pair here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detections.content.canary.finding_docs import NOT_FIRING_RULE_ID
from detections.content.deploy.demotion import DEMOTION_RULE_ID
from detections.drift.finding_docs import FIELD_DRIFT_RULE
from detections.health.finding_docs import HEALTH_RULES

Doc = dict[str, Any]

#: Kinds of Sigstream's own findings, by the rule ids that make them (the overview counts
#: them from this table too).
RULE_IDS_OF_KIND: dict[str, frozenset[str]] = {
    "sensor_health": frozenset(rule.id for rule in HEALTH_RULES.values()),
    "rule_demotion": frozenset({DEMOTION_RULE_ID}),
    "rule_health": frozenset({NOT_FIRING_RULE_ID}),
    "field_drift": frozenset({FIELD_DRIFT_RULE.id}),
}


def _rule_id(doc: Doc) -> str:
    return str((doc.get("rule") or {}).get("id") or "")


def _is_correlation(doc: Doc) -> bool:
    return bool((doc.get("sigstream") or {}).get("correlation"))


#: (kind, test) in order; the first match wins.
KIND_TABLE: list[tuple[str, Callable[[Doc], bool]]] = [
    ("correlation", _is_correlation),
    *((kind, lambda doc, ids=ids: _rule_id(doc) in ids) for kind, ids in RULE_IDS_OF_KIND.items()),
]
DEFAULT_KIND = "sigma"
#: Every kind a route may name.
KNOWN_KINDS = frozenset([kind for kind, _ in KIND_TABLE] + [DEFAULT_KIND])


def finding_kind(doc: Doc) -> str:
    for kind, test in KIND_TABLE:
        if test(doc):
            return kind
    return DEFAULT_KIND
