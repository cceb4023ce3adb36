"""Sigma semantics cases shared by the engine's tests: (id, detection, events, indices of
the events that must match). Events are dicts of Sigma field -> value; a missing key is a
missing (null) field. Also the loaders of SigmaHQ's regression events and rule corpus."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from detections.compiler import CompilerConfig, compile_path, compile_yaml, ir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIGSTREAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def rule_ir(detection: str, config: CompilerConfig | None = None) -> ir.Node:
    text = "title: t\nlogsource:\n    category: test\ndetection:\n" + textwrap.indent(
        textwrap.dedent(detection).strip(), "    "
    )
    rules, rejections = compile_yaml(text, config or CompilerConfig())
    assert rejections == [], rejections
    return rules[0].ir


CASES: list[tuple[str, str, list[dict[str, Any]], list[int]]] = [
    # id, detection, events, expected matches
    (
        "case-insensitive-by-default",
        "sel:\n  Image|endswith: '\\POWERSHELL.exe'\ncondition: sel",
        [
            {"Image": "C:\\Windows\\System32\\powershell.exe"},
            {"Image": "C:\\x\\PowerShell.EXE"},
            {"Image": "C:\\x\\pwsh.exe"},
            {},
        ],
        [0, 1],
    ),
    (
        "cased",
        "sel:\n  Image|endswith|cased: '\\PowerShell.exe'\ncondition: sel",
        [{"Image": "C:\\x\\powershell.exe"}, {"Image": "C:\\x\\PowerShell.exe"}],
        [1],
    ),
    (
        "equality-is-whole-value",
        "sel:\n  Image: 'C:\\Windows\\cmd.exe'\ncondition: sel",
        [
            {"Image": "c:\\windows\\CMD.EXE"},
            {"Image": "C:\\Windows\\cmd.exe "},
            {"Image": "xC:\\Windows\\cmd.exe"},
        ],
        [0],
    ),
    (
        "trailing-backslash",
        "sel:\n  - ParentImage|startswith: 'C:\\Windows\\'\n  - TargetFilename|endswith: '\\'\n"
        "condition: sel",
        [
            {"ParentImage": "C:\\Windows\\x.exe"},
            {"ParentImage": "C:\\WindowsX"},
            {"TargetFilename": "C:\\dir\\"},
            {"TargetFilename": "C:\\dir"},
        ],
        [0, 2],
    ),
    (
        "escaped-star-is-literal",
        "sel:\n  CommandLine|contains: ' -Filter \\*'\ncondition: sel",
        [{"CommandLine": "Get-ADUser -Filter *"}, {"CommandLine": "Get-ADUser -Filter x"}],
        [0],
    ),
    (
        "escaped-question-mark-is-literal",
        "sel:\n  CommandLine: 'what\\?'\ncondition: sel",
        [{"CommandLine": "what?"}, {"CommandLine": "whatX"}],
        [0],
    ),
    (
        "escaped-backslash-before-wildcard",
        "sel:\n  CommandLine: 'C:\\\\*'\ncondition: sel",
        [{"CommandLine": "C:\\abc"}, {"CommandLine": "C:abc"}],
        [0],
    ),
    (
        "backslash-star-literal-pair",
        "sel:\n  CommandLine: 'a\\\\\\*b'\ncondition: sel",
        [{"CommandLine": "a\\*b"}, {"CommandLine": "a\\xb"}, {"CommandLine": "a*b"}],
        [0],
    ),
    (
        "sql-like-metacharacters-are-literal",
        "sel:\n  - CommandLine: '100%_done*x'\n  - Details|contains: '%_'\ncondition: sel",
        [
            {"CommandLine": "100%_done and x"},
            {"CommandLine": "100xxdone x"},
            {"Details": "a%_b"},
            {"Details": "ab"},
            {"CommandLine": "100%_done"},
        ],
        [0, 2],
    ),
    (
        "wildcard-star-and-question-mark",
        "sel:\n  Image: 'C:\\Users\\\\*\\AppData\\cmd?.exe'\ncondition: sel",
        [
            {"Image": "C:\\Users\\bob\\AppData\\cmd1.exe"},
            {"Image": "C:\\Users\\b\\o\\b\\AppData\\cmdé.exe"},
            {"Image": "C:\\Users\\bob\\AppData\\cmd.exe"},
            {"Image": "C:\\Users\\bob\\AppData\\cmd12.exe"},
        ],
        [0, 1],
    ),
    (
        "star-matches-newlines",
        "sel:\n  CommandLine: 'a*b'\ncondition: sel",
        [{"CommandLine": "a\nline\nb"}, {"CommandLine": "a\nc"}],
        [0],
    ),
    (
        "empty-string-is-not-null",
        "sel:\n  Details: ''\ncondition: sel",
        [{"Details": ""}, {}, {"Details": " "}],
        [0],
    ),
    (
        "not-over-a-missing-field-is-true",
        "sel:\n  Image|endswith: '\\a.exe'\nfilter:\n  ParentImage|startswith: 'C:\\x\\'\n"
        "condition: sel and not filter",
        [
            {"Image": "C:\\a.exe"},
            {"Image": "C:\\a.exe", "ParentImage": "C:\\x\\p.exe"},
            {"Image": "C:\\a.exe", "ParentImage": "C:\\y\\p.exe"},
        ],
        [0, 2],
    ),
    (
        "not-of-a-whole-group",
        "a:\n  User: x\nb:\n  ParentUser|contains: [y, z]\ncondition: not (a or b)",
        [{}, {"User": "x"}, {"ParentUser": "zz"}, {"User": "w", "ParentUser": "w"}],
        [0, 3],
    ),
    (
        "null-value",
        "sel:\n  Image: 'a'\n  ParentImage: null\ncondition: sel",
        [{"Image": "a"}, {"Image": "a", "ParentImage": ""}, {"Image": "a", "ParentImage": "p"}],
        [0],
    ),
    (
        "exists",
        "sel:\n  Image|exists: true\n  User|exists: false\ncondition: sel",
        [{"Image": "a"}, {"Image": "a", "User": "u"}, {"User": "u"}, {"Image": ""}],
        [0, 3],
    ),
    (
        "numbers-match-long-and-string-columns",
        "sel:\n  - EventID: 4688\n  - EventIDText: 4688\n  - EventID: '1'\ncondition: sel",
        [
            {"EventID": 4688},
            {"EventIDText": "4688"},
            {"EventID": 46880},
            {"EventIDText": "04688"},
            {"EventID": 1},
        ],
        [0, 1, 4],
    ),
    (
        "numeric-comparisons",
        "sel:\n  - Size|gt: 10\n  - SizeText|lte: 2\ncondition: sel",
        [
            {"Size": 11},
            {"Size": 10},
            {"SizeText": "2"},
            {"SizeText": "1.5"},
            {"SizeText": "abc"},
            {"SizeText": "3"},
            {},
        ],
        [0, 2, 3],
    ),
    (
        "gte-and-lt-together",
        "sel:\n  Size|gte: 10\n  Size|lt: 20\ncondition: sel",
        [{"Size": 9}, {"Size": 10}, {"Size": 19}, {"Size": 20}],
        [1, 2],
    ),
    (
        "unicode-case-folding",
        "sel:\n  - Details|contains: 'ÄRGER'\n  - User: 'Ωμέγα'\ncondition: sel",
        [
            {"Details": "großer ärger"},
            {"Details": "ARGER"},
            {"User": "ΩΜΈΓΑ"},
            {"User": "ωμέγα"},
        ],
        [0, 2, 3],
    ),
    (
        "all-modifier",
        "sel:\n  CommandLine|contains|all: ['-a', '-b']\ncondition: sel",
        [{"CommandLine": "x -b -a"}, {"CommandLine": "x -a"}],
        [0],
    ),
    (
        "value-list-is-or",
        "sel:\n  Image|endswith: ['\\a.exe', '\\b.exe', '\\c.exe']\n  User: [x, y, z]\n"
        "condition: sel",
        [
            {"Image": "\\B.exe", "User": "Y"},
            {"Image": "\\d.exe", "User": "x"},
            {"Image": "\\c.exe"},
        ],
        [0],
    ),
    (
        "windash",
        "sel:\n  CommandLine|contains|windash: ' -nop '\ncondition: sel",
        [
            {"CommandLine": "ps -NoP x"},
            {"CommandLine": "ps /nop x"},
            {"CommandLine": "ps –nop x"},
            {"CommandLine": "ps —nop x"},
            {"CommandLine": "ps ―nop x"},
            {"CommandLine": "ps nop x"},
            {"CommandLine": "ps +nop x"},
        ],
        [0, 1, 2, 3, 4],
    ),
    (
        "regex-is-case-sensitive-unanchored-search",
        "sel:\n  CommandLine|re: 'a[0-9]+b'\ncondition: sel",
        [{"CommandLine": "xxa12bxx"}, {"CommandLine": "A12B"}, {"CommandLine": "ab"}],
        [0],
    ),
    (
        "regex-i-flag-folds-unicode",
        "sel:\n  CommandLine|re|i: '^ärger.*x$'\ncondition: sel",
        [{"CommandLine": "ÄRGER yX"}, {"CommandLine": "so ärger x"}],
        [0],
    ),
    (
        "regex-m-flag",
        "sel:\n  - CommandLine|re|m: '^second$'\n  - Details|re: '^second$'\ncondition: sel",
        [{"CommandLine": "first\nsecond\nthird"}, {"Details": "first\nsecond\nthird"}],
        [0],
    ),
    (
        "regex-s-flag",
        "sel:\n  - CommandLine|re|s: 'a.b'\n  - Details|re: 'a.b'\ncondition: sel",
        [{"CommandLine": "a\nb"}, {"Details": "a\nb"}, {"Details": "axb"}],
        [0, 2],
    ),
    (
        "regex-brackets-and-braces",
        "sel:\n  CommandLine|re: '[[]x{2}[]]{y}'\ncondition: sel",
        [{"CommandLine": "[xx]{y}"}, {"CommandLine": "[x]{y}"}],
        [0],
    ),
    (
        "regex-contains-padding",
        "sel:\n  CommandLine|re: '.*evil\\.exe.*'\ncondition: sel",
        [{"CommandLine": "run EVIL.exe now"}, {"CommandLine": "run evil.exe\nnow"}],
        [1],
    ),
    (
        "cidr-ipv4",
        "sel:\n  DestinationIp|cidr: ['10.0.0.0/8', '192.168.1.0/24', '172.16.0.0/12']\n"
        "condition: sel",
        [
            {"DestinationIp": "10.1.2.3"},
            {"DestinationIp": "11.1.2.3"},
            {"DestinationIp": "192.168.1.255"},
            {"DestinationIp": "192.168.2.1"},
            {"DestinationIp": "172.31.255.255"},
            {"DestinationIp": "172.32.0.0"},
            {"DestinationIp": "::ffff:10.9.9.9"},
            {"DestinationIp": "::FFFF:a01:203"},
            {"DestinationIp": " 10.0.0.1 "},
            {"DestinationIp": "10.0.0.256"},
            {"DestinationIp": "010.0.0.1"},
            {"DestinationIp": "10.0.0"},
            {"DestinationIp": "fe80::1"},
            {},
        ],
        [0, 2, 4, 6, 7, 8],
    ),
    (
        "cidr-ipv6",
        "sel:\n  DestinationIp|cidr: ['fe80::/10', '::1/128', '2001:db8::/32', 'fc00::/7']\n"
        "condition: sel",
        [
            {"DestinationIp": "fe80::1%eth0"},
            {"DestinationIp": "FEBF:ffff::"},
            {"DestinationIp": "fec0::1"},
            {"DestinationIp": "::1"},
            {"DestinationIp": "0:0:0:0:0:0:0:1"},
            {"DestinationIp": "::2"},
            {"DestinationIp": "2001:0db8:0000:0000:0000:0000:0000:0001"},
            {"DestinationIp": "2001:db9::"},
            {"DestinationIp": "fd12:3456::7"},
            {"DestinationIp": "10.0.0.1"},
            {"DestinationIp": "1::2::3"},
            {"DestinationIp": "fe80:1:2:3:4:5:6:7:8"},
            {"DestinationIp": "fe80::1::"},
            {"DestinationIp": "fe80:::1"},
            {"DestinationIp": "::ffff:10.0.0.1"},
        ],
        [0, 1, 3, 4, 6, 8],
    ),
    (
        "cidr-edges",
        "a:\n  DestinationIp|cidr: '0.0.0.0/0'\nb:\n  User|cidr: '::/0'\n"
        "c:\n  Details|cidr: '1.2.3.4/32'\ncondition: 1 of them",
        [
            {"DestinationIp": "255.255.255.255"},
            {"User": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
            {"User": "::"},
            {"Details": "1.2.3.4"},
            {"Details": "1.2.3.5"},
            {"DestinationIp": "not an ip"},
        ],
        [0, 1, 2, 3],
    ),
    (
        "not-cidr-with-missing-field",
        "sel:\n  Image: a\nfilter:\n  DestinationIp|cidr: '10.0.0.0/8'\n"
        "condition: sel and not filter",
        [
            {"Image": "a"},
            {"Image": "a", "DestinationIp": "10.0.0.1"},
            {"Image": "a", "DestinationIp": "x"},
        ],
        [0, 2],
    ),
    (
        "fieldref",
        "sel:\n  User|fieldref: ParentUser\ncondition: sel",
        [
            {"User": "A", "ParentUser": "a"},
            {"User": "a", "ParentUser": "b"},
            {"User": "a"},
            {},
        ],
        [0],
    ),
    (
        "fieldref-contains-and-not",
        "sel:\n  CommandLine|fieldref|contains: Image\nf:\n  User|fieldref: ParentUser\n"
        "condition: sel and not f",
        [
            {"CommandLine": "run C:\\X.exe", "Image": "c:\\x.exe", "User": "a"},
            {"CommandLine": "run C:\\X.exe", "Image": "c:\\x.exe", "User": "a", "ParentUser": "a"},
            {"CommandLine": "run", "Image": "c:\\x.exe"},
        ],
        [0],
    ),
    (
        "keywords-search-every-string-field",
        "keywords:\n  - 'Mimikatz'\n  - 'sekurlsa::'\ncondition: keywords",
        [
            {"CommandLine": "x MIMIKATZ y"},
            {"Details": "sekurlsa::logonpasswords"},
            {"Image": "mimi", "User": "katz"},
            {"EventID": 4688},
        ],
        [0, 1],
    ),
    (
        "keyword-wildcards-stay-within-one-field",
        "keywords:\n  - 'foo*bar'\ncondition: keywords",
        [{"Details": "xx foo 1 bar xx"}, {"Image": "foo", "User": "bar"}],
        [0],
    ),
    (
        "keyword-all",
        "keywords:\n  '|all':\n    - 'alpha'\n    - 'beta'\ncondition: keywords",
        [{"Image": "alpha", "User": "beta"}, {"Image": "alpha beta"}, {"Image": "alpha"}],
        [0, 1],
    ),
    (
        "keyword-cased-and-regex",
        "kw:\n  '|cased': 'ExAcT'\nrx:\n  '|re': 'a+z'\ncondition: kw or rx",
        [{"Details": "ExAcT"}, {"Details": "exact"}, {"User": "aaaz"}],
        [0, 2],
    ),
    (
        "base64offset",
        "sel:\n  CommandLine|base64offset|contains: 'http://'\ncondition: sel",
        [
            {"CommandLine": "powershell -e aHR0cDovL2V2aWw="},  # b64("http://evil")
            {"CommandLine": "x eGh0dHA6Ly9l"},  # b64("xhttp://e")
            {"CommandLine": "x eHhodHRwOi8v"},  # b64("xxhttp://")
            {"CommandLine": "x aHR0cHM6Ly8="},  # b64("https://")
        ],
        [0, 1, 2],
    ),
    (
        "wide-base64offset",
        "sel:\n  CommandLine|wide|base64offset|contains: 'ping'\ncondition: sel",
        [
            {"CommandLine": "-enc cABpAG4AZwAgADEALgAxAC4AMQAuADEA"},  # utf16le b64 "ping 1.1.1.1"
            {"CommandLine": "-enc cGluZyAxLjEuMS4x"},  # utf8 b64 "ping 1.1.1.1"
        ],
        [0],
    ),
    (
        "condition-precedence",
        "a:\n  User: a\nb:\n  User: b\nc:\n  ParentUser: c\ncondition: a or b and c",
        [{"User": "a"}, {"User": "b"}, {"User": "b", "ParentUser": "c"}],
        [0, 2],
    ),
    (
        "one-of-and-all-of-patterns",
        "selection_a:\n  User: a\nselection_b:\n  ParentUser: b\nfilter_main:\n  Image: x\n"
        "condition: all of selection_* and not 1 of filter_*",
        [
            {"User": "a", "ParentUser": "b"},
            {"User": "a"},
            {"User": "a", "ParentUser": "b", "Image": "x"},
        ],
        [0],
    ),
    (
        "one-of-them",
        "a:\n  User: a\nb:\n  ParentUser: b\n_hidden:\n  Image: x\ncondition: 1 of them",
        [{"User": "a"}, {"ParentUser": "b"}, {"Image": "x"}],
        [0, 1],
    ),
    (
        "all-of-them",
        "a:\n  User: a\nb:\n  ParentUser: b\ncondition: all of them",
        [{"User": "a"}, {"User": "a", "ParentUser": "b"}],
        [1],
    ),
    (
        "list-of-maps",
        "sel:\n  - User: a\n    ParentUser: b\n  - Image: c\ncondition: sel",
        [{"User": "a"}, {"User": "a", "ParentUser": "b"}, {"Image": "C"}],
        [1, 2],
    ),
    (
        "neq",
        "sel:\n  Image: a\n  User|neq: root\ncondition: sel",
        [{"Image": "a", "User": "root"}, {"Image": "a", "User": "bob"}, {"Image": "a"}],
        [1, 2],
    ),
    (
        "many-values-grouped",
        "sel:\n  CommandLine|contains:\n"
        + "".join(f"    - 'needle{i}'\n" for i in range(300))
        + "  Image:\n"
        + "".join(f"    - 'img{i}'\n" for i in range(300))
        + "condition: sel",
        [
            {"CommandLine": "a NEEDLE299 b", "Image": "IMG7"},
            {"CommandLine": "needle 1", "Image": "img7"},
            {"CommandLine": "needle1", "Image": "img300"},
        ],
        [0],
    ),
    (
        "grouped-values-containing-control-characters",
        "sel:\n  Details|wide|contains:\n"
        + "".join(f"    - 'v{i}'\n" for i in range(20))
        + '    - "s\\u0001p"\n'
        + "condition: sel",
        [
            {"Details": "xv\u00007\u0000"},
            {"Details": "s\u0000\u0001\u0000p\u0000"},
            {"Details": "v7"},
            {"Details": "s\u0001p"},
        ],
        [0, 1],
    ),
]


def flatten_regression_event(event: dict[str, Any]) -> dict[str, str]:
    """A Windows event in the regression JSON form as Sigma field -> string value: System
    attributes as ``<Tag>_<Attribute>``, EventData / UserData entries by name (spaces
    removed, as Sigma's field naming convention asks)."""
    fields: dict[str, str] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, dict):
            value = value.get("#text")
        if value is not None and not isinstance(value, dict | list):
            fields[name.replace(" ", "")] = str(value)

    root = event.get("Event", {})
    for name, value in (root.get("System") or {}).items():
        if isinstance(value, dict):
            for attribute, attribute_value in (value.get("#attributes") or {}).items():
                put(f"{name}_{attribute}", attribute_value)
        put(name, value)
    for name, value in (root.get("EventData") or {}).items():
        if name != "#attributes":
            put(name, value)
    for value in (root.get("UserData") or {}).values():
        if isinstance(value, dict):
            for name, inner in value.items():
                if name != "#attributes":
                    put(name, inner)
    return fields


def json_documents(text: str) -> list[dict[str, Any]]:
    decoder, position = json.JSONDecoder(), 0
    documents: list[dict[str, Any]] = []
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return documents
        document, position = decoder.raw_decode(text, position)
        documents.append(document)


def regression_cases() -> list[tuple[str, Path, list[dict[str, str]]]]:
    root = SHARED_DATA / "sigma-regression"
    if not root.is_dir():
        pytest.skip(f"SigmaHQ regression data not found under {root}")
    cases = []
    for info in sorted(root.rglob("info.yml")):
        meta = yaml.safe_load(info.read_text(encoding="utf-8"))
        events = [
            flatten_regression_event(document)
            for path in sorted(info.parent.glob("*.json"))
            for document in json_documents(path.read_text(encoding="utf-8"))
        ]
        for rule in meta.get("rule_metadata", []):
            cases.append((str(rule["id"]), info.parent, events))
    return cases


def corpus_rules() -> dict[str | None, Any]:
    corpus = SHARED_DATA / "sigma"
    folders = [
        corpus / name for name in ("rules", "rules-emerging-threats", "rules-threat-hunting")
    ]
    folders = [folder for folder in folders if folder.is_dir()]
    if not folders:
        pytest.skip(f"SigmaHQ corpus not found under {corpus}")
    rules, _ = compile_path(folders)
    return {rule.id: rule for rule in rules}
