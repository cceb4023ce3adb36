"""Why it matched: the selections, fields and values the engine reports for each match,
computed from the predicate results it matched with (detections.engine.why)."""

from __future__ import annotations

from typing import Any

import pytest

from detections.compiler import compile_yaml
from detections.compiler.plan import plan_rules
from detections.engine.apply import compile_matcher, explain_events
from detections.engine.why import truncate
from tests.conftest import SHARED_DATA

BASE = {
    "event_id": "e1",
    "event_time": "2024-05-01T10:00:00Z",
    "host": "WS01",
    "sensor_id": "s1",
    "logsource": {"product": "windows"},
}


def rule(detection: str, category: str = "process_creation") -> str:
    return f"""
title: why test
id: 5d0c1a6e-2f3b-4c5d-8e9f-0a1b2c3d4e5f
status: test
logsource: {{category: {category}, product: windows}}
detection:
{detection}
"""


def why(
    detection: str, *events: dict[str, Any], category: str = "process_creation"
) -> list[tuple[int, dict[str, Any]]]:
    """(event position, match details) of every match of the one rule."""
    rules, rejected = compile_yaml(rule(detection, category))
    assert not rejected, rejected
    plan = plan_rules(rules)
    typed = [
        {**BASE, "event_type": category, "event_id": f"e{i}", **event}
        for i, event in enumerate(events)
    ]
    return [(row, details) for row, _, details in explain_events(plan, typed)]


def field(name: str, modifier: str, pattern: str | None, value: str | None) -> dict[str, Any]:
    return {"field": name, "modifier": modifier, "pattern": pattern, "value": value}


ONE_OF = """
  selection_img:
    Image|endswith: '\\powershell.exe'
  selection_cli:
    CommandLine|contains: ' -enc '
  filter_main:
    ParentImage|endswith: '\\explorer.exe'
    User: SYSTEM
  condition: 1 of selection_* and not filter_main
"""


def test_one_of_reports_only_the_selections_that_held_and_never_the_filter() -> None:
    event = {
        "Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\PowerShell.EXE",
        "CommandLine": "powershell -nop",
        # half of the filter holds: the filter is false, the event matches
        "ParentImage": "C:\\Windows\\explorer.exe",
        "User": "alice",
    }
    assert why(ONE_OF, event) == [
        (
            0,
            {
                "selections": [
                    {
                        "name": "selection_img",
                        "fields": [
                            field(
                                "Image",
                                "endswith",
                                "\\powershell.exe",
                                "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\PowerShell.EXE",
                            )
                        ],
                    }
                ],
                "keywords": [],
            },
        )
    ]


def test_one_of_reports_every_selection_that_held_in_condition_order() -> None:
    event = {"Image": "C:\\x\\powershell.exe", "CommandLine": "powershell -w 1 -enc AAAA"}
    [(_, details)] = why(ONE_OF, event)
    assert [s["name"] for s in details["selections"]] == ["selection_img", "selection_cli"]
    assert details["selections"][1]["fields"] == [
        field("CommandLine", "contains", " -enc ", "powershell -w 1 -enc AAAA")
    ]


def test_a_filter_that_holds_suppresses_the_match() -> None:
    event = {
        "Image": "C:\\x\\powershell.exe",
        "ParentImage": "C:\\Windows\\explorer.exe",
        "User": "SYSTEM",
    }
    assert why(ONE_OF, event) == []


def test_all_of_lists_each_selection_with_its_fields() -> None:
    detection = """
  selection_parent:
    ParentImage|endswith:
      - '\\winword.exe'
      - '\\excel.exe'
  selection_child:
    Image|endswith: '\\cmd.exe'
  condition: all of selection_*
"""
    event = {"ParentImage": "C:\\Office\\EXCEL.EXE", "Image": "C:\\Windows\\cmd.exe"}
    [(_, details)] = why(detection, event)
    assert details == {
        "selections": [
            {
                # only the listed value that matched, not winword
                "name": "selection_parent",
                "fields": [
                    field("ParentImage", "endswith", "\\excel.exe", "C:\\Office\\EXCEL.EXE")
                ],
            },
            {
                "name": "selection_child",
                "fields": [field("Image", "endswith", "\\cmd.exe", "C:\\Windows\\cmd.exe")],
            },
        ],
        "keywords": [],
    }


def test_contains_all_reports_every_value() -> None:
    detection = """
  selection:
    CommandLine|contains|all:
      - 'sekurlsa'
      - 'logonpasswords'
  condition: selection
"""
    cli = "mimikatz.exe sekurlsa::LogonPasswords exit"
    assert why(detection, {"CommandLine": cli}) == [
        (
            0,
            {
                "selections": [
                    {
                        "name": "selection",
                        "fields": [
                            field("CommandLine", "contains|all", "sekurlsa", cli),
                            field("CommandLine", "contains|all", "logonpasswords", cli),
                        ],
                    }
                ],
                "keywords": [],
            },
        )
    ]


def test_keywords_report_the_keyword_that_matched() -> None:
    detection = """
  keywords:
    - 'mimikatz'
    - 'rubeus'
    - 'sekurlsa*'
  condition: keywords
"""
    events = [{"CommandLine": "Invoke-Mimikatz -DumpCreds"}, {"CommandLine": "notepad"}]
    assert why(detection, *events) == [(0, {"selections": [], "keywords": ["mimikatz"]})]


def test_keywords_beside_fields() -> None:
    detection = """
  selection:
    Image|endswith: '\\rundll32.exe'
  keywords:
    - 'comsvcs'
  condition: selection and keywords
"""
    event = {"Image": "C:\\rundll32.exe", "CommandLine": "rundll32 comsvcs.dll MiniDump"}
    [(_, details)] = why(detection, event)
    assert details == {
        "selections": [
            {
                "name": "selection",
                "fields": [field("Image", "endswith", "\\rundll32.exe", "C:\\rundll32.exe")],
            }
        ],
        "keywords": ["comsvcs"],
    }


def test_regex_reports_the_pattern_as_written() -> None:
    detection = """
  selection:
    CommandLine|re: '(?i)-e(nc|ncodedcommand)?\\s+[A-Za-z0-9+/=]{8,}'
  condition: selection
"""
    cli = "powershell -EncodedCommand SQBFAFgAIAAoAE4AZQB3AA=="
    [(_, details)] = why(detection, {"CommandLine": cli}, {"CommandLine": "powershell -nop"})
    assert details["selections"] == [
        {
            "name": "selection",
            "fields": [
                field("CommandLine", "re", "(?i)-e(nc|ncodedcommand)?\\s+[A-Za-z0-9+/=]{8,}", cli)
            ],
        }
    ]


def test_cidr_reports_the_network_and_the_address() -> None:
    detection = """
  selection:
    DestinationIp|cidr:
      - '10.0.0.0/8'
      - '192.168.0.0/16'
    DestinationPort: 445
  condition: selection
"""
    events = [
        {"DestinationIp": "192.168.4.20", "DestinationPort": 445},
        {"DestinationIp": "8.8.8.8", "DestinationPort": 445},
    ]
    assert why(detection, *events, category="network_connection") == [
        (
            0,
            {
                "selections": [
                    {
                        "name": "selection",
                        "fields": [
                            field("DestinationIp", "cidr", "192.168.0.0/16", "192.168.4.20"),
                            field("DestinationPort", "", "445", "445"),
                        ],
                    }
                ],
                "keywords": [],
            },
        )
    ]


def test_windash_reports_the_value_as_written_and_the_dash_the_event_used() -> None:
    detection = """
  selection:
    Image|endswith: '\\certutil.exe'
    CommandLine|windash|contains: ' -urlcache '
  condition: selection
"""
    cli = "certutil /urlcache /f http://x/a.exe a.exe"
    [(_, details)] = why(detection, {"Image": "C:\\certutil.exe", "CommandLine": cli})
    assert details["selections"][0]["fields"] == [
        field("Image", "endswith", "\\certutil.exe", "C:\\certutil.exe"),
        field("CommandLine", "windash|contains", " -urlcache ", cli),
    ]


def test_null_check_reports_the_missing_field() -> None:
    detection = """
  selection:
    Image|endswith: '\\rundll32.exe'
    CommandLine: null
  condition: selection
"""
    events = [{"Image": "C:\\rundll32.exe"}, {"Image": "C:\\rundll32.exe", "CommandLine": "x"}]
    assert why(detection, *events) == [
        (
            0,
            {
                "selections": [
                    {
                        "name": "selection",
                        "fields": [
                            field("Image", "endswith", "\\rundll32.exe", "C:\\rundll32.exe"),
                            field("CommandLine", "", None, None),
                        ],
                    }
                ],
                "keywords": [],
            },
        )
    ]


def test_each_row_gets_its_own_values() -> None:
    detection = """
  selection:
    Image|endswith:
      - '\\psexec.exe'
      - '\\paexec.exe'
  condition: selection
"""
    events = [{"Image": "C:\\a\\PsExec.exe"}, {"Image": "C:\\b"}, {"Image": "D:\\paexec.exe"}]
    got = [(row, d["selections"][0]["fields"]) for row, d in why(detection, *events)]
    assert got == [
        (0, [field("Image", "endswith", "\\psexec.exe", "C:\\a\\PsExec.exe")]),
        (2, [field("Image", "endswith", "\\paexec.exe", "D:\\paexec.exe")]),
    ]


def test_long_values_are_cut_to_one_kib() -> None:
    detection = """
  selection:
    CommandLine|contains: 'frombase64string'
  condition: selection
"""
    cli = "powershell [Convert]::FromBase64String('" + "é" * 3000 + "')"
    [(_, details)] = why(detection, {"CommandLine": cli})
    value = details["selections"][0]["fields"][0]["value"]
    assert len(value.encode()) <= 1024 and cli.startswith(value) and len(value) > 500
    assert truncate("short") == "short" and truncate(None) is None


def test_without_explanations_the_engine_says_nothing_extra() -> None:
    rules, _ = compile_yaml(rule(ONE_OF))
    plan = plan_rules(rules)
    matcher = compile_matcher(plan)
    assert matcher.explains is False
    explained = compile_matcher(plan, explained=True)
    event = {**BASE, "event_type": "process_creation", "Image": "C:\\powershell.exe"}
    assert explain_events(plan, [event], explained)[0][2]["selections"][0]["name"] == (
        "selection_img"
    )


def test_falsepositives_reach_the_rule_info() -> None:
    text = rule(ONE_OF) + "falsepositives:\n  - Admin scripts\n  - Unknown\n"
    rules, _ = compile_yaml(text)
    assert rules[0].falsepositives == ("Admin scripts", "Unknown")
    assert plan_rules(rules).rule_infos()[0].falsepositives == ["Admin scripts", "Unknown"]
    assert type(rules[0]).from_dict(rules[0].to_dict()) == rules[0]


@pytest.mark.skipif(
    not (SHARED_DATA / "sigma-regression").is_dir(),
    reason=f"shared corpus not found at {SHARED_DATA / 'sigma-regression'}",
)
def test_every_regression_match_is_explained() -> None:
    """Every match of the SigmaHQ rules on the regression events names a selection or a
    keyword, and every reported value really is the event's value of that field."""
    import yaml

    from common.settings import get_settings
    from detections.compiler.plan import load_plan
    from ingest.sources import iter_items
    from sigstream.cli import default_rule_paths

    plan = load_plan(default_rule_paths(get_settings()))
    events = [
        item.event.model_dump(mode="json", exclude_none=True)
        for info in sorted((SHARED_DATA / "sigma-regression").rglob("info.yml"))
        if yaml.safe_load(info.read_text())
        for item in iter_items([info.parent])
        if item.event is not None
    ]
    found = explain_events(plan, events)
    assert len(found) > 113
    for row, _, details in found:
        assert details["selections"] or details["keywords"]
        event = {**events[row], **events[row].get("extra", {})}
        for selection in details["selections"]:
            for entry in selection["fields"]:
                if entry["value"] is not None:
                    assert truncate(str(event[entry["field"]])) == entry["value"]
