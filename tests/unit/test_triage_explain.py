"""The "Why it matched" text of ``sigstream findings show``: selections, fields and values,
keywords, a correlation's base findings, and the rule's description, false positives,
references and ATT&CK links."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from sigstream.commands import triage as cli
from triage.explain import attack_url, field_line, why_lines

MATCH = {
    "selections": [
        {
            "name": "selection_img",
            "fields": [
                {
                    "field": "Image",
                    "modifier": "endswith",
                    "pattern": "\\certutil.exe",
                    "value": "C:\\Windows\\System32\\certutil.exe",
                },
                {"field": "CommandLine", "modifier": "", "pattern": None, "value": None},
            ],
        }
    ],
    "keywords": ["urlcache", "[bold]x"],
}


def test_why_lines() -> None:
    assert why_lines(MATCH) == [
        "selection_img:",
        '  Image|endswith "\\certutil.exe" = "C:\\Windows\\System32\\certutil.exe"',
        "  CommandLine null = null",
        'keywords: "urlcache", "[bold]x"',
    ]
    assert why_lines(None) == [] and why_lines({"selections": [], "keywords": []}) == []
    assert (
        field_line(
            {
                "field": "DestinationIp",
                "modifier": "cidr",
                "pattern": "10.0.0.0/8",
                "value": "10.1.2.3",
            }
        )
        == 'DestinationIp|cidr "10.0.0.0/8" = "10.1.2.3"'
    )


def test_attack_urls() -> None:
    assert attack_url("T1059.001") == "https://attack.mitre.org/techniques/T1059/001/"
    assert attack_url("t1105") == "https://attack.mitre.org/techniques/T1105/"
    assert attack_url("TA0002") is None and attack_url("T1059.1") is None


def _shown(finding: dict[str, Any], bases: list[dict[str, Any]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    saved, cli.console = cli.console, console
    try:
        cli.print_why(finding, bases)
    finally:
        cli.console = saved
    return console.export_text()


def test_show_prints_why_and_about_the_rule() -> None:
    finding = {
        "rule": {
            "name": "Suspicious Download Via Certutil.EXE",
            "description": "Detects certutil downloading files.",
            "falsepositives": ["Unknown", "Admin scripts"],
            "references": ["https://lolbas-project.github.io/lolbas/Binaries/Certutil/"],
        },
        "threat": {"technique": {"id": ["T1105", "T1059.001"]}},
        "sigstream": {"match": MATCH},
    }
    lines = [line.rstrip() for line in _shown(finding, []).splitlines()]
    assert lines == [
        "Why it matched",
        "  selection_img:",
        '    Image|endswith "\\certutil.exe" = "C:\\Windows\\System32\\certutil.exe"',
        "    CommandLine null = null",
        '  keywords: "urlcache", "[bold]x"',  # markup in values is printed, not applied
        "About the rule",
        "       description  Detects certutil downloading files.",
        "   false positives  Unknown",
        "                    Admin scripts",
        "        references  https://lolbas-project.github.io/lolbas/Binaries/Certutil/",
        "            ATT&CK  T1105  https://attack.mitre.org/techniques/T1105/",
        "                    T1059.001  https://attack.mitre.org/techniques/T1059/001/",
    ]


def test_show_lists_a_correlations_base_findings_with_their_match() -> None:
    finding = {
        "rule": {"name": "Many certutil downloads"},
        "sigstream": {
            "correlation": {
                "type": "event_count",
                "condition": "gte 2",
                "base_findings": ["a" * 40, "b" * 40, "c" * 40],
            }
        },
    }
    bases = [
        {
            "id": "a" * 40,
            "found": True,
            "rule": "Suspicious Download Via Certutil.EXE",
            "host": "WS01",
            "time": "2024-05-01T10:00:00.000Z",
            "match": MATCH,
        },
        {"id": "b" * 40, "found": False},
    ]
    lines = [line.rstrip() for line in _shown(finding, bases).splitlines()]
    assert lines == [
        "Why it matched  event_count gte 2: 3 base finding(s), first 2",
        "  aaaaaaaaaaaa  2024-05-01 10:00:00  WS01  Suspicious Download Via Certutil.EXE",
        "      selection_img:",
        '        Image|endswith "\\certutil.exe" = "C:\\Windows\\System32\\certutil.exe"',
        "        CommandLine null = null",
        '      keywords: "urlcache", "[bold]x"',
        "  bbbbbbbbbbbb  (not stored or not visible)",
    ]
