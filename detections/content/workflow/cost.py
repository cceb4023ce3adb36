"""What a rule costs: regexes that can backtrack catastrophically (static), and measured
evaluation time per event on a sample of real events (the engine's own matcher).

A rule is flagged when its measured cost is more than ``factor`` times the median of the
rules measured with it, so one expensive rule cannot hide among cheap ones, and when a
regex has a shape known to backtrack exponentially or polynomially in backtracking engines
(Python's ``re``, PCRE, Java): the workers run RE2, where it is linear, but the same Sigma
rule may go to backends that backtrack.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from detections.compiler import ir
from detections.compiler.plan import DetectionPlan, PlannedRule, plan_rules
from schemas.events import parse_event
from schemas.generate import arrow_event_schema

_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}
_UNBOUNDED = sre_constants.MAXREPEAT


@dataclass(frozen=True)
class RegexIssue:
    pattern: str
    problem: str


def _children(op: Any, av: Any) -> list[Any]:
    """Sub-patterns of one parsed regex node."""
    if op in _REPEATS:
        return [av[2]]
    if op == sre_constants.SUBPATTERN:
        return [av[3]]
    if op == sre_constants.BRANCH:
        return list(av[1])
    if op == sre_constants.ATOMIC_GROUP:
        return [av]
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [av[1]]
    return []


def _has_repeat(pattern: Any) -> bool:
    for op, av in pattern:
        if op in _REPEATS and av[1] > 1:
            return True
        if any(_has_repeat(child) for child in _children(op, av)):
            return True
    return False


def _first_chars(pattern: Any) -> set[Any] | None:
    """What the pattern's first character can be, or None for 'anything / unknown'."""
    for op, av in pattern:
        if op == sre_constants.LITERAL:
            return {chr(av).lower()}
        if op == sre_constants.SUBPATTERN:
            return _first_chars(av[3])
        return None
    return set()


def _overlapping_branches(branches: Sequence[Any]) -> bool:
    seen: set[Any] = set()
    for branch in branches:
        first = _first_chars(branch)
        if first is None or first & seen:
            return True
        seen |= first
    return False


def _wild(op: Any, av: Any) -> Any:
    """For an unbounded repeat of one item (``.*``, ``\\S+``, ``[^x]*``): ``"any"`` for the
    dot, else the item itself; None for everything else."""
    if op not in _REPEATS or av[1] != _UNBOUNDED or len(av[2]) != 1:
        return None
    inner_op, inner_av = av[2][0]
    if inner_op == sre_constants.ANY:
        return "any"
    if inner_op == sre_constants.IN:
        return repr(inner_av)
    return None


def _overlap(a: Any, b: Any) -> bool:
    """Whether two adjacent repeats can both match the same characters (so backtracking
    tries every split between them)."""
    return a is not None and b is not None and ("any" in (a, b) or a == b)


def _scan(pattern: Any, out: list[str]) -> None:
    previous: Any = None
    for op, av in pattern:
        if op in _REPEATS and (av[1] == _UNBOUNDED or av[1] > 16):
            body = av[2]
            if _has_repeat(body):
                out.append("nested quantifier, e.g. (a+)+: exponential backtracking")
            items = list(body)
            for inner_op, inner_av in body:
                if inner_op == sre_constants.SUBPATTERN:
                    items.extend(inner_av[3])
            for inner_op, inner_av in items:
                if inner_op == sre_constants.BRANCH and _overlapping_branches(inner_av[1]):
                    out.append("quantified alternation with overlapping branches, e.g. (\\w|\\d)+")
        wild = _wild(op, av)
        if _overlap(previous, wild):
            out.append("adjacent unbounded wildcards, e.g. .*.*: polynomial backtracking")
        previous = wild
        for child in _children(op, av):
            _scan(child, out)


def regex_issues(pattern: str) -> list[str]:
    """Problems of one regex: invalid, or shapes that backtrack catastrophically."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        return [f"invalid regex: {exc}"]
    found: list[str] = []
    _scan(parsed, found)
    return sorted(set(found))


def rule_regex_issues(rule: PlannedRule) -> list[RegexIssue]:
    return [
        RegexIssue(str(p.value), problem)
        for p in ir.iter_preds(rule.rule.ir)
        if p.op == ir.REGEX
        for problem in regex_issues(str(p.value))
    ]


# --- measured ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleCost:
    rule_id: str
    title: str
    us_per_event: float
    ratio_to_median: float
    flagged: bool


#: Seconds per event one plan takes to evaluate.
Timer = Callable[[DetectionPlan], float]


def engine_timer(events: Sequence[dict[str, Any]], repeats: int = 3, min_rows: int = 2000) -> Timer:
    """Seconds per event the engine's matcher needs for one plan (best of ``repeats``),
    with the events converted to Arrow once, as the job's batches are. Small samples are
    repeated up to ``min_rows`` so one timing is long enough to be above timer noise."""
    import pyarrow as pa

    from detections.engine.apply import compile_matcher

    rows = [parse_event(e).model_dump() for e in events]
    rows = rows * max(1, -(-min_rows // max(len(rows), 1)))
    table = pa.Table.from_pylist(rows, schema=arrow_event_schema())

    def timed(plan: DetectionPlan) -> float:
        matcher = compile_matcher(plan)
        matcher.match(table.slice(0, 1))  # anything compiled lazily, outside the timing
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            matcher.match(table)
            best = min(best, time.perf_counter() - started)
        return best / len(rows)

    return timed


def measure_costs(
    plan: DetectionPlan,
    events: Sequence[dict[str, Any]],
    *,
    factor: float = 10.0,
    timer: Timer | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[RuleCost]:
    """Per-rule evaluation cost in µs per event: each rule alone over the same events
    (what adding it to the job costs), flagged when above ``factor`` x the median.

    Rules above the line are timed twice more and keep their best time, so a pause of a
    busy machine does not flag a cheap rule.
    """
    if not events:
        return []
    measure = timer or engine_timer(events)
    singles = [(p, plan_rules([p.rule], allow_unknown_fields=True)) for p in plan.rules]
    per_event: dict[int, float] = {}
    for n, (planned, single) in enumerate(singles, start=1):
        per_event[planned.index] = measure(single) * 1e6 if single.rules else 0.0
        if progress is not None:
            progress(n, len(singles))
    median = statistics.median(per_event.values()) or 1e-9
    for planned, single in singles:
        for _ in range(2):
            if per_event[planned.index] > factor * median:
                per_event[planned.index] = min(per_event[planned.index], measure(single) * 1e6)
    return [
        RuleCost(
            rule_id=str(p.rule.id),
            title=p.rule.title,
            us_per_event=per_event[p.index],
            ratio_to_median=per_event[p.index] / median,
            flagged=per_event[p.index] > factor * median,
        )
        for p, _ in singles
    ]


def sample_events(paths: Iterable[Any], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` schema events from replayable files (OTRF, regression, .jsonl)."""
    from ingest.sources import iter_items

    out: list[dict[str, Any]] = []
    for item in iter_items(paths):
        if item.event is not None:
            out.append(item.event.model_dump(mode="json"))
            if len(out) >= limit:
                break
    return out
