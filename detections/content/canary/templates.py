"""Where canaries come from: each rule's true-positive test events, by rule id.

Two sources, both read in place:

* rule folders with tests beside the rules (``foo.tests.json`` / ``foo.tests/``, the
  project's own rules; ``detections.content.workflow.ruletests``);
* SigmaHQ regression folders (``info.yml`` naming the rule ids, the real event as
  ``.json``), read with the replay adapters, exactly as ``sigstream replay`` would send them.

A deployed bundle carries rules, not tests, so tests are matched to deployed rules by id.
Unreadable test files are reported, never fatal: one bad file costs its own rule's canary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.safe_yaml import ContentError, expect_mapping, load_yaml_file
from detections.compiler.plan import DetectionPlan

#: At most this many canary events per rule and round: a rule with a whole captured
#: session as its tests should not flood the pipeline every few minutes. Of up to
#: ``MAX_CANDIDATES`` test events, those the rule matches locally are chosen
#: (``select_firing``): a regression file often starts with the benign events around
#: the malicious one.
MAX_PER_RULE = 3
MAX_CANDIDATES = 32


@dataclass(frozen=True)
class CanaryTemplate:
    """One true-positive test event of a rule, in schema form (JSON-ready)."""

    rule_id: str
    source: str  # where it came from: file#n
    event: dict[str, Any]


@dataclass
class TemplateSet:
    by_rule: dict[str, list[CanaryTemplate]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, template: CanaryTemplate) -> None:
        found = self.by_rule.setdefault(template.rule_id, [])
        if len(found) < MAX_CANDIDATES:
            found.append(template)

    def merge(self, other: TemplateSet) -> None:
        for templates in other.by_rule.values():
            for template in templates:
                self.add(template)
        self.errors += other.errors


def is_regression_folder(path: Path) -> bool:
    """A SigmaHQ regression tree (folders holding ``info.yml``), not a rule folder."""
    return path.is_dir() and (
        (path / "info.yml").is_file() or next(path.rglob("info.yml"), None) is not None
    )


def from_rule_tests(paths: Sequence[Path], wanted: Iterable[str] | None = None) -> TemplateSet:
    """True-positive tests beside the rules under ``paths`` (compiled to know rule ids)."""
    from detections.compiler.plan import load_plan
    from detections.content.workflow.ruletests import collect_cases

    out = TemplateSet()
    if not paths:
        return out
    plan = load_plan(list(paths), allow_unknown_fields=True)
    cases, _, errors = collect_cases(plan, paths)
    out.errors += errors
    keep = set(wanted) if wanted is not None else None
    for case in cases:
        if case.kind == "tp" and (keep is None or case.rule_id in keep):
            out.add(CanaryTemplate(case.rule_id, case.name, case.event))
    return out


def from_regression(root: Path, wanted: Iterable[str] | None = None) -> TemplateSet:
    """SigmaHQ regression cases under ``root``: the events of each ``info.yml``'s folder
    for every rule id it names (only ``wanted`` ones when given: reading is the cost)."""
    from ingest.sources import read_items

    out = TemplateSet()
    keep = set(wanted) if wanted is not None else None
    for info in sorted(root.rglob("info.yml")):
        try:
            meta = expect_mapping(load_yaml_file(info), "regression info")
            ids = [str(r["id"]) for r in meta.get("rule_metadata") or [] if isinstance(r, dict)]
        except (ContentError, KeyError, TypeError) as exc:
            out.errors.append(f"{info}: {exc}")
            continue
        ids = [i for i in ids if keep is None or i in keep]
        if not ids:
            continue
        for path in sorted(info.parent.glob("*.json")):
            try:
                items = list(read_items(path))
            except (OSError, ValueError) as exc:
                out.errors.append(f"{path}: {exc}")
                continue
            for item in items:
                if item.event is None:
                    out.errors.append(f"{item.origin}: {item.reason}")
                    continue
                event = item.event.model_dump(mode="json", exclude_none=True)
                for rule_id in ids:
                    out.add(CanaryTemplate(rule_id, item.origin, event))
    return out


def load_templates(paths: Sequence[Path], wanted: Iterable[str] | None = None) -> TemplateSet:
    """Templates from every path (regression trees and rule folders), by rule id."""
    wanted_list = list(wanted) if wanted is not None else None
    out = TemplateSet()
    rule_paths = []
    for path in paths:
        if not path.exists():
            out.errors.append(f"{path}: no such file or directory")
        elif is_regression_folder(path):
            out.merge(from_regression(path, wanted_list))
        else:
            rule_paths.append(path)
    out.merge(from_rule_tests(rule_paths, wanted_list))
    return out


def select_firing(
    templates: TemplateSet,
    plan: DetectionPlan,
    matcher: Callable[[DetectionPlan, Sequence[dict[str, Any]]], list[tuple[int, int]]]
    | None = None,
    limit: int = MAX_PER_RULE,
) -> TemplateSet:
    """Per planned rule, up to ``limit`` of its test events that it matches in-process
    (the engine's matcher over the whole plan, as the job runs it); a rule none of whose
    tests match keeps its first one, so its canary fails visibly with a cause."""
    from detections.engine.apply import match_events

    match = matcher or match_events
    index = {str(p.rule.id): p.index for p in plan.rules}
    flat = [t for rid, ts in templates.by_rule.items() if rid in index for t in ts]
    hits = set(match(plan, [t.event for t in flat])) if flat else set()
    out = TemplateSet(errors=list(templates.errors))
    for position, t in enumerate(flat):
        chosen = out.by_rule.setdefault(t.rule_id, [])
        if (position, index[t.rule_id]) in hits and len(chosen) < limit:
            chosen.append(t)
    for rid, ts in templates.by_rule.items():
        if rid in index and not out.by_rule.get(rid):
            out.by_rule[rid] = ts[:1]
            out.errors.append(f"rule {rid}: none of its {len(ts)} test events matches it")
    return out
