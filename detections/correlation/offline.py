"""Correlations over a finite list of events, without Spark: the engine's matcher (the
code the Spark workers run) and the same state machine, with every event on time.

For rule tests, corpus tests and differential checks: the streaming query gives the same
firings when no match arrives behind the watermark. All eight types, and chained
correlations: correlations run upstream first, and each upstream firing is a match of the
correlations downstream of it (``chain.chain_match``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detections.correlation.chain import chain_match, downstream_of, evaluation_order
from detections.correlation.feed import CorrelationFeed, keyed_match
from detections.correlation.model import CorrelationSpec
from detections.correlation.query import CorrelationContent
from detections.correlation.state import Firing, KeyState, Match, advance
from detections.engine.apply import match_events

_END_OF_TIME = 2**62


def correlate_events(
    content: CorrelationContent, events: Sequence[dict[str, Any]]
) -> list[tuple[CorrelationSpec, Firing]]:
    """Every firing of ``content``'s correlations over ``events`` (schema-form dicts)."""
    pairs = match_events(content.plan, list(events)) if events else []
    ids = {p.index: str(p.rule.id) for p in content.plan.rules}
    by_key: dict[tuple[int, str], list[Match]] = {}
    feed = CorrelationFeed.of(content.specs)  # what the detection pass publishes
    number_of = {spec.id: ci for ci, spec in enumerate(content.specs)}
    for position, index in pairs:
        rule, event = ids[index], events[position]
        for entry in feed.by_rule.get(rule, ()):
            key, match = keyed_match(entry, rule, event)
            by_key.setdefault((number_of[entry.corr], key), []).append(match)
    fed = downstream_of(content.specs)
    number = {id(spec): ci for ci, spec in enumerate(content.specs)}
    firings = []
    for spec in evaluation_order(content.specs):
        ci = number[id(spec)]
        keys = sorted(key for c, key in by_key if c == ci)
        for key in keys:
            matches = by_key[(ci, key)]
            step = advance(spec, key, KeyState(), matches, -1)
            step = advance(spec, key, step.state, [], _END_OF_TIME)
            for firing in step.firings:
                firings.append((spec, firing))
                for down in fed.get(spec.id, ()):
                    down_key, match = chain_match(spec, firing, down)
                    by_key.setdefault((number[id(down)], down_key), []).append(match)
    return firings
