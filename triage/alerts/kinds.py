"""What kind of finding a document is: the small table routes match ``kind`` against.

A kind is decided by the first row whose test accepts the document; Sigma is the
fallback. Other stages add rows (``rule_health``, ``field_drift``) by appending a
``(kind, test)`` pair here, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detections.content.canary.finding_docs import NOT_FIRING_RULE_ID
from detections.content.deploy.demotion import DEMOTION_RULE_ID
from detections.health.finding_docs import HEALTH_RULES

Doc = dict[str, Any]

_HEALTH_IDS = frozenset(rule.id for rule in HEALTH_RULES.values())


def _rule_id(doc: Doc) -> str:
    return str((doc.get("rule") or {}).get("id") or "")


def _is_correlation(doc: Doc) -> bool:
    return bool((doc.get("sigstream") or {}).get("correlation"))


#: (kind, test) in order; the first match wins.
KIND_TABLE: list[tuple[str, Callable[[Doc], bool]]] = [
    ("correlation", _is_correlation),
    ("sensor_health", lambda doc: _rule_id(doc) in _HEALTH_IDS),
    ("rule_demotion", lambda doc: _rule_id(doc) == DEMOTION_RULE_ID),
    ("rule_health", lambda doc: _rule_id(doc) == NOT_FIRING_RULE_ID),
]
DEFAULT_KIND = "sigma"
#: Every kind a route may name (the table's, the default, and kinds others will add).
KNOWN_KINDS = frozenset(
    [kind for kind, _ in KIND_TABLE] + [DEFAULT_KIND, "rule_health", "field_drift"]
)


def finding_kind(doc: Doc) -> str:
    for kind, test in KIND_TABLE:
        if test(doc):
            return kind
    return DEFAULT_KIND
