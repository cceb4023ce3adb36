"""Property-based tests of the eslogger adapter: any value in any field of a real-shaped
eslogger line gives an event or an AdapterError with a reason - never another exception."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.adapters import AdapterError
from ingest.adapters.layouts import normalize
from schemas.events import Envelope
from tests.unit.fuzz_support import json_values

pytestmark = pytest.mark.fuzz

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eslogger"
LINES = [
    json.loads(line)
    for name in ("attack", "refused")
    for line in (FIXTURES / f"{name}.ndjson").read_text().splitlines()
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


@given(st.data())
def test_any_field_replaced_by_any_json(data: st.DataObject) -> None:
    obj = copy.deepcopy(data.draw(st.sampled_from(LINES)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(obj)))
        node = obj
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    raw = json.dumps(obj).encode()
    try:
        event = normalize(obj, raw, tenant_id="t", sensor_id=None, layout="eslogger")
    except AdapterError as exc:
        assert str(exc) and exc.reason
        return
    assert isinstance(event, Envelope) and event.event_id
