"""Rule tests: true-positive and true-negative events beside each rule, run through the
engine's own matcher (``detections.engine.apply.match_events``, the code the Spark workers run).

A rule ``foo.yml`` is tested by ``foo.tests.json`` next to it::

    {"tp": [{"event_type": "process_creation", "Image": "...", ...}, ...],
     "tn": [...],
     "rule": "<rule id>"}          # only needed when foo.yml holds several rules

or by a folder ``foo.tests/`` of ``tp*.json[l]`` / ``tn*.json[l]`` files (one event per
``.json`` file or per ``.jsonl`` line). Tests are JSON, not YAML, so that rule loaders,
which read every ``.yml`` under a rules folder, never mistake them for rules.
Events are in schema form; envelope fields may be omitted (see ``events.TEST_DEFAULTS``).
Every rule is planned together, meta filters included, exactly as in a bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from common.safe_yaml import ContentError, load_json, read_content
from detections.compiler import CompilerConfig, rule_files
from detections.compiler.plan import DetectionPlan, load_plan
from detections.content.workflow.events import test_event

Matcher = Callable[[DetectionPlan, Sequence[dict[str, Any]]], list[tuple[int, int]]]
TESTS_SUFFIX = ".tests.json"
#: Test events of one rule: a few KiB; a whole captured session still fits.
MAX_TEST_BYTES = 64 << 20
TESTS_DIR_SUFFIX = ".tests"


def default_matcher() -> Matcher:
    from detections.engine.apply import match_events

    return match_events


@dataclass
class TestCase:
    rule_id: str
    kind: str  # "tp" or "tn"
    name: str  # where it came from: file#n
    event: dict[str, Any]  # schema form, defaults filled in


@dataclass
class RuleTestResult:
    rule_id: str
    title: str
    path: str
    tp: int = 0
    tn: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class TestReport:
    results: list[RuleTestResult]
    errors: list[str]  # test files that could not be read, rules rejected

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.ok for r in self.results)


def tests_for(rule_file: Path) -> Path | None:
    """The test file or folder of a rule file, if any."""
    stem = rule_file.with_suffix("")
    for candidate in (Path(f"{stem}{TESTS_SUFFIX}"), Path(f"{stem}{TESTS_DIR_SUFFIX}")):
        if candidate.exists():
            return candidate
    return None


def _read_json(path: Path) -> Any:
    """One bounded JSON document (ContentError, a ValueError, with the reason)."""
    try:
        return load_json(read_content(path, MAX_TEST_BYTES), max_bytes=MAX_TEST_BYTES)
    except ContentError as exc:
        raise ContentError(f"{path.name}: {exc}") from None


def _read_json_events(path: Path) -> list[tuple[str, Any]]:
    if path.suffix == ".jsonl":
        try:
            text = read_content(path, MAX_TEST_BYTES).decode("utf-8")
        except (ContentError, UnicodeDecodeError) as exc:
            raise ContentError(f"{path.name}: {exc}") from None
        events = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    events.append((f"{path.name}#{n}", load_json(line, max_bytes=MAX_TEST_BYTES)))
                except ContentError as exc:
                    raise ContentError(f"{path.name} line {n}: {exc}") from None
        return events
    return [(path.name, _read_json(path))]


def read_tests(path: Path) -> tuple[str | None, dict[str, list[tuple[str, Any]]]]:
    """(rule id or None, {"tp": [(name, doc)], "tn": [...]}) from a test file or folder."""
    cases: dict[str, list[tuple[str, Any]]] = {"tp": [], "tn": []}
    if path.is_dir():
        for file in sorted(path.iterdir()):
            kind = file.name[:2]
            if kind in cases and file.suffix in (".json", ".jsonl"):
                cases[kind].extend(_read_json_events(file))
        return None, cases
    doc = _read_json(path)
    if not isinstance(doc, dict) or not set(doc) <= {"tp", "tn", "rule", "description"}:
        raise ValueError("expected an object with 'tp' and/or 'tn' lists (and optional 'rule')")
    for kind in cases:
        items = doc.get(kind, [])
        if not isinstance(items, list):
            raise ValueError(f"'{kind}' must be a list of events")
        cases[kind] = [(f"{path.name}:{kind}[{n}]", item) for n, item in enumerate(items)]
    return doc.get("rule"), cases


def collect_cases(
    plan: DetectionPlan, paths: Sequence[Path]
) -> tuple[list[TestCase], dict[str, RuleTestResult], list[str]]:
    """Test cases of every planned rule found under ``paths``."""
    by_file: dict[str, list[str]] = {}
    results: dict[str, RuleTestResult] = {}
    for p in plan.rules:
        path = str(Path(str(p.rule.path)).resolve())
        by_file.setdefault(path, []).append(str(p.rule.id))
        results[str(p.rule.id)] = RuleTestResult(str(p.rule.id), p.rule.title, str(p.rule.path))
    cases: list[TestCase] = []
    errors: list[str] = []
    for rule_file in rule_files(paths):
        tests = tests_for(rule_file)
        ids = by_file.get(str(rule_file.resolve()), [])
        if tests is None or not ids:
            continue
        try:
            named, docs = read_tests(tests)
        except (OSError, ValueError) as exc:
            errors.append(f"{tests}: {exc}")
            continue
        if named is None and len(ids) > 1:
            errors.append(f"{tests}: {rule_file.name} holds {len(ids)} rules; name one in 'rule'")
            continue
        rule_id = named or ids[0]
        if rule_id not in ids:
            errors.append(f"{tests}: rule {rule_id} is not in {rule_file.name}")
            continue
        for kind, items in docs.items():
            for name, doc in items:
                try:
                    event = test_event(doc, default_id=f"{rule_id[:8]}-{name}")
                except (ValidationError, TypeError, ValueError) as exc:
                    errors.append(f"{tests}: {name} is not a schema event: {exc}")
                    continue
                cases.append(TestCase(rule_id, kind, name, event.model_dump(mode="json")))
    return cases, results, errors


def run_tests(
    paths: Sequence[Path],
    *,
    config: CompilerConfig | None = None,
    allow_unknown_fields: bool = False,
    min_tests: bool = False,
    matcher: Matcher | None = None,
) -> TestReport:
    """Compile ``paths``, run every rule's tests through the engine, report mismatches.

    With ``min_tests`` a rule without at least one TP and one TN fails.
    """
    kwargs: dict[str, Any] = {"allow_unknown_fields": allow_unknown_fields}
    if config is not None:
        kwargs["config"] = config
    plan = load_plan(list(paths), **kwargs)
    errors = [f"{r.path}: rejected ({r.reason}) {r.message}" for r in plan.rejections]
    cases, results, case_errors = collect_cases(plan, paths)
    errors += case_errors
    match = matcher or default_matcher()
    try:
        hits = set(match(plan, [c.event for c in cases])) if cases else set()
    except Exception as exc:  # a rule the engine cannot evaluate fails the run, with why
        return TestReport(
            sorted(results.values(), key=lambda r: r.path), [*errors, f"engine error: {exc}"]
        )
    index_of = {str(p.rule.id): p.index for p in plan.rules}
    for position, case in enumerate(cases):
        result = results[case.rule_id]
        matched = (position, index_of[case.rule_id]) in hits
        if case.kind == "tp":
            result.tp += 1
            if not matched:
                result.failures.append(f"{case.name}: true positive did not match")
        else:
            result.tn += 1
            if matched:
                result.failures.append(f"{case.name}: true negative matched")
    if min_tests:
        for result in results.values():
            if result.tp < 1 or result.tn < 1:
                result.failures.append(
                    f"needs at least one TP and one TN (has {result.tp} TP, {result.tn} TN)"
                )
    return TestReport(sorted(results.values(), key=lambda r: r.path), errors)
