"""Apply a detection plan to a DataFrame of parsed events, entirely as Spark expressions.

For every event the engine computes the array of indices of the rules that match it:
rules are grouped by route and a route's rules are only evaluated for events of that
route (a CASE WHEN per route), in chunks so that no generated method grows past the JVM's
limits. Matches are then exploded into one row per (rule, event).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from detections.compiler import to_column
from detections.logsources import Route, field_source
from detections.plan import DetectionPlan
from schemas.events import MODEL_BY_TYPE, Envelope
from schemas.generate import event_columns

#: Rules per generated array expression; keeps each chunk's code well under 64 KB.
DEFAULT_CHUNK_SIZE = 12


def _string_columns() -> set[str]:
    return {name for name, ann in event_columns().items() if ann is str}


def field_column(source: str, name: str) -> Column:
    if source == "col":
        return F.col(name)
    if source == "extra":
        return F.col("extra").getItem(name)
    return F.coalesce(F.col(name).cast("string"), F.col("extra").getItem(name))


def lowered_column_name(source: str, name: str) -> str:
    """A safe, unique column name for the lower-cased value of a field."""
    safe = re.sub(r"\W", "_", name)
    digest = hashlib.sha1(f"{source}:{name}".encode()).hexdigest()[:6]
    return f"__lc_{source}_{safe}_{digest}"


def event_resolver(route: Route) -> Callable[[str], Column]:
    """How a Sigma field name becomes a column for events of ``route``."""
    return lambda name: field_column(field_source(route, name), name)


def keyword_columns(route: Route) -> list[Column]:
    """Columns a field-less (keyword) detection searches: every string field of the route."""
    strings = _string_columns() - set(Envelope.model_fields) - {"event_type"}
    if route.event_types:
        declared: set[str] = set()
        for event_type in route.event_types:
            declared |= set(MODEL_BY_TYPE[event_type].model_fields)
        strings &= declared
    cols = [F.col(name) for name in sorted(strings)]
    cols.append(F.concat_ws("\n", F.map_values(F.col("extra"))))
    return cols


def route_condition(route: Route) -> Column:
    cond = F.lit(True)
    if route.product:
        cond = cond & (F.lower(F.col("logsource.product")) == route.product)
    if route.event_types:
        cond = cond & F.col("event_type").isin(*route.event_types)
    if route.service:
        cond = cond & (F.lower(F.col("logsource.service")) == route.service)
    return cond


@dataclass(frozen=True)
class RuleExpressions:
    """Spark expressions of a plan's rules, and the rules that could not be built.

    ``lowered`` holds the per-event pre-projection the rule expressions read: each field
    any rule compares case-insensitively, cast to string and lower-cased once per event
    instead of once per predicate.
    """

    columns: dict[int, Column]
    quarantined: dict[int, str]
    lowered: dict[str, Column]


def build_rule_columns(plan: DetectionPlan, skip: Sequence[int] = ()) -> RuleExpressions:
    """One boolean Column per rule; a rule whose expression cannot be built is quarantined."""
    columns: dict[int, Column] = {}
    quarantined: dict[int, str] = {}
    lowered: dict[str, Column] = {}
    keywords: dict[Route, list[Column]] = {}

    def lowered_for(route: Route) -> Callable[[str], Column]:
        def resolve(name: str) -> Column:
            source = field_source(route, name)
            alias = lowered_column_name(source, name)
            if alias not in lowered:
                lowered[alias] = F.lower(field_column(source, name).cast("string"))
            return F.col(alias)

        return resolve

    for planned in plan.rules:
        if planned.index in skip:
            continue
        route = planned.route
        if route not in keywords:
            keywords[route] = keyword_columns(route)
        try:
            columns[planned.index] = to_column(
                planned.rule.ir,
                event_resolver(route),
                keyword_columns=keywords[route],
                lowered=lowered_for(route),
            )
        except Exception as exc:  # a bad rule must never stop the others
            quarantined[planned.index] = f"cannot build Spark expression: {exc}"
    return RuleExpressions(columns, quarantined, lowered)


def matched_rules(
    plan: DetectionPlan, rules: RuleExpressions, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Column:
    """array<int> of the indices of the rules matching the current row."""
    empty = F.array().cast("array<int>")
    parts: list[Column] = []
    for route, indices in plan.routes.items():
        live = [i for i in indices if i in rules.columns]
        if not live:
            continue
        cond = route_condition(route)
        for start in range(0, len(live), chunk_size):
            chunk = live[start : start + chunk_size]
            hits = F.array(*[F.when(rules.columns[i], F.lit(i)) for i in chunk])
            parts.append(F.when(cond, F.array_compact(hits)).otherwise(empty))
    if not parts:
        return empty
    return F.flatten(F.array(*parts))


def detect(
    events: DataFrame, plan: DetectionPlan, rules: RuleExpressions | None = None
) -> DataFrame:
    """Rows of ``events`` that match, one per (rule_index, event), with all event columns."""
    rules = rules or build_rule_columns(plan)
    prepared = events.select("*", *[expr.alias(name) for name, expr in rules.lowered.items()])
    hits = prepared.select(*events.columns, matched_rules(plan, rules).alias("_hits"))
    return hits.where(F.size("_hits") > 0).select(
        F.explode("_hits").alias("rule_index"), *[c for c in events.columns]
    )
