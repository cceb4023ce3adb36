"""Logsource routing, plan building and finding documents (pure, no Spark)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from detections.compiler import compile_yaml
from detections.compiler.logsources import UncoveredLogsource, route_for
from detections.compiler.plan import plan_rules
from detections.sinks.finding_docs import build_finding, finding_document
from schemas.findings import RuleInfo, finding_id

RULE = """
title: Test Rule
id: 11111111-1111-1111-1111-111111111111
status: test
level: high
tags: [attack.execution, attack.t1059]
logsource: {{category: {category}, product: windows}}
detection:
  sel: {{Image|endswith: '\\cmd.exe'}}
  condition: sel
"""


def test_registry_event_spans_all_registry_types() -> None:
    route = route_for("registry_event", "windows", None)
    assert route.event_types == (
        "registry_add",
        "registry_delete",
        "registry_set",
        "registry_rename",
    )


def test_uncovered_logsources_are_refused() -> None:
    with pytest.raises(UncoveredLogsource):
        route_for("process_creation", "zeek", None)
    with pytest.raises(UncoveredLogsource, match="not collected for product 'linux'"):
        route_for("registry_set", "linux", None)
    with pytest.raises(UncoveredLogsource, match="not collected for product 'macos'"):
        route_for("network_connection", "macos", None)
    with pytest.raises(UncoveredLogsource):
        route_for("file_access", "windows", None)
    with pytest.raises(UncoveredLogsource):
        route_for("windows_event", "windows", None)  # a service log, never a category
    assert route_for(None, "windows", "security").service == "security"


def test_plan_routes_rules_and_rejects_duplicates_and_uncovered() -> None:
    rules, rejections = compile_yaml(RULE.format(category="process_creation"))
    assert not rejections
    dup = rules[0]
    linux, _ = compile_yaml(
        RULE.format(category="file_access").replace("1111-1111-1111", "2222-2222-2222")
    )
    plan = plan_rules([rules[0], dup, *linux])
    assert [p.rule.id for p in plan.rules] == [rules[0].id]
    assert sorted(r.reason for r in plan.rejections) == ["duplicate_id", "logsource_not_covered"]
    assert len(plan.routes) == 1
    assert plan.version == plan_rules([rules[0]]).version


def test_finding_document_is_ecs_and_deterministic() -> None:
    rule = RuleInfo(id="r-1", name="Test", level="high", tags=["attack.execution", "attack.t1059"])
    event = {
        "event_type": "process_creation",
        "event_id": "e-1",
        "host": "WS01",
        "sensor_id": "ws01",
        "tenant_id": "acme",
        "event_time": "2026-01-02T03:04:05.000001+00:00",
        "Image": "C:\\cmd.exe",
        "CommandLine": "cmd /c whoami",
        "ParentImage": "C:\\word.exe",
        "extra": {},
        "Hashes": None,
    }
    doc_id, body = finding_document(build_finding(rule, event, datetime(2026, 1, 2, tzinfo=UTC)))
    assert doc_id == finding_id("r-1", "acme", "ws01", "e-1")
    assert body["@timestamp"].startswith("2026-01-02T03:04:05.000001")
    assert body["rule"]["id"] == "r-1" and body["rule"]["level"] == "high"
    assert body["threat"]["technique"]["id"] == ["T1059"]
    assert body["host"]["name"] == "WS01"
    assert body["process"]["command_line"] == "cmd /c whoami"
    assert body["process"]["parent"]["executable"] == "C:\\word.exe"
    assert body["sigstream"]["tenant_id"] == "acme"
    assert body["sigstream"]["finding"]["status"] == "open"
    assert "Hashes" not in body["sigstream"]["event"]


def test_rules_naming_fields_the_schema_lacks_are_rejected_unless_allowed() -> None:
    text = RULE.format(category="file_event").replace("Image|endswith", "CommandLine|contains")
    rules, _ = compile_yaml(text)
    plan = plan_rules(rules)
    assert not plan.rules
    assert [r.reason for r in plan.rejections] == ["unknown_field"]
    assert "CommandLine" in plan.rejections[0].message
    assert len(plan_rules(rules, allow_unknown_fields=True).rules) == 1
    # service logs keep every field in `extra`: any name is fine
    service = text.replace(
        "category: file_event, product: windows", "product: windows, service: security"
    )
    assert len(plan_rules(compile_yaml(service)[0]).rules) == 1
