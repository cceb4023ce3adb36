"""Chained correlations (Sigma: a correlation whose ``rules`` name other correlations). Pure.

A firing of an upstream correlation is one match of each correlation downstream of it;
the downstream then runs the same state machine (``state.advance``) as over base rules.
This module holds what the streaming side and the offline evaluator need for that:

* :func:`evaluation_order`: specs with every upstream before its downstreams;
* :func:`downstream_of`: upstream id -> the specs its firings feed;
* :func:`chain_match`: one upstream :class:`Firing` -> (downstream group key, :class:`Match`);
* :func:`silent_correlation_ids`: upstream correlations whose findings are not written
  (Sigma ``generate``), which still feed their chains.

The match a firing becomes:

* **time**: :func:`firing_time_ms`. For a window that fires as soon as it holds (a count
  type with ``gt``/``gte``) the time of the match with which the condition first held (the
  moment rsigma fires); for a window decided when it closes, its last match's time (the
  moment its content was complete). Never the window end, which is later than any event:
  "many failed logons *followed by* a success" would miss a success inside the window.
* **group key**: the downstream's group-by values taken from the upstream's group-by
  values (through the downstream's ``aliases``, which may map a name per upstream id), as
  rsigma does. The compiler refuses a downstream that groups by, or counts, a field its
  upstream does not group by (``chain_group_by`` / ``chain_field``): the firing does not
  carry it, and rsigma would silently group all such firings under one empty key.
* **rule** is the upstream correlation id, **event_id** its finding id (deterministic, so a
  replayed firing is the same match and counted once); host, sensor and tenant are those of
  the match at the firing time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from detections.correlation.compile import correlation_only_rule_ids
from detections.correlation.finding_docs import KEY_SEPARATOR, group_values
from detections.correlation.model import CorrelationSpec
from detections.correlation.state import Firing, Match, holds, measure


def evaluation_order(specs: Iterable[CorrelationSpec]) -> tuple[CorrelationSpec, ...]:
    """``specs`` with each correlation after the correlations it references (input order
    otherwise). The compiler already returns this order and refuses cycles; an upstream
    missing from ``specs`` is ignored here."""
    specs = list(specs)
    by_id = {s.id: s for s in specs}
    done: set[str] = set()
    out: list[CorrelationSpec] = []

    def visit(spec: CorrelationSpec, path: tuple[str, ...]) -> None:
        if spec.id in done or spec.id in path:
            return
        for up in spec.upstream:
            if up in by_id:
                visit(by_id[up], (*path, spec.id))
        done.add(spec.id)
        out.append(spec)

    for spec in specs:
        visit(spec, ())
    return tuple(out)


def downstream_of(specs: Iterable[CorrelationSpec]) -> dict[str, tuple[CorrelationSpec, ...]]:
    """Upstream correlation id -> the correlations its firings are matches of."""
    fed: dict[str, list[CorrelationSpec]] = {}
    for spec in specs:
        for up in spec.upstream:
            fed.setdefault(up, []).append(spec)
    return {up: tuple(downs) for up, downs in fed.items()}


def silent_correlation_ids(specs: Sequence[CorrelationSpec]) -> frozenset[str]:
    """Ids of correlations whose own findings are not written: referenced only by
    correlations with ``generate: false`` (Sigma v2, the rule base rules already follow:
    ``correlation_only_rule_ids``). Their firings still feed the correlations downstream.
    A correlation nothing references is always written."""
    ids = {s.id for s in specs}
    return frozenset(correlation_only_rule_ids(specs) & ids)


def firing_time_ms(spec: CorrelationSpec, firing: Firing) -> int:
    """The event time of ``firing`` as a match downstream (see the module docstring)."""
    matches = sorted(firing.matches)
    if not spec.decides_early:
        return matches[-1].time_ms
    for i, match in enumerate(matches):
        if i + 1 < len(matches) and matches[i + 1].time_ms == match.time_ms:
            continue  # the same millisecond: all of it or none
        if holds(spec.condition, measure(spec, matches[: i + 1])):
            return match.time_ms
    return matches[-1].time_ms


def chain_match(
    upstream: CorrelationSpec, firing: Firing, downstream: CorrelationSpec
) -> tuple[str, Match]:
    """The (group key, match) that ``firing`` of ``upstream`` is for ``downstream``."""
    values = group_values(upstream, firing.group_key)
    key = KEY_SEPARATOR.join(
        values.get(downstream.field_for(upstream.id, g), "") for g in downstream.group_by
    )
    field = downstream.condition.field
    value = values.get(downstream.field_for(upstream.id, field)) if field else None
    time_ms = firing_time_ms(upstream, firing)
    at = [m for m in sorted(firing.matches) if m.time_ms <= time_ms][-1]
    match = Match(
        time_ms, upstream.id, firing.finding_id, value, at.host, at.sensor_id, at.tenant_id
    )
    return key, match
