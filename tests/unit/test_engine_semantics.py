"""Sigma semantics as the engine runs them: rules compiled to IR, the IR run by the Arrow
matcher (the code the streaming job runs in its Spark workers) over small batches.

Also: every SigmaHQ regression event against its rule, every corpus rule with a regex,
CIDR, keyword or wildcard runs, and a rule that raises is isolated from the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from detections.compiler import CompilerConfig, compile_path, ir
from detections.compiler.logsources import Route
from detections.compiler.to_arrow import Slot
from detections.engine.matcher import Matcher
from schemas.generate import arrow_event_schema, event_columns
from tests.sigma_cases import CASES, corpus_rules, regression_cases, rule_ir

ANY_ROUTE = Route(product=None, event_types=None, service=None)
TYPED = event_columns()


def batch(events: Sequence[dict[str, Any]]) -> pa.Table:
    """Events as parsed rows: schema fields in their typed columns, the rest in ``extra``."""
    rows = []
    for event in events:
        row: dict[str, Any] = {"event_type": "windows_event", "extra": {}}
        for name, value in event.items():
            if TYPED.get(name) is str:
                row[name] = str(value)
            elif TYPED.get(name) is int and str(value).lstrip("-").isdigit():
                row[name] = int(value)
            else:
                row["extra"][name] = str(value)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=arrow_event_schema())


def matching(node: ir.Node, events: Sequence[dict[str, Any]]) -> list[int]:
    matcher = Matcher([(0, ANY_ROUTE, node)])
    assert matcher.errors == {}
    result = matcher.match(batch(events))
    assert result.errors == {}
    return sorted(result.rows.tolist())


@pytest.mark.parametrize(
    ("detection", "events", "expected"),
    [pytest.param(d, e, x, id=name) for name, d, e, x in CASES],
)
def test_semantics(detection: str, events: list[dict[str, Any]], expected: list[int]) -> None:
    assert matching(rule_ir(detection), events) == expected


def test_python_regex_syntax() -> None:
    """Sigma regexes are read as Python reads them (named groups, ``{,3}``, ``\\Z``) but
    run on RE2: the same answers, in linear time."""
    node = ir.Pred("CommandLine", ir.REGEX, "(?P<q>[\"']).{,3}[\"']\\Z", cased=True)
    events = [{"CommandLine": "x 'ab'"}, {"CommandLine": 'x "abcd"'}, {"CommandLine": "x 'ab'\n"}]
    assert matching(node, events) == [0]  # Python's \Z is the very end of the text


def test_back_references_are_refused_with_the_reason() -> None:
    """A back-reference needs backtracking: RE2 cannot run it, and the engine says so."""
    node = ir.Pred("CommandLine", ir.REGEX, "(?P<q>[\"']).{,3}(?P=q)", cased=True)
    matcher = Matcher([(0, ANY_ROUTE, node)])
    assert list(matcher.errors) == [0]
    assert "RE2" in matcher.errors[0] and "(?P=q)" in matcher.errors[0]


def test_expand_placeholders() -> None:
    config = CompilerConfig(placeholders={"Admins": ["root", "adm*"]})
    node = rule_ir("sel:\n  User|expand: '%Admins%'\ncondition: sel", config)
    assert matching(node, [{"User": "root"}, {"User": "Admin7"}, {"User": "bob"}]) == [0, 1]


def test_meta_filter_excludes_events(tmp_path: Path) -> None:
    rule_id = "9d1f6f35-6d0a-4f62-b7a7-5c1e9e5b2f11"
    (tmp_path / "rule.yml").write_text(
        f"title: r\nid: {rule_id}\nlogsource:\n    category: process_creation\n"
        "    product: windows\ndetection:\n    sel:\n        Image|endswith: '\\x.exe'\n"
        "    condition: sel\n"
    )
    (tmp_path / "filter.yml").write_text(
        "title: f\nid: 0b7c1e8a-6f61-4bc4-9d8b-2d8f0a4b9c55\nlogsource:\n"
        "    category: process_creation\n    product: windows\nfilter:\n"
        f"    rules:\n        - {rule_id}\n    selection:\n        User: svc_backup\n"
        "    condition: not selection\n"
    )
    rules, rejections = compile_path([tmp_path])
    assert rejections == [] and len(rules) == 1
    events = [{"Image": "C:\\x.exe"}, {"Image": "C:\\x.exe", "User": "SVC_BACKUP"}]
    assert matching(rules[0].ir, events) == [0]


def test_literals_in_long_text_use_the_prefilter_and_agree() -> None:
    """Enough text that the RE2 prefilter runs: it must not change any answer."""
    node = rule_ir(
        "sel:\n  ScriptBlockText|contains:\n    - 'Invoke-Mimikatz'\n    - 'lsadump::'\n"
        "  ScriptBlockText|startswith: '#'\ncondition: sel"
    )
    filler = "x" * 200_000
    events = [
        {"ScriptBlockText": "# " + filler + " invoke-MIMIKATZ"},
        {"ScriptBlockText": filler + " lsadump::sam"},  # does not start with '#'
        {"ScriptBlockText": "#" + filler},
        {"ScriptBlockText": "# lsadump:: " + filler},
    ]
    assert matching(node, events) == [0, 3]


def test_a_rule_that_raises_is_isolated() -> None:
    """A rule failing at run time is reported with its error; the others still match."""
    good = rule_ir("sel:\n  Image|endswith: '\\cmd.exe'\ncondition: sel")
    bad = ir.Pred("CommandLine", ir.REGEX, "x", cased=True)
    matcher = Matcher([(0, ANY_ROUTE, good), (1, ANY_ROUTE, bad)])
    program = matcher.programs[ANY_ROUTE]

    def explode(rows: object) -> np.ndarray:
        raise RuntimeError("engine bug on this data")

    program.slots = [
        Slot(s.id, s.cost, evaluate=explode) if s.evaluate is not None else s for s in program.slots
    ]
    result = matcher.match(batch([{"Image": "C:\\cmd.exe", "CommandLine": "x"}]))
    assert result.pairs() == [(0, 0)]
    assert "engine bug on this data" in result.errors[1]
    assert set(result.seconds) == {0, 1}


def test_a_rule_the_engine_cannot_compile_is_refused_alone() -> None:
    good = rule_ir("sel:\n  Image|endswith: '\\cmd.exe'\ncondition: sel")
    bad = ir.Pred("CommandLine", ir.REGEX, r"\p{NoSuchProperty}", cased=True)
    matcher = Matcher([(0, ANY_ROUTE, good), (1, ANY_ROUTE, bad)])
    assert list(matcher.errors) == [1] and "RE2" in matcher.errors[1]
    assert "invalid character class range" in matcher.errors[1]
    assert matcher.match(batch([{"Image": "c:\\CMD.exe"}])).pairs() == [(0, 0)]


# --- real SigmaHQ data ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> dict[str | None, Any]:
    return corpus_rules()


def test_every_regression_event_matches_its_rule(corpus: dict[str | None, Any]) -> None:
    """SigmaHQ's own regression events: each rule must fire on (one of) its events."""
    cases = [case for case in regression_cases() if case[0] in corpus]
    assert cases, "no regression case refers to a compiled rule"
    missed = []
    for rule_id, where, events in cases:
        if not matching(corpus[rule_id].ir, events):
            missed.append(f"{rule_id} ({where.name})")
    print(f"\n{len(cases) - len(missed)} of {len(cases)} regression rules matched their events")
    assert missed == []


def test_corpus_rules_with_runtime_sensitive_operators_run(corpus: dict[str | None, Any]) -> None:
    """Every corpus rule with a regex, CIDR, keyword or wildcard compiles for the engine
    and runs without error over a few probing events."""
    sensitive = {ir.REGEX, ir.CIDR, ir.KEYWORD, ir.WILDCARD}
    rules = [
        rule
        for rule in corpus.values()
        if any(pred.op in sensitive for pred in ir.iter_preds(rule.ir))
    ]
    fields = sorted({name for rule in rules for name in ir.fields(rule.ir)})
    samples = [
        {name: "C:\\Windows\\System32\\cmd.exe /c whoami" for name in fields},
        {name: "10.1.2.3" for name in fields},
        {name: "fe80::1" for name in fields},
        {},
    ]
    matcher = Matcher([(i, ANY_ROUTE, rule.ir) for i, rule in enumerate(rules)])
    assert matcher.errors == {}
    assert matcher.match(batch(samples)).errors == {}
    print(f"\n{len(rules)} corpus rules with regex / CIDR / keyword / wildcard ran")
    assert rules


def test_a_shipped_matcher_is_compiled_once_and_kept_out_of_full_collections() -> None:
    import gc

    from detections.engine.matcher import MatcherSpec

    node = rule_ir("selection:\n  Image|endswith: '\\\\cmd.exe'\ncondition: selection")
    first = MatcherSpec.of([(0, ANY_ROUTE, node)])
    gc.unfreeze()
    matcher = first.matcher()
    assert gc.get_freeze_count() > 0  # the compiled rules no longer slow every full GC
    assert first.matcher() is matcher  # one compile per worker, not per micro-batch
    other = MatcherSpec.of([(1, ANY_ROUTE, node)])
    assert other.matcher() is not matcher  # a new bundle replaces the old one
    gc.unfreeze()
