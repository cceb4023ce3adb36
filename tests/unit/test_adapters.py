"""Adapters from real Windows log formats to the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.adapters import AdapterError
from ingest.adapters.otrf import record_from_line
from ingest.adapters.sigma_regression import iter_json_documents, record_from_document
from ingest.adapters.windows import event_type_for, parse_time, to_event
from ingest.sources import iter_items
from tests.conftest import shared_path

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def _regression_doc(event_id: int, data: dict[str, object], channel: str = SYSMON) -> dict:
    return {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}},
                "EventID": event_id,
                "TimeCreated": {"#attributes": {"SystemTime": "2025-11-27T07:40:10.165324Z"}},
                "Channel": channel,
                "Computer": "WS01.corp",
            },
            "EventData": data,
        }
    }


def test_regression_document_becomes_typed_event() -> None:
    doc = _regression_doc(1, {"Image": "C:\\x.exe", "ProcessId": 42, "RuleName": "-"})
    event = to_event(record_from_document(doc), origin="t#0")
    assert event.event_type == "process_creation"
    assert event.Image == "C:\\x.exe"  # type: ignore[attr-defined]
    assert event.ProcessId == "42"  # type: ignore[attr-defined]
    assert event.extra == {"RuleName": "-"}  # undeclared fields are kept, not dropped
    assert event.logsource.service == "sysmon" and event.logsource.category == "process_creation"
    assert event.sensor_id == "ws01.corp" and event.host == "WS01.corp"


def test_event_ids_are_stable_across_replays() -> None:
    doc = _regression_doc(1, {"Image": "a"})
    first = to_event(record_from_document(doc), origin="file#0")
    again = to_event(record_from_document(doc), origin="file#0")
    other = to_event(record_from_document(doc), origin="file#1")
    assert first.event_id == again.event_id != other.event_id


@pytest.mark.parametrize(
    ("channel", "code", "data", "expected"),
    [
        (SYSMON, 12, {"EventType": "CreateKey"}, "registry_add"),
        (SYSMON, 12, {"EventType": "DeleteKey"}, "registry_delete"),
        (SYSMON, 13, {}, "registry_set"),
        (SYSMON, 16, {}, "windows_event"),
        ("Microsoft-Windows-PowerShell/Operational", 4104, {}, "ps_script"),
        ("Security", 4688, {}, "windows_event"),
    ],
)
def test_event_type_mapping(channel: str, code: int, data: dict, expected: str) -> None:
    assert event_type_for(channel, code, data) == expected


def test_service_logs_get_sigma_service_names() -> None:
    doc = _regression_doc(4648, {"TargetUserName": "bob"}, channel="Security")
    event = to_event(record_from_document(doc), origin="t")
    assert event.event_type == "windows_event"
    assert event.logsource.service == "security" and event.logsource.category is None
    assert event.extra["TargetUserName"] == "bob"


def test_field_names_with_spaces_take_sigma_spelling() -> None:
    channel = "Microsoft-Windows-Windows Defender/Operational"
    doc = _regression_doc(1119, {"Threat Name": "EICAR", "Source Name": "RTP"}, channel=channel)
    event = to_event(record_from_document(doc), origin="t")
    assert event.logsource.service == "windefend"
    assert event.extra == {"ThreatName": "EICAR", "SourceName": "RTP"}


def test_concatenated_json_documents_are_all_read() -> None:
    assert [d["a"] for d in iter_json_documents('{"a": 1}\n{"a": 2}{"a":3}')] == [1, 2, 3]


def test_otrf_nxlog_and_winlogbeat_layouts() -> None:
    nxlog = record_from_line(
        {
            "Channel": SYSMON,
            "EventID": 1,
            "Hostname": "H",
            "TimeCreated": "2020-01-01T00:00:00Z",
            "Image": "x",
            "EventTime": "2020-01-01 00:00:00",
            "port": 1,
        }
    )
    assert nxlog.event_code == 1 and dict(nxlog.data) == {"Image": "x"}
    beat = record_from_line(
        {
            "log_name": SYSMON,
            "event_id": 13,
            "computer_name": "H2",
            "@timestamp": "2019-05-18T20:19:45.778Z",
            "event_data": {"TargetObject": "HKLM\\x"},
        }
    )
    assert beat.computer == "H2" and beat.data["TargetObject"] == "HKLM\\x"


@pytest.mark.parametrize("bad", [[1, 2], {"foo": 1}, {"Channel": "x", "EventID": "abc"}])
def test_otrf_rejects_have_reasons(bad: object) -> None:
    with pytest.raises(AdapterError) as info:
        record_from_line(bad)
    assert str(info.value)


def test_parse_time_spellings() -> None:
    assert parse_time("2020-09-04 07:06:09.681").isoformat() == "2020-09-04T07:06:09.681000+00:00"
    assert parse_time("2025-11-27T07:40:10.1653249Z").microsecond == 165324
    with pytest.raises(AdapterError):
        parse_time("")


def test_malformed_lines_become_rejects_with_reason(tmp_path: Path) -> None:
    good = to_event(record_from_document(_regression_doc(1, {"Image": "a"})), origin="o")
    path = tmp_path / "events.jsonl"
    path.write_text(
        good.model_dump_json() + "\n{truncated\n" + json.dumps({"event_type": "x"}) + "\n"
    )
    items = list(iter_items([path]))
    assert [i.event is not None for i in items] == [True, False, False]
    assert all(i.reason for i in items[1:])
    assert items[1].raw == b"{truncated"


def test_every_regression_case_adapts() -> None:
    root = shared_path("sigma-regression")
    items = list(iter_items([root]))
    assert len(items) >= 113
    assert [i.reason for i in items if i.event is None] == []
    # sequence numbers count each sensor's events from zero, in order
    per_sensor: dict[str, list[int]] = {}
    for item in items:
        assert item.event is not None
        per_sensor.setdefault(item.event.sensor_id, []).append(item.event.seq or 0)
    assert all(seqs == list(range(len(seqs))) for seqs in per_sensor.values())
