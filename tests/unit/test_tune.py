"""Verdict feedback, the pure parts: the filter proposal from false/true positives, the
rule's next version, the engine check, and the fp-rate aggregation's rows."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import yaml
from sigma.types import SigmaString

from detections.content.workflow.tune import (
    NotSeparable,
    TuneError,
    engine_check,
    propose,
    sigma_escape,
    tuned_rule_yaml,
)
from schemas.findings import Resolution
from triage import workflow
from triage.auth import Caller
from triage.store import fp_rate_query, fp_rate_rows

RULE = r"""title: Shell spawned by anything
id: 11111111-2222-3333-4444-555555555555
status: test
date: 2026-01-01
modified: 2026-02-01
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '.exe'
    filter_main:
        Image|endswith: '\svchost.exe'
    condition: selection and not 1 of filter_*
level: medium
"""
RULE_ID = "11111111-2222-3333-4444-555555555555"


def ev(n: int, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": f"e{n}",
        "host": "WS01",
        "event_type": "process_creation",
        "tenant_id": "t",
        "sensor_id": "s",
        "event_time": "2026-03-01T00:00:00Z",
        "logsource": {"product": "windows", "category": "process_creation"},
        "User": "CORP\\bob",
    }
    return {**base, **fields}


BUILD = r"C:\BuildAgent\bin\agent.exe"


def test_exact_filter_for_one_parent() -> None:
    fps = [ev(i, Image=r"C:\Windows\System32\cmd.exe", ParentImage=BUILD) for i in range(5)]
    tps = [ev(9, Image=r"C:\Windows\System32\cmd.exe", ParentImage=r"C:\Office\WINWORD.EXE")]
    p = propose(fps, tps)
    assert yaml.safe_load(p.filter_yaml()) == {"filter_tune_1": {"ParentImage": BUILD}}
    assert [s.covers for s in p.selections] == [5]


def test_two_clusters_become_one_selection_with_two_values() -> None:
    other = r"C:\Program Files\Backup\bk.exe"
    fps = [ev(1, Image="x.exe", ParentImage=BUILD), ev(2, Image="x.exe", ParentImage=other)]
    tps = [ev(3, Image="x.exe", ParentImage=r"C:\Windows\explorer.exe")]
    p = propose(fps, tps)
    assert yaml.safe_load(p.filter_yaml()) == {"filter_tune_1": {"ParentImage": [BUILD, other]}}


def test_command_line_prefix_when_the_images_are_shared() -> None:
    image = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    fps = [
        ev(
            i,
            Image=image,
            ParentImage="p.exe",
            User="u",
            CommandLine=f"powershell.exe -File C:\\ops\\inv.ps1 -Day {i}",
        )
        for i in range(3)
    ]
    tps = [
        ev(
            9,
            Image=image,
            ParentImage="p.exe",
            User="u",
            CommandLine="powershell.exe -enc SQBFAFgA",
        )
    ]
    p = propose(fps, tps)
    assert yaml.safe_load(p.filter_yaml()) == {
        "filter_tune_1": {"CommandLine|startswith": "powershell.exe -File C:\\ops\\inv.ps1 "}
    }


def test_a_line_of_a_multiline_text() -> None:
    """PowerShell's ContextInfo: the Host Application line, never a version or id line."""

    def ctx(host_app: str, version: str) -> str:
        return (
            "        Severity = Informational\r\n        Host Name = Default Host\r\n"
            f"        Host Version = {version}\r\n        Host ID = 0c1f\r\n"
            f"        Host Application = {host_app}\r\n        Engine Version = {version}\r\n"
        )

    wmi = r"C:\windows\system32\wbem\wmiprvse.exe"
    fps = [ev(i, event_type="ps_module", ContextInfo=ctx(wmi, "5.1.17763")) for i in range(3)]
    tps = [ev(9, event_type="ps_module", ContextInfo=ctx(r"C:\windows\notepad.exe", "5.1.18362"))]
    p = propose(fps, tps)
    assert yaml.safe_load(p.filter_yaml()) == {
        "filter_tune_1": {"ContextInfo|contains": f"Host Application = {wmi}"}
    }


def test_two_fields_together_when_neither_alone_separates() -> None:
    fps = [ev(1, Image="a.exe", User="CORP\\svc")]
    tps = [ev(2, Image="a.exe", User="CORP\\bob"), ev(3, Image="b.exe", User="CORP\\svc")]
    p = propose(fps, tps, fields=["Image", "User"])
    assert yaml.safe_load(p.filter_yaml()) == {
        "filter_tune_1": {"Image": "a.exe", "User": "CORP\\svc"}
    }


def test_refuses_when_not_separable_and_says_why() -> None:
    same = {"Image": "a.exe", "ParentImage": "p.exe", "CommandLine": "a.exe /x"}
    with pytest.raises(NotSeparable, match="not separable") as info:
        propose([ev(1, **same)], [ev(2, **same)])
    assert "e1" in str(info.value) and "also true positive e2" in str(info.value)


def test_refuses_without_false_positives() -> None:
    with pytest.raises(NotSeparable, match="no false positives"):
        propose([], [ev(1, Image="a.exe")])


def test_bounded_values_no_huge_lists() -> None:
    fps = [ev(i, Image=f"tool{i}.exe", ParentImage=f"parent{i}.exe") for i in range(20)]
    with pytest.raises(NotSeparable, match="more than --max-values 5"):
        propose(fps, [ev(99, Image="evil.exe")], max_values=5)


def test_values_over_the_character_bound_are_not_used() -> None:
    long_parent = "C:\\" + "x" * 300 + ".exe"
    fps = [ev(1, Image="a.exe", ParentImage=long_parent, User="svc")]
    p = propose(fps, [ev(2, Image="a.exe", ParentImage="q.exe")], max_chars=200)
    assert all(len(v) <= 200 for s in p.selections for _, _, vals in s.items for v in vals)
    assert yaml.safe_load(p.filter_yaml()) == {"filter_tune_1": {"User": "svc"}}


@pytest.mark.parametrize(
    "value",
    [r"C:\Windows\x.exe", r"C:\tools\a*b.exe", "what?", "C:\\dir\\", r"a\*b", "a\\\\b", r"\\?\C:"],
)
def test_escape_round_trips_through_pysigma(value: str) -> None:
    parsed = SigmaString(sigma_escape(value))
    assert not parsed.contains_special()
    assert "".join(parsed.s) == value  # type: ignore[arg-type]


def test_escaped_wildcards_match_literally_in_the_engine() -> None:
    """Unescaped, ``a*b`` would be a wildcard and remove the true positive ``aXYb``."""
    fp = ev(1, Image=r"C:\tools\a*b.exe", ParentImage=r"C:\x\p?.exe")
    tp = ev(2, Image=r"C:\tools\aXYb.exe", ParentImage=r"C:\x\pq.exe")
    p = propose([fp], [tp], fields=["Image"])
    tuned = tuned_rule_yaml(RULE, p)
    assert r"a\*b" in tuned
    check = engine_check(RULE, tuned, RULE_ID, [fp], [tp])
    assert (check.fp_before, check.fp_after, check.tp_before, check.tp_after) == (1, 0, 1, 1)
    assert check.ok


def test_tuned_rule_is_a_new_version_of_the_same_rule() -> None:
    fps = [ev(1, Image="x.exe", ParentImage=BUILD)]
    p = propose(fps, [ev(2, Image="x.exe", ParentImage="y.exe")])
    text = tuned_rule_yaml(RULE, p, today=date(2026, 12, 6), comment="tuned: 1 FP")
    assert text.startswith("# tuned: 1 FP\n")
    doc = yaml.safe_load(text)
    assert doc["id"] == RULE_ID and doc["title"] == "Shell spawned by anything"
    assert doc["modified"] == date(2026, 12, 6) and doc["date"] == date(2026, 1, 1)
    det = doc["detection"]
    assert det["condition"] == "(selection and not 1 of filter_*) and not 1 of filter_tune_*"
    assert det["filter_tune_1"] == {"ParentImage": BUILD}
    assert det["filter_main"] == {"Image|endswith": "\\svchost.exe"}
    # tuning the tuned rule adds filter_tune_2 and keeps the condition
    p2 = propose([ev(3, Image="z.exe", ParentImage="other.exe")], [])
    again = yaml.safe_load(tuned_rule_yaml(text, p2))
    assert again["detection"]["condition"] == det["condition"]
    assert again["detection"]["filter_tune_1"] == det["filter_tune_1"]
    assert "filter_tune_2" in again["detection"]
    check = engine_check(
        RULE,
        tuned_rule_yaml(text, p2),
        RULE_ID,
        [*fps, ev(3, Image="z.exe", ParentImage="other.exe")],
        [ev(2, Image="x.exe", ParentImage="y.exe")],
    )
    assert check.fp_after == 0 and check.tp_after == 1


def test_only_single_rule_files() -> None:
    p = propose([ev(1, Image="x.exe")], [])
    with pytest.raises(TuneError, match="exactly one"):
        tuned_rule_yaml(RULE + "---\n" + RULE, p)


def test_resolutions_are_the_schema_dispositions() -> None:
    assert workflow.RESOLUTIONS == ("true_positive", "benign", "false_positive")
    assert set(workflow.RESOLUTIONS) == set(Resolution.__args__)  # type: ignore[attr-defined]


def _bucket(key: str, tp: int, benign: int, fp: int, **extra: Any) -> dict[str, Any]:
    res = [
        {"key": k, "doc_count": n, "matches": {"value": n * 10}}
        for k, n in (("true_positive", tp), ("benign", benign), ("false_positive", fp))
        if n
    ]
    return {"key": key, "doc_count": tp + benign + fp, "resolution": {"buckets": res}, **extra}


def test_fp_rate_rows_per_rule_and_host() -> None:
    resp = {
        "aggregations": {
            "rules": {
                "buckets": [
                    _bucket(
                        "r1",
                        1,
                        1,
                        2,
                        name={"buckets": [{"key": "Rule one"}]},
                        hosts={"buckets": [_bucket("WS1", 1, 0, 0), _bucket("DC1", 0, 1, 2)]},
                    ),
                    _bucket(
                        "r2",
                        0,
                        0,
                        3,
                        name={"buckets": [{"key": "Rule two"}]},
                        hosts={"buckets": [_bucket("WS1", 0, 0, 3)]},
                    ),
                ]
            }
        }
    }
    rows = fp_rate_rows(resp)
    assert [r["rule_id"] for r in rows] == ["r2", "r1"]  # highest fp rate first
    r1 = rows[1]
    assert (r1["closed"], r1["true_positive"], r1["benign"], r1["false_positive"]) == (4, 1, 1, 2)
    assert r1["fp_rate"] == 0.5 and r1["noise_rate"] == 0.75
    assert r1["matches"] == {"true_positive": 10, "benign": 10, "false_positive": 20}
    assert [(h["host"], h["fp_rate"]) for h in r1["hosts"]] == [("DC1", 0.6667), ("WS1", 0.0)]


def test_fp_rate_query_is_tenant_scoped_and_closed_only() -> None:
    body = fp_rate_query(Caller("alice", "analyst", "acme"), rule="r1", top=100_000)
    filters = body["query"]["bool"]["filter"]
    assert {"term": {"sigstream.tenant_id": "acme"}} in filters
    assert {"term": {"sigstream.finding.status": "closed"}} in filters
    assert body["aggs"]["rules"]["terms"]["size"] == 500  # bounded
