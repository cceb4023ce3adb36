"""The layouts adapter's shortcuts against what they replace: event ids spelled out
without the UUID object (``uuid.uuid5``), and a section's fields gathered with a C-speed
test for dotted keys (the key-by-key walk it skips)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.adapters import layouts
from ingest.adapters.layouts import _MISSING, _section, _walk
from ingest.adapters.windows import EVENT_ID_NAMESPACE, AdapterError, stable_event_id


@pytest.mark.parametrize("origin", ["", "ecs:ws01:security:1:2026", "é\u2028\x00" * 50])
def test_stable_event_id_is_uuid5(origin: str) -> None:
    assert stable_event_id(origin) == str(uuid.uuid5(EVENT_ID_NAMESPACE, origin))


@pytest.mark.fuzz
@given(st.text(max_size=200))
def test_stable_event_id_is_uuid5_for_any_text(origin: str) -> None:
    assert stable_event_id(origin) == str(uuid.uuid5(EVENT_ID_NAMESPACE, origin))


def reference_section(obj: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """``layouts._section`` before the shortcut: every key of every level looked at."""
    parts = dotted.split(".")
    out: dict[str, Any] = {}
    for cut in range(len(parts)):
        node = _walk(obj, parts[:cut])
        if not isinstance(node, Mapping):
            continue
        prefix = ".".join(parts[cut:]) + "."
        for key, value in node.items():
            if isinstance(key, str) and key.startswith(prefix) and len(key) > len(prefix):
                out[key[len(prefix) :]] = value
    nested = _walk(obj, parts)
    if nested is not _MISSING and nested is not None:
        if not isinstance(nested, Mapping):
            raise AdapterError(f"{dotted} is not an object")
        out.update(nested)
    return out


def outcome(fn: Any, obj: Any, dotted: str) -> Any:
    try:
        return ("ok", list(fn(obj, dotted).items()))
    except AdapterError as exc:
        return ("error", str(exc))


KEYS = st.sampled_from(
    ["winlog", "event_data", "user_data", "winlog.event_data", "event_data.Image",
     "winlog.event_data.Image", "winlog.user_data.X", "Image", "a.b", "x", 7]
)  # fmt: skip
LEAVES = st.one_of(st.none(), st.integers(), st.text(max_size=5))
TREES = st.recursive(LEAVES, lambda kids: st.dictionaries(KEYS, kids, max_size=5), max_leaves=12)


@pytest.mark.fuzz
@given(st.dictionaries(KEYS, TREES, max_size=6))
def test_section_gathers_what_the_key_by_key_walk_gathers(obj: dict[Any, Any]) -> None:
    for dotted in ("winlog.event_data", "winlog.user_data"):
        assert outcome(_section, obj, dotted) == outcome(reference_section, obj, dotted)


def test_section_with_dotted_and_nested_spellings() -> None:
    obj: dict[Any, Any] = {
        "winlog.event_data.A": 1,
        "winlog": {"event_data.B": 2, "event_data": {"C": 3}},
        5: "not a str key",
    }
    assert layouts._section(obj, "winlog.event_data") == {"A": 1, "B": 2, "C": 3}
    assert outcome(_section, obj, "winlog.event_data") == outcome(
        reference_section, obj, "winlog.event_data"
    )
