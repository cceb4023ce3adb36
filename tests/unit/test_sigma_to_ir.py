"""Sigma -> IR: every modifier and condition form as inline rules, with the exact IR expected.

Fast and Spark-free: these tests only need pySigma.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from sigma.rule import SigmaRule

from detections.compiler import (
    CompiledRule,
    CompileError,
    CompilerConfig,
    Rejection,
    compile_path,
    compile_rule,
    compile_yaml,
    ir,
)
from detections.compiler.ir import And, Not, Or, Pred

REPO_ROOT = Path(__file__).resolve().parents[2]
PYSIGMA_MAJOR = int(version("pysigma").split(".")[0])

RULE_ID = "5f9ba8c4-2d2a-4c34-9a37-3f0fb1f0b0a1"


def rule_text(detection: str, *, extra: str = "", rule_id: str = RULE_ID) -> str:
    return (
        f"title: Test rule\nid: {rule_id}\nstatus: test\nlevel: high\n"
        "logsource:\n    category: process_creation\n    product: windows\n"
        f"{extra}detection:\n{textwrap.indent(textwrap.dedent(detection).strip(), '    ')}\n"
    )


def compile_ir(detection: str, config: CompilerConfig | None = None) -> ir.Node:
    rules, rejections = compile_yaml(rule_text(detection), config or CompilerConfig())
    assert rejections == [], rejections
    assert len(rules) == 1
    return rules[0].ir


def rejection(detection: str, config: CompilerConfig | None = None) -> Rejection:
    rules, rejections = compile_yaml(rule_text(detection), config or CompilerConfig())
    assert rules == []
    assert len(rejections) == 1, rejections
    return rejections[0]


def P(field: str | None, op: str, value: ir.Scalar, cased: bool = False, flags: str = "") -> Pred:
    return Pred(field, op, value, cased, flags)


# --- plain values and wildcards ---------------------------------------------------------------


def test_plain_value_is_case_insensitive_equality_stored_lower_cased() -> None:
    assert compile_ir("sel:\n  Image: 'C:\\Windows\\CMD.exe'\ncondition: sel") == P(
        "Image", "eq", "c:\\windows\\cmd.exe"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'*\\cmd.exe'", P("Image", "endswith", "\\cmd.exe")),
        # \* is an escaped, literal star (a classic trap in hand-written rules)
        ("'C:\\Windows\\*'", P("Image", "eq", "c:\\windows*")),
        ("'C:\\Windows\\\\*'", P("Image", "startswith", "c:\\windows\\")),
        ("'*powershell*'", P("Image", "contains", "powershell")),
        ("'cmd?.exe'", P("Image", "wildcard", "cmd?.exe")),
        ("'a*b*c'", P("Image", "wildcard", "a*b*c")),
        ("'**a**'", P("Image", "contains", "a")),
        ("'*'", P("Image", "wildcard", "*")),
        ("''", P("Image", "eq", "")),
    ],
)
def test_wildcards_pick_the_cheapest_operator(value: str, expected: Pred) -> None:
    assert compile_ir(f"sel:\n  Image: {value}\ncondition: sel") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # \* and \? are literal characters; \\ before a wildcard is a literal backslash.
        ("'100\\*'", P("F", "eq", "100*")),
        ("'what\\?'", P("F", "eq", "what?")),
        ("'a\\\\*'", P("F", "startswith", "a\\")),
        ("'a\\\\\\*b'", P("F", "eq", "a\\*b")),
        ("'a\\*b*'", P("F", "startswith", "a*b")),
        ("'x\\*y*z'", P("F", "wildcard", "x\\*y*z")),
        ("'back\\slash\\*?'", P("F", "wildcard", "back\\\\slash\\*?")),
        # A trailing backslash is a literal backslash.
        ("'C:\\Temp\\'", P("F", "eq", "c:\\temp\\")),
        # % and _ are not special in Sigma.
        ("'100%_done*'", P("F", "startswith", "100%_done")),
    ],
)
def test_sigma_escaping(value: str, expected: Pred) -> None:
    assert compile_ir(f"sel:\n  F: {value}\ncondition: sel") == expected


def test_contains_startswith_endswith() -> None:
    node = compile_ir(
        """
        sel:
          A|contains: 'Mid'
          B|startswith: 'Pre'
          C|endswith: 'Suf'
          D|contains: 'a*b'
        condition: sel
        """
    )
    assert node == And(
        (
            P("A", "contains", "mid"),
            P("B", "startswith", "pre"),
            P("C", "endswith", "suf"),
            P("D", "wildcard", "*a*b*"),
        )
    )


def test_value_list_is_or_and_all_modifier_is_and() -> None:
    assert compile_ir("sel:\n  A|contains: [x, y]\ncondition: sel") == Or(
        (P("A", "contains", "x"), P("A", "contains", "y"))
    )
    assert compile_ir("sel:\n  A|contains|all: [x, y]\ncondition: sel") == And(
        (P("A", "contains", "x"), P("A", "contains", "y"))
    )


def test_list_of_maps_is_or_of_ands() -> None:
    node = compile_ir(
        """
        sel:
          - A: 1
            B: 2
          - C: 3
        condition: sel
        """
    )
    assert node == Or((And((P("A", "eq", 1), P("B", "eq", 2))), P("C", "eq", 3)))


def test_numbers_booleans_null_and_empty_list() -> None:
    node = compile_ir(
        """
        sel:
          EventID: [4688, 1]
          Ratio: 1.5
          Enabled: true
          Missing: null
          Nothing: []
        condition: sel
        """
    )
    assert node == And(
        (
            Or((P("EventID", "eq", 4688), P("EventID", "eq", 1))),
            P("Ratio", "eq", 1.5),
            P("Enabled", "eq", True),
            P("Missing", "null", None),
            P("Nothing", "null", None),
        )
    )


def test_quoted_number_stays_a_string() -> None:
    assert compile_ir("sel:\n  EventID: '4688'\ncondition: sel") == P("EventID", "eq", "4688")


def test_unicode_values_are_lower_cased() -> None:
    assert compile_ir("sel:\n  A|contains: 'ÄRGER Ωmega'\ncondition: sel") == P(
        "A", "contains", "ärger ωmega"
    )


# --- modifiers ---------------------------------------------------------------------------------


def test_cased_keeps_case_and_marks_the_predicate() -> None:
    assert compile_ir("sel:\n  A|contains|cased: 'MiXeD'\ncondition: sel") == P(
        "A", "contains", "MiXeD", cased=True
    )
    assert compile_ir("sel:\n  A|cased: 'X*y'\ncondition: sel") == P(
        "A", "wildcard", "X*y", cased=True
    )


def test_windash_expands_to_every_dash_variant() -> None:
    node = compile_ir("sel:\n  CommandLine|contains|windash: ' -enc '\ncondition: sel")
    assert node == Or(
        tuple(P("CommandLine", "contains", f" {d}enc ") for d in ("-", "/", "–", "—", "―"))
    )


def test_windash_under_all_stays_or_linked() -> None:
    node = compile_ir("sel:\n  A|windash|contains|all: ['-a', 'b']\ncondition: sel")
    assert isinstance(node, And)
    dashes, plain = node.items
    assert isinstance(dashes, Or) and len(dashes.items) == 5
    assert plain == P("A", "contains", "b")


def test_base64_and_base64offset() -> None:
    assert compile_ir("sel:\n  A|base64: 'abc'\ncondition: sel") == P("A", "eq", "ywjj")
    assert compile_ir("sel:\n  A|base64|contains: 'abc'\ncondition: sel") == P(
        "A", "contains", "ywjj"
    )
    node = compile_ir("sel:\n  A|base64offset|contains: 'http://'\ncondition: sel")
    assert node == Or(
        (
            P("A", "contains", "ahr0cdovl"),
            P("A", "contains", "h0dha6ly"),
            P("A", "contains", "odhrwoi8v"),
        )
    )


def test_base64offset_too_short_to_be_safe_is_rejected() -> None:
    # One byte at offset 1 has no fixed base64 character: the variant would match everything.
    assert rejection("sel:\n  A|base64offset|contains: 'a'\ncondition: sel").reason == (
        "invalid_value"
    )


@pytest.mark.parametrize(
    ("modifiers", "expected"),
    [
        ("utf16le|base64", "ywbtagqa"),
        ("wide|base64", "ywbtagqa"),
        ("utf16be|base64", "agmabqbk"),
    ],
)
def test_utf16_encodings(modifiers: str, expected: str) -> None:
    assert compile_ir(f"sel:\n  A|{modifiers}: 'cmd'\ncondition: sel") == P("A", "eq", expected)


def test_utf16_with_bom_encodes_a_byte_order_mark() -> None:
    if PYSIGMA_MAJOR < 2:
        pytest.xfail("pySigma 1.x encodes the BOM in UTF-8 (EF BB BF), fixed in 2.x")
    node = compile_ir("sel:\n  A|utf16|base64offset|contains: 'cmd'\ncondition: sel")
    assert node == Or(
        (
            P("A", "contains", "//5jag0aza"),
            P("A", "contains", "/+ywbtagqa"),
            P("A", "contains", "//mmabqbka"),
        )
    )


def test_wide_base64offset_contains_as_in_sigmahq_rules() -> None:
    node = compile_ir("sel:\n  A|wide|base64offset|contains: 'ping'\ncondition: sel")
    assert node == Or(
        (
            P("A", "contains", "cabpag4azw"),
            P("A", "contains", "aaaqbuagca"),
            P("A", "contains", "wagkabgbna"),
        )
    )


@pytest.mark.parametrize(
    ("modifiers", "cased", "flags"),
    [
        ("re", True, ""),
        ("re|i", False, ""),
        ("re|m", True, "m"),
        ("re|s", True, "s"),
        ("re|i|m|s", False, "ms"),
    ],
)
def test_regex_and_flags(modifiers: str, cased: bool, flags: str) -> None:
    node = compile_ir(f"sel:\n  A|{modifiers}: '^a.*B$'\ncondition: sel")
    assert node == P("A", "regex", "^a.*B$", cased=cased, flags=flags)


def test_regex_keeps_backslashes_and_wildcard_characters_verbatim() -> None:
    node = compile_ir("sel:\n  A|re: '\\\\\\*a?\\d+\\\\$'\ncondition: sel")
    assert node == P("A", "regex", "\\\\\\*a?\\d+\\\\$", cased=True)


def test_invalid_regex_is_rejected() -> None:
    rej = rejection("sel:\n  A|re: '(unclosed'\ncondition: sel")
    assert rej.reason == "invalid_regex"
    assert rej.rule_id == RULE_ID


def test_cidr_networks_are_normalised() -> None:
    node = compile_ir(
        "sel:\n  Ip|cidr: ['10.0.0.0/8', 'FE80::/10', '192.168.1.7/32']\ncondition: sel"
    )
    assert node == Or(
        (
            P("Ip", "cidr", "10.0.0.0/8"),
            P("Ip", "cidr", "fe80::/10"),
            P("Ip", "cidr", "192.168.1.7/32"),
        )
    )


@pytest.mark.parametrize("value", ["'10.0.0.1/8'", "'not-an-ip'", "'10.0.0.0/33'"])
def test_invalid_cidr_is_rejected(value: str) -> None:
    assert rejection(f"sel:\n  Ip|cidr: {value}\ncondition: sel").reason == "invalid_cidr"


def test_exists() -> None:
    node = compile_ir("sel:\n  A|exists: true\n  B|exists: false\ncondition: sel")
    assert node == And((P("A", "exists", True), P("B", "exists", False)))


@pytest.mark.parametrize(
    ("mod", "op"), [("gt", "gt"), ("gte", "gte"), ("lt", "lt"), ("lte", "lte")]
)
def test_numeric_comparisons(mod: str, op: str) -> None:
    assert compile_ir(f"sel:\n  N|{mod}: 10\ncondition: sel") == P("N", op, 10)


def test_comparison_needs_a_number() -> None:
    assert rejection("sel:\n  N|gt: 'ten'\ncondition: sel").reason == "modifier_type_error"


def test_fieldref() -> None:
    assert compile_ir("sel:\n  A|fieldref: B\ncondition: sel") == P("A", "fieldref", "B")
    assert compile_ir("sel:\n  A|fieldref|contains: B\ncondition: sel") == P(
        "A", "fieldref_contains", "B"
    )
    assert compile_ir("sel:\n  A|fieldref|startswith: B\ncondition: sel") == P(
        "A", "fieldref_startswith", "B"
    )
    assert compile_ir("sel:\n  A|fieldref|endswith: B\ncondition: sel") == P(
        "A", "fieldref_endswith", "B"
    )


def test_neq_negates_the_item() -> None:
    assert compile_ir("sel:\n  A: x\n  B|neq: y\ncondition: sel") == And(
        (P("A", "eq", "x"), Not(P("B", "eq", "y")))
    )


def test_expand_resolves_placeholders_from_the_config() -> None:
    config = CompilerConfig(placeholders={"Admins": ["root", "adm*"], "Dir": ["C:\\x"]})
    node = compile_ir(
        "sel:\n  User|expand: '%Admins%'\n  P|expand: '%Dir%\\*'\ncondition: sel", config
    )
    assert node == And(
        (
            Or((P("User", "eq", "root"), P("User", "startswith", "adm"))),
            P("P", "eq", "c:\\x*"),
        )
    )


def test_unresolved_placeholder_is_rejected() -> None:
    rej = rejection("sel:\n  User|expand: '%Admins%'\ncondition: sel")
    assert rej.reason == "unresolved_placeholder"
    assert "%Admins%" in rej.message


def test_percent_without_expand_is_literal() -> None:
    assert compile_ir("sel:\n  A: '%windir%\\x'\ncondition: sel") == P("A", "eq", "%windir%\\x")


@pytest.mark.parametrize(
    ("detection", "reason"),
    [
        ("sel:\n  A|nosuchmod: x\ncondition: sel", "unsupported_modifier"),
        ("sel:\n  A|hour: 3\ncondition: sel", "unsupported_modifier"),
        ("sel:\n  A|contains: 5\ncondition: sel", "modifier_type_error"),
    ],
)
def test_unsupported_modifiers_are_rejected(detection: str, reason: str) -> None:
    assert rejection(detection).reason == reason


# --- keywords ------------------------------------------------------------------------------------


def test_keyword_list_is_or_of_field_less_substring_searches() -> None:
    node = compile_ir(
        "keywords:\n  - 'Mimikatz'\n  - '*sekurlsa::*'\n  - 'a*b'\ncondition: keywords"
    )
    assert node == Or(
        (
            P(None, "keyword", "mimikatz"),
            P(None, "keyword", "sekurlsa::"),
            P(None, "keyword", "a*b"),
        )
    )


def test_keyword_all_is_and() -> None:
    node = compile_ir(
        "keywords:\n  '|all':\n    - 'Oab'\n    - ' -ExternalUrl '\ncondition: keywords"
    )
    assert node == And((P(None, "keyword", "oab"), P(None, "keyword", " -externalurl ")))


def test_keyword_number_regex_and_escapes() -> None:
    node = compile_ir("kw:\n  - 4688\n  - 'x\\*y'\nrx:\n  '|re': 'a.b'\ncondition: kw or rx")
    assert node == Or(
        (
            P(None, "keyword", "4688"),
            P(None, "keyword", "x\\*y"),
            P(None, "regex", "a.b", cased=True),
        )
    )


# --- conditions -------------------------------------------------------------------------------

DETECTIONS = """
sel_a:
  A: a
sel_b:
  B: b
filter_c:
  C: c
_private:
  D: d
"""
A, B, C, D = P("A", "eq", "a"), P("B", "eq", "b"), P("C", "eq", "c"), P("D", "eq", "d")


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("sel_a and sel_b", And((A, B))),
        ("sel_a or sel_b", Or((A, B))),
        ("not sel_a", Not(A)),
        ("sel_a and not filter_c", And((A, Not(C)))),
        ("sel_a or sel_b and filter_c", Or((A, And((B, C))))),
        ("(sel_a or sel_b) and filter_c", And((Or((A, B)), C))),
        ("not (sel_a or sel_b)", Not(Or((A, B)))),
        ("not sel_a and sel_b", And((Not(A), B))),
        ("1 of sel_*", Or((A, B))),
        ("any of sel_*", Or((A, B))),
        ("all of sel_*", And((A, B))),
        ("1 of sel_* and not 1 of filter_*", And((Or((A, B)), Not(C)))),
        ("1 of them", Or((A, B, C))),
        ("all of them", And((A, B, C))),
        ("1 of *_a", A),
        ("_private and sel_a", And((D, A))),
    ],
)
def test_condition_forms(condition: str, expected: ir.Node) -> None:
    assert compile_ir(f"{DETECTIONS}condition: {condition}") == expected


def test_condition_list_is_or() -> None:
    node = compile_ir(f"{DETECTIONS}condition:\n  - sel_a\n  - sel_b and filter_c")
    assert node == Or((A, And((B, C))))


@pytest.mark.parametrize(
    "condition",
    ["sel_a and nope", "1 of nomatch*", "sel_a and", "sel_a | count() > 5", "all of x* or sel_a"],
)
def test_bad_conditions_are_rejected(condition: str) -> None:
    assert rejection(f"{DETECTIONS}condition: {condition}").reason == "condition_error"


def test_same_predicate_twice_is_deduplicated() -> None:
    assert compile_ir("s1:\n  A: x\ns2:\n  A: X\ncondition: s1 or s2") == P("A", "eq", "x")


# --- rules, files, filters, correlations --------------------------------------------------------


def test_compile_rule_carries_the_metadata() -> None:
    text = rule_text(
        "sel:\n  A: x\ncondition: sel",
        extra="author: Jane\ndescription: Why\ntags:\n    - attack.execution\n"
        "    - attack.t1059.001\nreferences:\n    - https://example.org\n",
    )
    rule = SigmaRule.from_yaml(text)
    compiled = compile_rule(rule)
    assert compiled.id == RULE_ID
    assert compiled.title == "Test rule"
    assert compiled.level == "high"
    assert compiled.status == "test"
    assert compiled.author == "Jane"
    assert compiled.description == "Why"
    assert compiled.tags == ("attack.execution", "attack.t1059.001")
    assert compiled.references == ("https://example.org",)
    assert (compiled.logsource.category, compiled.logsource.product) == (
        "process_creation",
        "windows",
    )
    assert compiled.logsource.service is None
    assert compiled.ir == P("A", "eq", "x")


def test_compile_rule_raises_compile_error_with_reason_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(rule_text("sel:\n  A|re: '('\ncondition: sel"))
    rules, rejections = compile_path([path])
    assert rules == []
    assert rejections[0].reason == "invalid_regex"
    assert str(path) in rejections[0].message
    rule = SigmaRule.from_yaml(rule_text("sel:\n  A: x\ncondition: sel and missing"))
    with pytest.raises(CompileError) as err:
        compile_rule(rule)
    assert err.value.reason == "condition_error"


def test_compiled_rule_round_trips_through_json() -> None:
    rules, _ = compile_yaml(rule_text("sel:\n  A|re|i: 'x'\n  B|cidr: '::1/128'\ncondition: sel"))
    doc = json.loads(json.dumps(rules[0].to_dict()))
    again = CompiledRule.from_dict(doc)
    assert again == rules[0]
    assert again.ir.digest() == rules[0].ir.digest()


def test_metadata_problems_are_warnings_unless_strict() -> None:
    text = rule_text("sel:\n  A: x\ncondition: sel", extra="date: not-a-date\n")
    rules, rejections = compile_yaml(text)
    assert rejections == [] and rules[0].warnings
    rules, rejections = compile_yaml(text, CompilerConfig(strict_metadata=True))
    assert rules == [] and rejections[0].reason == "invalid_metadata"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("title: x\nlogsource: {category: a}\ndetection: [\n", "parse_error"),
        ("title: x\nlogsource: {category: a}\n", "invalid_detection"),
        ("title: x\ndetection:\n  sel: {A: 1}\n  condition: sel\n", "invalid_logsource"),
    ],
)
def test_broken_rules_become_rejections(text: str, reason: str) -> None:
    rules, rejections = compile_yaml(text)
    assert rules == []
    assert [r.reason for r in rejections] == [reason]


def test_duplicate_ids_are_rejected() -> None:
    one = rule_text("sel:\n  A: x\ncondition: sel")
    rules, rejections = compile_yaml(one + "---\n" + one)
    assert len(rules) == 1
    assert [r.reason for r in rejections] == ["duplicate_id"]


CORRELATION = """
title: Many failures
id: 0e95725d-7320-415d-80f7-004da920fc11
correlation:
    type: event_count
    rules:
        - 5f9ba8c4-2d2a-4c34-9a37-3f0fb1f0b0a1
    group-by:
        - User
    timespan: 5m
    condition:
        gte: 10
"""


def test_correlation_rules_are_reported_and_their_base_rules_compiled() -> None:
    text = rule_text("sel:\n  A: x\ncondition: sel") + "---\n" + CORRELATION
    rules, rejections = compile_yaml(text)
    assert [r.id for r in rules] == [RULE_ID]
    assert [(r.reason, r.rule_id) for r in rejections] == [
        ("correlation_rule", "0e95725d-7320-415d-80f7-004da920fc11")
    ]


FILTER = """
title: Exclude the admin host
id: 7e5c3c36-4ac1-4cf9-bd05-a0a8e6d5b6e9
logsource:
    category: process_creation
    product: windows
filter:
    rules:
        - {target}
    selection:
        Computer|startswith: 'ADMIN-'
    condition: not selection
"""


def test_meta_filter_is_and_not_ed_into_the_rules_it_names(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(rule_text("sel:\n  A: x\ncondition: sel"))
    other_id = "a1f0b0a1-2d2a-4c34-9a37-3f0fb1f05f9b"
    (tmp_path / "other.yml").write_text(rule_text("sel:\n  A: y\ncondition: sel", rule_id=other_id))
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "f.yml").write_text(FILTER.format(target=RULE_ID))
    rules, rejections = compile_path([tmp_path])
    assert rejections == []
    by_id = {r.id: r for r in rules}
    assert by_id[RULE_ID].ir == And((P("A", "eq", "x"), Not(P("Computer", "startswith", "admin-"))))
    assert by_id[RULE_ID].filters == ("7e5c3c36-4ac1-4cf9-bd05-a0a8e6d5b6e9",)
    assert by_id[other_id].ir == P("A", "eq", "y")
    assert by_id[other_id].filters == ()


def test_broken_meta_filter_is_rejected_and_not_applied() -> None:
    broken = FILTER.format(target=RULE_ID).replace("not selection", "not nothing")
    rules, rejections = compile_yaml(rule_text("sel:\n  A: x\ncondition: sel") + "---\n" + broken)
    assert rules[0].ir == P("A", "eq", "x")
    assert [r.reason for r in rejections] == ["condition_error"]
    assert rejections[0].message.startswith("meta filter")


def test_compile_path_never_raises(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(rule_text("sel:\n  A: x\ncondition: sel"))
    (tmp_path / "broken.yml").write_text("title: [\n")
    (tmp_path / "binary.yml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "notes.txt").write_text("ignored")
    rules, rejections = compile_path([tmp_path])
    assert [r.title for r in rules] == ["Test rule"]
    assert sorted(r.reason for r in rejections) == ["parse_error", "parse_error"]
    assert all(r.path and r.path.endswith(".yml") for r in rejections)


# --- the IR itself ------------------------------------------------------------------------------


def test_smart_constructors_flatten_fold_and_deduplicate() -> None:
    a, b = P("A", "eq", "a"), P("B", "eq", "b")
    assert ir.and_(a, ir.and_(b, a)) == And((a, b))
    assert ir.or_(a, ir.FALSE_NODE) == a
    assert ir.or_(a, ir.TRUE_NODE) == ir.TRUE_NODE
    assert ir.and_(a, ir.FALSE_NODE) == ir.FALSE_NODE
    assert ir.and_() == ir.TRUE_NODE and ir.or_() == ir.FALSE_NODE
    assert ir.not_(ir.not_(a)) == a
    assert ir.not_(ir.TRUE_NODE) == ir.FALSE_NODE


def test_values_of_different_types_are_different_predicates() -> None:
    assert P("A", "eq", 1) != P("A", "eq", True)
    assert P("A", "eq", 1) != P("A", "eq", 1.0)
    assert len({P("A", "eq", 1), P("A", "eq", True), P("A", "eq", "1")}) == 3


def test_ir_round_trips_and_hashes_deterministically() -> None:
    node = ir.and_(
        P("A", "regex", "^x", cased=True, flags="ms"),
        ir.not_(ir.or_(P(None, "keyword", "k\\*"), P("N", "gt", 1.5), P("B", "null", None))),
    )
    doc = json.loads(json.dumps(node.to_dict()))
    assert ir.node_from_dict(doc) == node
    assert ir.Pred.from_dict(doc) == node
    assert node.digest() == ir.node_from_dict(doc).digest()
    assert node.canonical_json() == ir.canonical_json(node)
    assert ir.fields(node) == {"A", "N", "B"}


@pytest.mark.parametrize(
    "doc",
    [
        {"op": "nope", "field": "A", "value": 1},
        {"and": "not-a-list"},
        {"field": "A", "op": "eq", "value": [1]},
        {"field": None, "op": "eq", "value": "x"},
        {"field": "A", "op": "eq", "value": "x", "flags": "m"},
        {"field": "A", "op": "keyword", "value": "x"},
        [],
    ],
)
def test_malformed_ir_is_refused(doc: object) -> None:
    with pytest.raises(ir.IRError):
        ir.node_from_dict(doc)


def test_glob_helpers() -> None:
    assert ir.escape_glob("a*b?c\\") == "a\\*b\\?c\\\\"
    assert ir.parse_glob("a\\*b*?") == [(False, "a*b"), (True, "*"), (True, "?")]
    with pytest.raises(ir.IRError):
        ir.parse_glob("dangling\\")


# --- purity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["detections.compiler.sigma_to_ir", "detections.compiler.ir", "detections.compiler"]
)
def test_compiling_never_imports_pyspark(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "from detections.compiler import compile_yaml\n"
        "compile_yaml('title: t\\nlogsource: {category: a}\\n"
        "detection: {s: {A: 1}, condition: s}\\n')\n"
        "loaded = sorted(m for m in sys.modules if m == 'pyspark' or m.startswith('pyspark.'))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
