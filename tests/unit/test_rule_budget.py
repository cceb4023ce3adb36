"""The per-rule time budget: a rule whose own evaluation of its share of a micro-batch takes
longer than the budget is reported like a rule that raised (the driver quarantines it),
with its measured cost; the other rules carry on, and the work rules share is charged to
none of them. Runs the worker's real ``mapInArrow`` function over Arrow batches, without
Spark: the budget is pure logic in the task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from detections.compiler import ir
from detections.compiler.logsources import Route
from detections.compiler.to_arrow import PredNode, Slot
from detections.engine.matcher import _CACHE, Matcher, MatcherSpec
from detections.stream.worker import REASON_COLUMN, VALUE_COLUMN, Destinations, partition_processor
from schemas.generate import arrow_event_schema
from tests.sigma_cases import rule_ir

ANY_ROUTE = Route(product=None, event_types=None, service=None)
_EVENT = {
    "event_type": "process_creation",
    "sensor_id": "ws01",
    "host": "WS01",
    "event_time": "2026-11-20T10:00:00Z",
}
SLOW_S = 0.4
BUDGET_S = 0.15


@dataclass
class Shipped:
    """What ``SparkContext.broadcast`` hands the worker: an object with ``value``."""

    value: Any


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    full = [{"event_type": "process_creation", "extra": {}, **row} for row in rows]
    table = pa.Table.from_pylist(full, schema=arrow_event_schema())
    table = table.append_column(REASON_COLUMN, pa.nulls(len(rows), pa.string()))
    raw = [json.dumps(_EVENT | row | {"event_id": f"e{i}"}) for i, row in enumerate(rows)]
    table = table.append_column(VALUE_COLUMN, pa.array(raw))
    return table.combine_chunks().to_batches()[0]


def _with_slow_rule(spec: MatcherSpec, slow_index: int) -> Matcher:
    """The spec's matcher with one rule made deliberately slow (sleeps per evaluation)."""
    matcher = Matcher(spec.rules())
    program = matcher.programs[ANY_ROUTE]
    node = program.rules[slow_index]
    assert isinstance(node, PredNode)  # a single predicate

    def slow(rows: Any) -> np.ndarray:
        time.sleep(SLOW_S)
        return np.zeros(rows.n, dtype=bool)

    program.slots = [
        Slot(s.id, s.cost, evaluate=slow) if s.id == node.slot else s for s in program.slots
    ]
    _CACHE.clear()
    _CACHE[spec.digest] = matcher  # what spec.matcher() returns in this worker
    return matcher


@pytest.fixture
def spec() -> Iterator[MatcherSpec]:
    fast = rule_ir("sel:\n  Image|endswith: '\\never.exe'\ncondition: sel")
    slow = ir.Pred("CommandLine", ir.REGEX, "whatever", cased=True)
    other = ir.Pred("CommandLine", ir.REGEX, "^nothing-matches-this$", cased=True)
    spec = MatcherSpec.of([(0, ANY_ROUTE, fast), (1, ANY_ROUTE, slow), (2, ANY_ROUTE, other)])
    _with_slow_rule(spec, 1)
    yield spec
    _CACHE.clear()


def _run(spec: MatcherSpec, budget: float | None, batches: int = 2) -> dict[str, Any]:
    process = partition_processor(
        Shipped((spec, {})), (), ("http://unused:9200",), Destinations("unused"), None, 1.0, budget
    )
    rows = [{"Image": "C:\\cmd.exe", "CommandLine": f"x{i}"} for i in range(50)]
    (stats,) = list(process(iter([_batch(rows)] * batches)))
    row = stats.to_pylist()[0]
    return {**row, "errors": json.loads(row["errors"]), "rules": json.loads(row["rules"])}


def test_a_rule_over_budget_is_reported_with_its_cost_and_skipped(spec: MatcherSpec) -> None:
    stats = _run(spec, BUDGET_S)
    assert list(stats["errors"]) == ["1"]  # only the slow rule
    reason = stats["errors"]["1"]
    assert reason.startswith("over its time budget: ")
    seconds = float(reason.split(": ")[1].split(" s ")[0])
    assert seconds >= SLOW_S  # its measured cost, not the budget
    assert "evaluating 50 events" in reason and "budget 0.15 s per rule" in reason
    # Evaluated on the first Arrow batch only: the task skips it from then on...
    assert stats["rules"]["1"][0] == 50
    # ... while the other rules ran over both batches.
    assert stats["rules"]["0"][0] == 100 and stats["rules"]["2"][0] == 100
    assert stats["events"] == 100 and stats["matches"] == 0


def test_without_a_budget_the_slow_rule_only_costs_time(spec: MatcherSpec) -> None:
    stats = _run(spec, None)
    assert stats["errors"] == {}
    assert stats["rules"]["1"][0] == 100 and stats["rules"]["1"][2] >= 2 * SLOW_S


def test_shared_work_is_charged_to_no_rule() -> None:
    """The literal scan all literal rules of a route share is measured apart: the first rule
    to ask for it is not charged for it (else a cheap rule could be quarantined for the
    route's shared work)."""
    first = rule_ir("sel:\n  CommandLine|contains: 'needle-one'\ncondition: sel")
    second = rule_ir("sel:\n  CommandLine|contains: 'needle-two'\ncondition: sel")
    matcher = Matcher([(0, ANY_ROUTE, first), (1, ANY_ROUTE, second)])
    program = matcher.programs[ANY_ROUTE]
    (literals,) = program.literals
    scan = literals.scan

    def slow_scan(values: Any) -> dict[int, list[int]]:
        time.sleep(SLOW_S)
        return scan(values)

    literals.scan = slow_scan  # type: ignore[method-assign]
    rows = [{"CommandLine": "a needle-two here"}, {"CommandLine": "nothing"}]
    full = [{"event_type": "process_creation", "extra": {}, **r} for r in rows]
    result = matcher.match(pa.Table.from_pylist(full, schema=arrow_event_schema()))
    assert result.pairs() == [(0, 1)]
    assert result.shared_seconds >= SLOW_S
    assert max(result.seconds.values()) < SLOW_S
