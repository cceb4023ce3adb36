"""``sigstream rules validate``: every check a rule must pass before it is bundled.

1. Sigma: pySigma's own validator set (``sigma.validators``, every validator installed as a
   pySigma plugin), the checks ``sigma check`` of sigma-cli runs. sigma-cli itself is not a
   dependency: it pins pySigma < 2 and the compiler uses pySigma 2. Validators that need
   MITRE data downloaded at run time are reported as skipped when it cannot be fetched.
2. Compile: the project's compiler and planner (``detections.compiler.plan``), with their reasons.
3. Fields: a field no event of the rule's logsource carries is an error, or a warning with
   ``allow_unknown_fields``.
   A regex RE2 cannot run (backreferences, lookaround, ...) is a compile error
   (``unsupported_regex``): the engine runs every regex on RE2, in linear time.
4. Cost: regexes with catastrophic-backtracking shapes (a warning: harmless on RE2, costly
   in the backtracking engines other Sigma backends use), and rules whose measured
   evaluation cost per event is far above the median (``detections.content.workflow.cost``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from detections.compiler import DEFAULT_CONFIG, CompilerConfig, compile_path
from detections.compiler.plan import DetectionPlan, plan_rules
from detections.content.workflow.cost import RuleCost, measure_costs, rule_regex_issues


@dataclass(frozen=True)
class Issue:
    check: str  # sigma | compile | fields | cost
    severity: str  # error | warning
    path: str | None
    rule_id: str | None
    message: str


@dataclass
class ValidationReport:
    plan: DetectionPlan
    issues: list[Issue] = field(default_factory=list)
    costs: list[RuleCost] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # checks that could not run, and why

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def sigma_checks(paths: Sequence[Path], fail_on_issues: bool) -> tuple[list[Issue], list[str]]:
    """pySigma's validators over the rules, as sigma-cli's ``check`` runs them."""
    from sigma.collection import SigmaCollection
    from sigma.plugins import InstalledSigmaPlugins
    from sigma.validation import SigmaValidator

    collection = SigmaCollection.load_ruleset(list(paths), collect_errors=True)
    issues: list[Issue] = []
    for error in collection.errors:
        issues.append(Issue("sigma", "error", None, None, str(error)))
    rules = list(collection)
    for rule in rules:
        where = str(rule.source.path) if rule.source is not None else None
        for error in rule.errors:
            issues.append(
                Issue("sigma", "error", where, str(getattr(rule, "id", None)), str(error))
            )
    severity = "error" if fail_on_issues else "warning"
    skipped: list[str] = []
    validators = InstalledSigmaPlugins.autodiscover().validators
    for name, cls in sorted(validators.items()):
        validator = SigmaValidator([cls])  # type: ignore[list-item]
        try:
            found = [i for rule in rules for i in validator.validate_rule(rule)]  # type: ignore[arg-type]
            found += validator.finalize()
        except Exception as exc:  # e.g. MITRE data that must be downloaded
            skipped.append(f"sigma validator {name}: {str(exc).splitlines()[0][:160]}")
            continue
        for issue in found:
            for rule in issue.rules or [None]:  # type: ignore[list-item]
                where = str(rule.source.path) if rule is not None and rule.source else None
                rid = str(rule.id) if rule is not None and rule.id else None
                text = f"{name} ({issue.severity.name.lower()}): {issue.description}"
                extra = _issue_fields(issue)
                issues.append(Issue("sigma", severity, where, rid, f"{text}{extra}"))
    return issues, skipped


def _issue_fields(issue: Any) -> str:
    parts = [
        f"{f.name}={getattr(issue, f.name)}"
        for f in fields(issue)
        if f.name not in ("rules", "severity", "description")
    ]
    return f" [{' '.join(parts)}]" if parts else ""


def validate(
    paths: Sequence[Path],
    *,
    allow_unknown_fields: bool = False,
    config: CompilerConfig = DEFAULT_CONFIG,
    fail_on_issues: bool = False,
    cost_events: Sequence[dict[str, Any]] = (),
    cost_factor: float = 10.0,
    max_cost_us: float | None = None,
    sigma: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    say = progress or (lambda _msg: None)
    issues: list[Issue] = []
    skipped: list[str] = []
    if sigma:
        say("running pySigma validators …")
        sigma_issues, skipped = sigma_checks(paths, fail_on_issues)
        issues += sigma_issues
    say("compiling and checking fields against the event schema …")
    rules, rejections = compile_path(paths, config)
    strict = plan_rules(rules, rejections, allow_unknown_fields=False)
    for r in strict.rejections:
        if r.reason == "unknown_field":
            sev = "warning" if allow_unknown_fields else "error"
            issues.append(Issue("fields", sev, r.path, r.rule_id, r.message))
        else:
            issues.append(Issue("compile", "error", r.path, r.rule_id, f"{r.reason}: {r.message}"))
    plan = (
        plan_rules(rules, allow_unknown_fields=True)
        if allow_unknown_fields
        else plan_rules(rules, allow_unknown_fields=False)
    )
    for planned in plan.rules:
        for problem in rule_regex_issues(planned):
            issues.append(
                Issue(
                    "cost",
                    "error" if problem.problem.startswith("invalid") else "warning",
                    planned.rule.path,
                    str(planned.rule.id),
                    f"regex {problem.pattern!r}: {problem.problem}"
                    + (
                        ""
                        if problem.problem.startswith("invalid")
                        else " in backtracking engines (PCRE, Java, Python's re) other "
                        "backends may run this rule on; harmless here: RE2 runs it in "
                        "linear time"
                    ),
                )
            )
    report = ValidationReport(plan=plan, issues=issues, skipped=skipped)
    if cost_events and plan.rules:
        say(
            f"measuring evaluation cost of {len(plan.rules):,} rules "
            f"on {len(cost_events):,} events …"
        )
        report.costs = measure_costs(plan, cost_events, factor=cost_factor)
        paths_by_id = {str(p.rule.id): p.rule.path for p in plan.rules}
        for cost in report.costs:
            over_abs = max_cost_us is not None and cost.us_per_event > max_cost_us
            if cost.flagged or over_abs:
                why = (
                    f"{cost.ratio_to_median:.1f}x the median"
                    if cost.flagged
                    else f"above the {max_cost_us:,.1f} µs limit"
                )
                issues.append(
                    Issue(
                        "cost",
                        "warning",
                        paths_by_id.get(cost.rule_id),
                        cost.rule_id,
                        f"evaluation cost {cost.us_per_event:,.2f} µs/event, {why}",
                    )
                )
    elif not cost_events:
        skipped.append("measured cost: not run (no sample events)")
    return report
