"""Apply a detection plan: to a Spark DataFrame of parsed events, or to plain event dicts.

Both run ``detections.engine.matcher.Matcher``. In Spark it runs inside the Python workers over
Arrow batches (``mapInArrow``): the query plan Spark has to analyse and optimise is one
node whatever the number of rules, so a micro-batch costs milliseconds of planning instead
of the tens of seconds a Catalyst expression per rule cost with thousands of rules (see
``docs/engine.md``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from detections.compiler import explain, ir
from detections.compiler.logsources import field_source
from detections.compiler.plan import DetectionPlan
from detections.compiler.to_arrow import KEYWORD_SEPARATOR
from detections.engine.matcher import (
    Matcher,
    MatcherSpec,
    RuleSpec,
    keyword_columns,
    keyword_text_column,
)
from schemas.events import parse_event
from schemas.generate import arrow_event_schema


class RuleEvaluationError(RuntimeError):
    """A rule raised while being evaluated (``detect`` refuses to give partial answers)."""


def rule_specs(plan: DetectionPlan, skip: Collection[int] = ()) -> list[RuleSpec]:
    return [(p.index, p.route, p.rule.ir) for p in plan.rules if p.index not in skip]


def rule_explanations(
    plan: DetectionPlan, skip: Collection[int] = ()
) -> dict[int, explain.Explanation]:
    """Rule index -> the selections that explain its matches (``CompiledRule.explanation``)."""
    return {
        p.index: p.rule.explanation
        for p in plan.rules
        if p.index not in skip and p.rule.explanation
    }


def compile_matcher(
    plan: DetectionPlan, skip: Collection[int] = (), explained: bool = False
) -> Matcher:
    """The plan's rules compiled for the engine; ``matcher.errors`` lists rules it refused.
    ``explained``: its matches say why they matched (``MatchResult.details``)."""
    explanations = rule_explanations(plan, skip) if explained else None
    return Matcher(rule_specs(plan, skip), explanations)


def match_events(
    plan: DetectionPlan, events: Sequence[dict[str, Any]], matcher: Matcher | None = None
) -> list[tuple[int, int]]:
    """(event position, rule index) for every match of ``events`` (schema-form dicts, as a
    sensor sends them). Pure: the same matcher the streaming job runs in its workers."""
    matcher = matcher or compile_matcher(plan)
    rows = [parse_event(event).model_dump() for event in events]
    table = pa.Table.from_pylist(rows, schema=arrow_event_schema())
    result = matcher.match(table)
    if result.errors:
        raise RuleEvaluationError(describe_errors(rule_ids(plan), result.errors))
    return result.pairs()


def explain_events(
    plan: DetectionPlan, events: Sequence[dict[str, Any]], matcher: Matcher | None = None
) -> list[tuple[int, int, dict[str, Any]]]:
    """Like :func:`match_events`, with why each matched: (event position, rule index,
    match details as a finding's ``sigstream.match`` holds them)."""
    matcher = matcher or compile_matcher(plan, explained=True)
    rows = [parse_event(event).model_dump() for event in events]
    table = pa.Table.from_pylist(rows, schema=arrow_event_schema())
    result = matcher.match(table)
    if result.errors:
        raise RuleEvaluationError(describe_errors(rule_ids(plan), result.errors))
    details = result.details or [{"selections": [], "keywords": []}] * len(result.rows)
    return [(row, rule, d) for (row, rule), d in zip(result.pairs(), details, strict=True)]


def engine_inputs(
    plan: DetectionPlan, available: Sequence[str]
) -> tuple[list[str], dict[str, Column]]:
    """The columns the plan's rules read (of those ``available``): routing, the fields the
    rules name, ``extra``, and for routes with field-less (keyword) searches one column
    of joined text per set of keyword fields, computed in the JVM. Only these cross to
    the Python workers: with wide events that crossing is most of a batch's cost.
    Returns the event columns by name and the computed columns (name -> aliased column)."""
    needed = {"event_type", "logsource"}
    keyword_sets: set[tuple[str, ...]] = set()
    for planned in plan.rules:
        route = planned.route
        for name in ir.fields(planned.rule.ir):
            source = field_source(route, name)
            if source in ("col", "either"):
                needed.add(name)
            if source in ("extra", "either"):
                needed.add("extra")
        preds = ir.iter_preds(planned.rule.ir)
        if any(p.field is None and p.op not in ir.CONST_OPS for p in preds):
            keyword_sets.add(keyword_columns(route))
    computed = {}
    for names in sorted(keyword_sets):
        parts = [F.col(name) for name in names if name in available]
        if "extra" in available:
            parts.append(F.array_join(F.map_values("extra"), KEYWORD_SEPARATOR))
        column = keyword_text_column(names)
        computed[column] = F.concat_ws(KEYWORD_SEPARATOR, *parts).alias(column)
    return [name for name in available if name in needed], computed


def detect(
    events: DataFrame,
    plan: DetectionPlan,
    skip: Collection[int] = (),
    columns: Sequence[str] | None = None,
    explain: bool = False,
) -> DataFrame:
    """Rows of ``events`` that match, one per (rule_index, event): ``rule_index`` and the
    event ``columns`` (default: all of them); with ``explain``, a ``match`` column too: why
    it matched, as JSON (what a finding's ``sigstream.match`` holds).

    Rules the engine cannot compile are left out (``compile_matcher(plan).errors`` says
    which); a rule that fails at run time fails the query with its id and error.
    """
    explanations = rule_explanations(plan, skip) if explain else None
    spec = MatcherSpec.of(rule_specs(plan, skip), explanations)
    output = list(events.columns) if columns is None else list(columns)
    names, computed = engine_inputs(plan, events.columns)
    shipped = [*names, *[c for c in output if c not in names]]
    schema = T.StructType(
        [
            T.StructField("rule_index", T.IntegerType(), False),
            *[events.schema[name] for name in output],
            *([T.StructField("match", T.StringType(), True)] if explain else []),
        ]
    )
    ids = rule_ids(plan)  # the closure ships this, not the plan

    def match_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matcher = spec.matcher()
        for batch in batches:
            result = matcher.match(batch, explain=explain)
            if result.errors:
                raise RuleEvaluationError(describe_errors(ids, result.errors))
            if result.rows.size:
                found = matched_rows(batch.select(output), result.rows, result.rules)
                if explain:
                    whys = [json.dumps(d) for d in result.details or ()]
                    found = found.append_column("match", pa.array(whys, pa.string()))
                yield found

    return events.select(*shipped, *computed.values()).mapInArrow(match_partition, schema)


def matched_rows(batch: pa.RecordBatch, rows: Any, rules: Any) -> pa.RecordBatch:
    """The matched rows of ``batch`` with their rule index in front."""
    taken = batch.take(pa.array(rows))
    return pa.RecordBatch.from_arrays(
        [pa.array(rules, pa.int32()), *taken.columns],
        names=["rule_index", *batch.schema.names],
    )


def rule_ids(plan: DetectionPlan) -> dict[int, str]:
    return {p.index: str(p.rule.id) for p in plan.rules}


def describe_errors(ids: dict[int, str], errors: dict[int, str]) -> str:
    return "; ".join(f"rule {ids[i]}: {e}" for i, e in errors.items())
