"""Property-based tests of the adapters: any JSON a log export can hold becomes an event or
an AdapterError with a reason - never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ingest.adapters import AdapterError, to_event
from ingest.adapters.layouts import LAYOUTS, detect_layout, normalize
from ingest.adapters.otrf import record_from_line
from ingest.adapters.sigma_regression import record_from_document
from ingest.adapters.windows import parse_time
from schemas.events import Envelope
from tests.unit.fuzz_support import json_values

pytestmark = pytest.mark.fuzz

times = st.one_of(
    json_values,
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.just("2026-11-20 10:00:00.1234567890Z"),
)
codes = st.one_of(json_values, st.integers(0, 30), st.floats(), st.text(max_size=5))
channels = st.sampled_from(
    ["Microsoft-Windows-Sysmon/Operational", "Security", "Windows PowerShell", "", "x"]
)
data = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


def adapt(build: Any, obj: Any) -> None:
    try:
        record = build(obj)
        event = to_event(record, origin="fuzz#1")
    except AdapterError as exc:
        assert str(exc)
        return
    assert isinstance(event, Envelope) and event.event_id


@given(times)
@example(9.223372036854776e18)
@example("0001-01-01T00:00:00+05:00")
def test_parse_time(value: Any) -> None:
    try:
        parsed = parse_time(value)
    except AdapterError as exc:
        assert str(exc)
        return
    assert parsed.tzinfo is not None


@given(json_values)
def test_otrf_any_json(obj: Any) -> None:
    adapt(record_from_line, obj)


@given(channels, codes, times, data, st.sampled_from(["nxlog", "winlogbeat"]))
def test_otrf_layouts(channel: str, code: Any, when: Any, fields: dict[str, Any], how: str) -> None:
    if how == "nxlog":
        obj = {**fields, "Channel": channel, "EventID": code, "TimeCreated": when}
    else:
        obj = {"log_name": channel, "event_id": code, "@timestamp": when, "event_data": fields}
    adapt(record_from_line, obj)


@given(json_values)
@example({"Event": {"System": [1]}})
@example({"Event": {"System": {"EventID": 1, "TimeCreated": {"#attributes": True}}}})
@example({"Event": {"System": {"EventID": 1.5e300, "TimeCreated": {}}, "EventData": []}})
def test_sigma_regression_any_json(obj: Any) -> None:
    adapt(record_from_document, obj)


@given(channels, codes, times, st.one_of(data, json_values), json_values)
def test_sigma_regression_documents(
    channel: str, code: Any, when: Any, fields: Any, provider: Any
) -> None:
    doc = {
        "Event": {
            "System": {
                "Channel": channel,
                "EventID": code,
                "TimeCreated": {"#attributes": {"SystemTime": when}},
                "Provider": provider,
                "Computer": "WS01",
            },
            "EventData": fields,
        }
    }
    adapt(record_from_document, doc)


# -- the shippers' layouts (ingest.adapters.layouts) ---------------------------------------


def normalize_any(obj: Any) -> None:
    try:
        layout = detect_layout(obj)
    except AdapterError as exc:
        assert exc.reason == "unknown_layout" and str(exc)
        return
    assert layout in LAYOUTS
    try:
        event = normalize(obj, json.dumps(obj, default=str).encode(), tenant_id="t", sensor_id=None)
    except AdapterError as exc:
        assert str(exc) and exc.reason
        return
    assert isinstance(event, Envelope) and event.event_id and layout != "sigstream"


@given(json_values)
@example({"winlog": None})
@example({"winlog.channel": "S", "winlog": {"channel": 1}, "event.code": True})
@example({"Event": {"System": {}, "UserData": {"a": {"#attributes": 1, "b": [1]}}}})
def test_layouts_any_json(obj: Any) -> None:
    normalize_any(obj)


ecs_keys = st.sampled_from(
    [
        "winlog.channel",
        "winlog.event_id",
        "event.code",
        "winlog.computer_name",
        "host.name",
        "winlog.provider_name",
        "winlog.record_id",
        "@timestamp",
        "winlog.event_data.Image",
        "winlog.user_data.xml_name",
        "winlog.user_data",
        "winlog.event_data",
        "winlog",
        "winlog.event_data.CommandLine",
    ]
)
ecs_values = st.one_of(json_values, channels, times, codes)


def _nest(flat: dict[str, Any], depth: int) -> dict[str, Any]:
    """Nest the first ``depth`` dotted parts of every key (0: all flat)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        head, rest = parts[:depth], ".".join(parts[depth:])
        node = out
        for part in head[: len(parts) - 1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[rest or head[-1]] = value
    return out


@given(st.dictionaries(ecs_keys, ecs_values, max_size=10), st.integers(0, 3))
def test_ecs_records_nested_or_dotted(flat: dict[str, Any], depth: int) -> None:
    normalize_any(_nest(flat, depth))


@given(
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    st.sampled_from(["nxlog", "winlogbeat_legacy", "evtx_json"]),
    channels,
    codes,
    times,
)
def test_layouts_structured(
    fields: dict[str, Any], layout: str, channel: str, code: Any, when: Any
) -> None:
    if layout == "nxlog":
        obj: Any = {**fields, "Channel": channel, "EventID": code, "EventTime": when}
    elif layout == "winlogbeat_legacy":
        obj = {"log_name": channel, "event_id": code, "@timestamp": when, "user_data": fields}
    else:
        system = {
            "Channel": channel,
            "EventID": code,
            "TimeCreated": {"#attributes": {"SystemTime": when}},
        }
        obj = {"Event": {"System": system, "UserData": {"Template": fields}}}
    normalize_any(obj)
