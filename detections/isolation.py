"""Fault isolation: find the rules that make a micro-batch fail, so they can be quarantined
and the batch retried without them (the CrowdStrike lesson: bad content must never take
the pipeline down).

A rule can compile and still fail at run time (a regex the JVM rejects, an expression that
throws on some value). When evaluating a batch fails, the rule set is bisected on that same
batch: halves that evaluate cleanly are cleared, halves that fail are split again, down to
single rules. That costs O(k log n) evaluations for k bad rules among n, and only happens
when something is actually broken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pyspark.sql import DataFrame

from detections.engine import RuleExpressions, detect
from detections.plan import DetectionPlan

log = logging.getLogger("sigstream.isolation")


def subset(rules: RuleExpressions, indices: Sequence[int]) -> RuleExpressions:
    keep = set(indices)
    return RuleExpressions(
        columns={i: c for i, c in rules.columns.items() if i in keep},
        quarantined=dict(rules.quarantined),
        lowered=rules.lowered,
    )


def without(rules: RuleExpressions, bad: dict[int, str]) -> RuleExpressions:
    """The same expressions minus ``bad``, which join the quarantined rules with reasons."""
    return RuleExpressions(
        columns={i: c for i, c in rules.columns.items() if i not in bad},
        quarantined={**rules.quarantined, **bad},
        lowered=rules.lowered,
    )


def evaluation_error(events: DataFrame, plan: DetectionPlan, rules: RuleExpressions) -> str | None:
    """Evaluate ``rules`` over ``events``; the error text if that fails, else None."""
    try:
        detect(events, plan, rules).count()
    except Exception as exc:  # Py4JJavaError, AnalysisException, ...: any failure counts
        return _first_line(exc)
    return None


def find_failing_rules(
    events: DataFrame,
    plan: DetectionPlan,
    rules: RuleExpressions,
    probe: Callable[[DataFrame, DetectionPlan, RuleExpressions], str | None] = evaluation_error,
) -> dict[int, str]:
    """Rule index -> error, for every rule that fails on its own over ``events``."""
    failing: dict[int, str] = {}

    def search(indices: list[int], known_error: str | None = None) -> None:
        error = known_error or probe(events, plan, subset(rules, indices))
        if error is None:
            return
        if len(indices) == 1:
            failing[indices[0]] = error
            log.warning("rule %s fails at run time: %s", plan.rules[indices[0]].rule.id, error)
            return
        middle = len(indices) // 2
        search(indices[:middle])
        search(indices[middle:])

    search(sorted(rules.columns))
    return failing


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if "Exception" in line or "Error" in line:
            return line[:500]
    return text.splitlines()[0][:500]
