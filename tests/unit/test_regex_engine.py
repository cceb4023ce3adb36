"""Rules' regexes run on RE2 (``detections.compiler.regex``): Sigma's flags and Python's
syntax mean what they meant on Python's ``re``, a ReDoS shape runs in linear time, and a
pattern RE2 cannot run is refused with its reason in every path that compiles rules:
``rules check``, ``rules validate``, bundle build, deploy and job start."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from detections.compiler import compile_yaml, ir
from detections.compiler.logsources import Route
from detections.compiler.regex import RegexRefused, compile_regex, regex_refusal, translate
from detections.compiler.to_arrow import glob_regex
from detections.engine.matcher import Matcher
from schemas.generate import arrow_event_schema

ANY_ROUTE = Route(product=None, event_types=None, service=None)

RULE = """title: Regex rule {n}
id: 7c1d0e9f-0000-4000-8000-0000000000{n:02d}
status: test
level: low
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    CommandLine|re: '{pattern}'
  condition: selection
"""
LOOKBEHIND = "(?<=powershell )-enc"
BACKREF = "(a)\\1"  # the rule file holds (a)\1, a back-reference


def _matches(node: ir.Node, rows: list[dict[str, Any]]) -> list[int]:
    full = [{"event_type": "process_creation", "extra": {}, **row} for row in rows]
    matcher = Matcher([(0, ANY_ROUTE, node)])
    assert matcher.errors == {}
    result = matcher.match(pa.Table.from_pylist(full, schema=arrow_event_schema()))
    assert result.errors == {}
    return sorted(result.rows.tolist())


# --- semantics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "cased", "flags", "text", "expected"),
    [
        ("abc", True, "", "xxABCxx", False),  # case-sensitive by default
        ("abc", False, "", "xxABCxx", True),  # i flag
        ("straße", False, "", "STRASSE", False),  # simple case folding, as Python's re
        ("ǆ", False, "", "ǅ", True),  # title case folds too
        ("^b", True, "", "a\nb", False),  # ^ is the start without m
        ("^b", True, "m", "a\nb", True),  # ... and every line's start with m
        ("a.b", True, "", "a\nb", False),  # . stops at line breaks without s
        ("a.b", True, "s", "a\nb", True),
        ("exe$", True, "", "cmd.exe\n", True),  # Python's $ also before a final \n
        ("exe$", True, "", "cmd.exe\n\n", False),  # ... only one
        ("exe\\Z", True, "", "cmd.exe\n", False),  # \Z: the very end
        ("exe\\Z", True, "", "cmd.exe", True),
        ("a{,2}c", True, "", "xc", True),  # Python's {,2} is {0,2}, not text
        ("[[:alpha:]]", True, "", "b", False),  # Python: a class of [ : a l p h, then ]
        ("[[:alpha:]]", True, "", ":]", True),
        ("(?P<x>a)b", True, "", "ab", True),
        ("é.c", True, "", "é\ud800c", True),  # a lone surrogate is one character
    ],
)
def test_re2_reads_sigma_regexes_as_python_did(
    pattern: str, cased: bool, flags: str, text: str, expected: bool
) -> None:
    assert compile_regex(pattern, cased, flags).search(text) is expected
    if "\ud800" not in text:  # Python's re is the reference (surrogates aside)
        with warnings.catch_warnings():  # Python's "possible nested set" on [[
            warnings.simplefilter("ignore", FutureWarning)
            python = re.compile(
                pattern,
                (0 if cased else re.I)
                | (re.M if "m" in flags else 0)
                | (re.S if "s" in flags else 0),
            )
        assert (python.search(text) is not None) is expected


@pytest.mark.parametrize(
    "pattern",
    [LOOKBEHIND, "(a)\\1", "(?=x)y", "(?!x)y", "(?>a)", "a++", "(?x) a", "\\u0041"],
)
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern: str) -> None:
    with pytest.raises(RegexRefused, match="RE2"):
        compile_regex(pattern)
    reason = regex_refusal(pattern)
    assert reason is not None and repr(pattern) in reason


def test_translation_leaves_escapes_and_classes_alone() -> None:
    assert translate(r"\{,3}").pattern == r"\{,3}"
    assert translate(r"[{,3}]").pattern == r"[{,3}]"
    assert translate(r"[]$]\$").dollar is False
    assert translate(r"[^]x]a{,3}$").pattern == r"[^]x]a{0,3}$"


def test_redos_shapes_run_in_linear_time() -> None:
    """``(a+)+$`` against n ``a`` and a ``!``: doubling per character on Python's re
    (about a day at 41 characters), microseconds on RE2 even for 100 KB. The bound is a
    safety timeout, not a benchmark."""
    regex = compile_regex("(a+)+$")
    glob = glob_regex("*a*a*a*a*a*b")  # polynomial backtracking on Python's re
    started = time.monotonic()
    for n in (30, 41, 100_000):
        assert regex.search("a" * n + "!") is False
        assert glob.fullmatch("a" * n) is False
    assert regex.search("a" * 41) is True
    assert time.monotonic() - started < 5


def test_keyword_regex_never_matches_across_two_fields() -> None:
    """A field-less regex is searched in each field on its own: ``a.b`` must not join the
    end of one field to the start of the next through the separator."""
    node = ir.Pred(None, ir.REGEX, "cmd.exe.powershell", cased=True)
    rows = [
        {"Image": "cmd.exe", "CommandLine": "powershell"},
        {"Image": "x", "CommandLine": "cmd.exe powershell"},
    ]
    assert _matches(node, rows) == [1]


def test_regex_rule_in_the_engine_with_flags_and_nulls() -> None:
    node = ir.Pred("CommandLine", ir.REGEX, "^-ENC\\s", cased=False, flags="m")
    rows = [
        {"CommandLine": "powershell\n-enc AAA"},
        {"CommandLine": "powershell -enc AAA"},
        {"Image": "no command line"},
        {"CommandLine": "-Enc\tx"},
    ]
    assert _matches(node, rows) == [0, 3]


def test_glob_on_re2_agrees_with_the_python_translation() -> None:
    """Wildcards moved from Python's re to RE2: same answers on awkward values."""
    cases = ["*a?b*", "c:\\\\*\\\\x.exe", "a\\*b*", "*.*", "?"]
    values = ["xa1by", "ab", "c:\\w\\x.exe", "a*bc", "a.b", "\n", "", "é", "a\nb"]
    for glob in cases:
        parts = [
            (".*" if text == "*" else ".") if wild else re.escape(text)
            for wild, text in ir.parse_glob(glob)
        ]
        with warnings.catch_warnings():  # Python's "possible nested set" on [[
            warnings.simplefilter("ignore", FutureWarning)
            python = re.compile("".join(parts), re.DOTALL)
        for value in values:
            expected = python.fullmatch(value) is not None
            assert glob_regex(glob).fullmatch(value) is expected, (glob, value)


# --- refused everywhere -------------------------------------------------------------------


def _rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "good.yml").write_text(RULE.format(n=1, pattern="-enc\\\\s"))
    (folder / "lookbehind.yml").write_text(RULE.format(n=2, pattern=LOOKBEHIND))
    (folder / "backref.yml").write_text(RULE.format(n=3, pattern=BACKREF))
    return folder


def test_compile_refuses_with_reason_unsupported_regex(tmp_path: Path) -> None:
    rules, rejections = compile_yaml(RULE.format(n=2, pattern=LOOKBEHIND))
    assert rules == []
    assert [r.reason for r in rejections] == ["unsupported_regex"]
    assert "RE2" in rejections[0].message and "(?<=" in rejections[0].message


def test_rules_check_shows_the_refusal(tmp_path: Path) -> None:
    from sigstream.cli import app

    result = CliRunner().invoke(app, ["rules", "check", str(_rules(tmp_path)), "--show-rejected"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "1 rules planned" in output
    assert "rejected unsupported_regex 2" in output.replace("│", "").replace("  ", " ")
    for name in ("lookbehind.yml: unsupported_regex", "backref.yml: unsupported_regex"):
        assert name in output
    assert "RE2, the engine's linear-time regex, cannot run it" in output


def test_validate_reports_a_compile_error(tmp_path: Path) -> None:
    from detections.content.workflow.validate import validate

    report = validate([_rules(tmp_path)], sigma=False)
    errors = [(i.check, i.rule_id) for i in report.errors]
    assert ("compile", "7c1d0e9f-0000-4000-8000-000000000002") in errors
    assert ("compile", "7c1d0e9f-0000-4000-8000-000000000003") in errors
    assert all("unsupported_regex" in i.message for i in report.errors)
    assert [str(p.rule.id) for p in report.plan.rules] == ["7c1d0e9f-0000-4000-8000-000000000001"]


def test_bundle_build_refuses_and_deploy_and_job_start_refuse_again(tmp_path: Path) -> None:
    """A bundle refuses such a rule; forced in (``allow_rejected``) it is refused again when
    the watcher compiles the deployed bundle, and the job starts without it."""
    from detections.content.deploy.bundle import BundleError, build_bundle, sign_manifest
    from detections.content.deploy.signing import (
        generate_keypair,
        load_private_key,
        load_trusted_keys,
    )
    from detections.content.deploy.store import DeploymentStore
    from detections.content.deploy.watcher import DeploymentWatcher
    from detections.stream.job import RunningContent

    rules = _rules(tmp_path)
    with pytest.raises(BundleError, match="unsupported_regex"):
        build_bundle([rules])
    pair = generate_keypair(tmp_path / "k" / "s.key", tmp_path / "trusted" / "s.pub")
    manifest, _ = build_bundle([rules], allow_rejected=True)
    path = tmp_path / "b.json"
    path.write_text(sign_manifest(manifest, load_private_key(pair.private_path)).to_json())
    trusted = load_trusted_keys([tmp_path / "trusted"])
    store = DeploymentStore(tmp_path / "deploy")
    store.deploy(path, trusted)
    content = DeploymentWatcher(store.root, trusted).poll()
    assert content is not None
    assert sorted(r.reason for r in content.plan.rejections) == ["unsupported_regex"] * 2
    running = RunningContent.of(content.plan, content)
    assert [str(p.rule.id) for p in running.plan.rules] == ["7c1d0e9f-0000-4000-8000-000000000001"]
    assert running.quarantined == {}


def test_job_start_quarantines_an_unrunnable_regex_that_skipped_the_compiler() -> None:
    """IR that reached the job without the compiler (an old bundle format, a hand-made
    plan): the engine refuses the rule with RE2's reason when the job starts."""
    import dataclasses

    from detections.compiler.plan import plan_rules
    from detections.stream.job import RunningContent

    rules, _ = compile_yaml(RULE.format(n=1, pattern="-enc"))
    smuggled = dataclasses.replace(
        rules[0],
        id="7c1d0e9f-0000-4000-8000-0000000000ff",
        ir=ir.Pred("CommandLine", ir.REGEX, "(?<=a)b", True),
    )
    running = RunningContent.of(plan_rules([rules[0], smuggled]))
    assert list(running.quarantined) == [1]
    assert "RE2" in running.quarantined[1] and "(?<=" in running.quarantined[1]


def test_rules_that_only_feed_correlations_are_not_explained() -> None:
    """A generate: false base rule makes no finding, so the engine ships no explanation
    for it (explaining its matches on every batch would be thrown away)."""
    from detections.compiler.plan import plan_rules
    from detections.stream.job import RunningContent

    rules, _ = compile_yaml(RULE.format(n=1, pattern="-enc"))
    plan = plan_rules(rules)
    assert plan.rules[0].rule.explanation
    explained = RunningContent.of(plan).spec.content()[1]
    assert list(explained) == [0]
    silent = RunningContent.of(plan, silent_rule_ids=frozenset({str(rules[0].id)}))
    assert silent.spec.content()[1] == {}
    assert [r[0] for r in silent.spec.rules()] == [0]  # still matched (the feed needs it)
