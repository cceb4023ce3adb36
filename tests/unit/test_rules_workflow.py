"""The detection engineer's checks without services: rule tests through the engine's
matcher, validation (compile, fields, regex shapes, measured cost), ATT&CK coverage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.settings import PROJECT_ROOT
from detections.compiler.plan import load_plan
from detections.content.workflow.backtest import parse_since
from detections.content.workflow.cost import measure_costs, regex_issues
from detections.content.workflow.coverage import CoveredRule, coverage, navigator_layer, rule_cells
from detections.content.workflow.ruletests import run_tests
from detections.content.workflow.validate import validate

OWN = PROJECT_ROOT / "detections" / "rules"
LSASS_FILE = OWN / "windows" / "proc_access_lsass_memory_read.yml"

REGEX_RULE = """title: Catastrophic Regex
id: 5b1c0d9e-0000-4000-8000-00000000000{n}
status: experimental
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    CommandLine|re: '{pattern}'
  condition: selection
level: low
"""


def _copy_lsass(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(LSASS_FILE, folder / LSASS_FILE.name)
    return folder


def test_own_rules_all_have_passing_tests() -> None:
    report = run_tests([OWN], min_tests=True)
    assert report.ok, (report.errors, [r.failures for r in report.results])
    assert len(report.results) >= 8
    assert all(r.tp >= 1 and r.tn >= 1 for r in report.results)


def test_wrong_expectations_fail_and_min_tests_needs_both_kinds(tmp_path: Path) -> None:
    folder = _copy_lsass(tmp_path)
    tests = folder / "proc_access_lsass_memory_read.tests.json"
    svchost = {
        "event_type": "process_access",
        "SourceImage": "C:\\Windows\\System32\\svchost.exe",
        "TargetImage": "C:\\Windows\\system32\\lsass.exe",
        "GrantedAccess": "0x1410",
    }
    tests.write_text(json.dumps({"tp": [svchost]}))  # excluded by the rule's filter
    report = run_tests([folder])
    [result] = report.results
    assert not report.ok and result.tp == 1
    assert "did not match" in result.failures[0]
    assert not run_tests([folder], min_tests=False).ok

    tests.write_text(json.dumps({"tn": [svchost]}))
    assert run_tests([folder]).ok
    minimum = run_tests([folder], min_tests=True)
    assert not minimum.ok and "at least one TP and one TN" in minimum.results[0].failures[0]


def test_test_folder_form_and_bad_events_are_reported(tmp_path: Path) -> None:
    folder = _copy_lsass(tmp_path)
    cases = folder / "proc_access_lsass_memory_read.tests"
    cases.mkdir()
    hit = {
        "event_type": "process_access",
        "SourceImage": "C:\\x\\dump.exe",
        "TargetImage": "C:\\Windows\\System32\\lsass.exe",
        "GrantedAccess": "0x1010",
    }
    (cases / "tp_dump.json").write_text(json.dumps(hit))
    (cases / "tn_other.jsonl").write_text(json.dumps({**hit, "TargetImage": "x.exe"}) + "\n")
    report = run_tests([folder], min_tests=True)
    assert report.ok and (report.results[0].tp, report.results[0].tn) == (1, 1)

    (cases / "tn_broken.json").write_text(json.dumps({"event_type": "no_such_type"}))
    broken = run_tests([folder])
    assert not broken.ok and "not a schema event" in broken.errors[0]


def test_validate_flags_unknown_fields_as_error_or_warning(tmp_path: Path) -> None:
    folder = _copy_lsass(tmp_path)
    text = LSASS_FILE.read_text().replace("4d01", "4d99").replace("GrantedAccess", "GrantedAcess")
    (folder / "typo.yml").write_text(text)
    strict = validate([folder], sigma=False)
    assert [(i.check, i.severity) for i in strict.errors] == [("fields", "error")]
    assert "GrantedAcess" in strict.errors[0].message
    lenient = validate([folder], sigma=False, allow_unknown_fields=True)
    assert lenient.ok
    assert any(i.check == "fields" and i.severity == "warning" for i in lenient.issues)


def test_validate_runs_sigma_validators_and_flags_bad_regexes(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "nested.yml").write_text(REGEX_RULE.format(n=1, pattern="(a+)+b"))
    (folder / "dup.yml").write_text(REGEX_RULE.format(n=2, pattern="x"))  # same title
    report = validate([folder])
    sigma = [i for i in report.issues if i.check == "sigma"]
    assert any("duplicate_title" in i.message for i in sigma)
    cost = [i for i in report.issues if i.check == "cost"]
    assert any("nested quantifier" in i.message for i in cost)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a+)+$", "nested quantifier"),
        (r"(\w+\s?)*$", "nested quantifier"),
        (".*.*=", "adjacent unbounded"),
        (r"(x\w+|x\d)+y", "overlapping branches"),
        ("(", "invalid regex"),
    ],
)
def test_regex_shapes_that_backtrack(pattern: str, problem: str) -> None:
    assert any(problem in issue for issue in regex_issues(pattern))


@pytest.mark.parametrize("pattern", [r"\biex\b", r"^[a-z]+\.exe$", "(foo|bar)+", r"-enc\s+\S+"])
def test_ordinary_regexes_pass(pattern: str) -> None:
    assert regex_issues(pattern) == []


def test_measured_cost_flags_rules_far_above_the_median() -> None:
    plan = load_plan([OWN])
    slow = str(plan.rules[0].rule.id)

    def timer(single):  # type: ignore[no-untyped-def]
        return 500e-6 if str(single.rules[0].rule.id) == slow else 10e-6

    costs = measure_costs(plan, [{}] * 1000, factor=10, timer=timer)
    assert [c.rule_id for c in costs if c.flagged] == [slow]
    assert costs[0].us_per_event == pytest.approx(500.0)


def test_measured_cost_with_the_real_engine_is_positive() -> None:
    plan = load_plan([OWN])
    events = [
        json.loads(line) for line in (PROJECT_ROOT / "ingest/samples/sensor_events.jsonl").open()
    ]
    costs = measure_costs(plan, events * 20)
    assert len(costs) == len(plan.rules) and all(c.us_per_event > 0 for c in costs)


def test_coverage_pairs_techniques_with_their_tactic_and_writes_a_layer() -> None:
    tags = ("attack.execution", "attack.t1059.001", "attack.defense-evasion", "attack.t1027")
    assert rule_cells(tags) == {("execution", "T1059.001"), ("defense-evasion", "T1027")}
    assert rule_cells(("attack.t1003", "attack.credential-access")) == {
        ("credential-access", "T1003")
    }
    cov = coverage(
        [
            CoveredRule("a", "A", tags),
            CoveredRule("b", "B", ("attack.execution", "attack.t1059.001")),
            CoveredRule("c", "C", ("attack.s0001",)),
        ]
    )
    assert cov.matrix["execution"]["T1059.001"] == ["A", "B"]
    assert cov.untagged == ["C"]
    layer = navigator_layer(cov, "test")
    assert layer["versions"]["layer"].startswith("4.")
    scored = {(t["techniqueID"], t.get("tactic")): t.get("score") for t in layer["techniques"]}
    assert scored[("T1059.001", "execution")] == 2
    assert ("T1059", "execution") in scored  # parent shown so the sub-technique is visible


def test_parse_since() -> None:
    from datetime import date

    assert parse_since("7d", today=date(2026, 11, 27)) == date(2026, 11, 20)
    assert parse_since("2w", today=date(2026, 11, 27)) == date(2026, 11, 13)
    assert parse_since("2026-11-01") == date(2026, 11, 1)


def test_cli_rules_test_and_coverage(tmp_path: Path) -> None:
    from sigstream.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["rules", "test", "--min-tests", str(OWN)])
    assert result.exit_code == 0, result.output
    assert "0 rule(s) failed" in result.output
    out = tmp_path / "layer.json"
    result = runner.invoke(app, ["rules", "coverage", str(OWN), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["domain"] == "enterprise-attack"


def test_cli_validate_exits_1_on_errors_only(tmp_path: Path) -> None:
    from sigstream.cli import app

    folder = _copy_lsass(tmp_path)
    runner = CliRunner()
    args = ["rules", "validate", str(folder), "--no-sigma", "--no-cost"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    text = LSASS_FILE.read_text().replace("4d01", "4d98").replace("TargetImage", "TargetImg")
    (folder / "typo.yml").write_text(text)
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1 and "TargetImg" in bad.output
    lenient = runner.invoke(app, [*args, "--allow-unknown-fields"])
    assert lenient.exit_code == 0 and "1 warning" in lenient.output
