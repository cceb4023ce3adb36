"""Property-based tests of the rule loader (compile_yaml + plan_rules): whatever the YAML,
loading never raises, and every rule is either compiled or rejected with a reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from detections.compiler import compile_yaml
from detections.compiler.plan import plan_rules
from tests.unit.fuzz_support import json_values

pytestmark = pytest.mark.fuzz

BASE: dict[str, Any] = {
    "title": "Fuzzed rule",
    "id": "5f0b2f4e-1a7c-4b5e-9d7e-0c1f2e3d4a5b",
    "status": "test",
    "logsource": {"product": "windows", "category": "process_creation"},
    "detection": {
        "selection": {"Image|endswith": "\\cmd.exe", "CommandLine|contains": ["/c", "/k"]},
        "filter": {"ParentImage": "C:\\Windows\\explorer.exe"},
        "condition": "selection and not filter",
    },
    "level": "high",
}
MODIFIERS = [
    "contains", "startswith", "endswith", "all", "re", "base64", "base64offset", "windash",
    "cidr", "expand", "i", "m", "s", "wide", "gt", "lt", "exists", "fieldref", "bogus", "",
]  # fmt: skip
CONDITIONS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "selection",
            "1 of selection*",
            "all of them",
            "selection and (",
            "not",
            "filter | count() > 5",
        ]
    ),
)


def check(text: str) -> None:
    rules, rejections = compile_yaml(text)
    for r in rejections:
        assert r.reason and r.message
    plan = plan_rules(rules, rejections)
    assert len(plan.rules) + len(plan.rejections) >= len(rules)
    for r in plan.rejections:
        assert r.reason


@given(st.text(max_size=400))
@example("detection: &a [*a]")
@example("a: " + "[" * 500)
@example("%YAML 9.9\n---\n")
def test_arbitrary_text(text: str) -> None:
    check(text)


@given(st.sampled_from(sorted(BASE)), json_values)
def test_a_top_level_key_replaced_by_anything(key: str, value: Any) -> None:
    doc = copy.deepcopy(BASE)
    doc[key] = value
    check(yaml.safe_dump(doc))


@given(
    st.text(max_size=20),
    st.lists(st.sampled_from(MODIFIERS), max_size=3),
    st.one_of(json_values, st.text(max_size=200)),
    CONDITIONS,
)
def test_random_selections_modifiers_and_conditions(
    field: str, modifiers: list[str], value: Any, condition: str
) -> None:
    doc = copy.deepcopy(BASE)
    doc["detection"]["selection"] = {"|".join([field, *modifiers]): value}
    doc["detection"]["condition"] = condition
    check(yaml.safe_dump(doc))


@given(st.integers(1, 3000))
def test_deep_nesting(depth: int) -> None:
    check("detection:\n  selection: " + "[" * depth + "]" * depth + "\n  condition: selection\n")
