"""The shippers' Windows layouts, detected per record and normalized to schema events:
fixtures written from Elastic's Winlogbeat field docs and NXLog's im_msvistalog docs,
and the real OTRF recordings (Winlogbeat 6 and NXLog output)."""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.adapters import AdapterError, WindowsRecord
from ingest.adapters.layouts import (
    LAYOUTS,
    NXLOG_HEADER,
    UnknownLayout,
    detect_layout,
    normalize,
    record_origin,
    to_windows_record,
)
from ingest.adapters.otrf import record_from_line
from ingest.adapters.sigma_regression import record_from_document
from ingest.adapters.windows import parse_time
from tests.conftest import SHARED_DATA

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
OTRF = SHARED_DATA / "otrf"
SIGMA_RULES = SHARED_DATA / "sigma" / "rules"
SYSMON = "Microsoft-Windows-Sysmon/Operational"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def flattened(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A record as a shipper that flattens objects into dotted keys sends it."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, Mapping):
            out.update(flattened(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_every_fixture_is_detected_as_the_layout_its_name_says(path: Path) -> None:
    obj = json.loads(path.read_text())
    layout = next(name for name in LAYOUTS if path.stem.startswith(name + "_"))
    assert detect_layout(obj) == layout
    event = normalize(obj, path.read_bytes(), tenant_id="t1", sensor_id=None)
    assert event.tenant_id == "t1" and event.sensor_id == event.host.lower()


def test_ecs_sysmon_process_creation() -> None:
    record = to_windows_record(fixture("ecs_sysmon_process_creation"))
    assert (record.channel, record.event_code, record.computer) == (SYSMON, 1, "WS01.corp.example")
    assert record.provider == "Microsoft-Windows-Sysmon"
    assert record.time == datetime(2024, 3, 5, 10, 15, 22, 123000, tzinfo=UTC)
    assert record.data["CommandLine"] == "cmd.exe /c whoami /all"
    event = normalize(fixture("ecs_sysmon_process_creation"), b"", tenant_id="t", sensor_id="s1")
    assert event.event_type == "process_creation"  # type: ignore[attr-defined]
    assert event.Image == "C:\\Windows\\System32\\cmd.exe"  # type: ignore[attr-defined]
    assert event.sensor_id == "s1" and event.logsource.category == "process_creation"


def test_ecs_nested_and_dotted_keys_give_the_same_record() -> None:
    nested = fixture("ecs_sysmon_process_creation")
    assert to_windows_record(flattened(nested)) == to_windows_record(nested)
    half = {"@timestamp": nested["@timestamp"], "winlog": flattened(nested["winlog"])}
    half["winlog"]["computer_name"] = nested["winlog"]["computer_name"]
    assert to_windows_record(half) == to_windows_record(nested)


def test_ecs_flat_record_with_event_code_and_host_name() -> None:
    record = to_windows_record(fixture("ecs_flat_dotted_keys"))
    assert (record.event_code, record.computer) == (13, "ws02")
    assert record.data["TargetObject"].endswith("\\Run\\evil")
    assert record.data["EventType"] == "SetValue"


def test_ecs_user_data_fields_arrive() -> None:
    obj = fixture("ecs_security_1102_user_data")
    record = to_windows_record(obj)
    assert record.event_code == 1102 and record.provider == "Microsoft-Windows-Eventlog"
    assert dict(record.data) == {
        "SubjectUserSid": "S-1-5-21-1111111111-2222222222-3333333333-500",
        "SubjectUserName": "Administrator",
        "SubjectDomainName": "CORP",
        "SubjectLogonId": "0x3e7a1",
    }


def test_winlogbeat_legacy() -> None:
    record = to_windows_record(fixture("winlogbeat_legacy_sysmon"))
    assert (record.channel, record.event_code, record.computer) == (SYSMON, 13, "HR001.shire.com")
    assert record.data["Details"] == "DWORD (0x00000001)" and "level" not in record.data
    user_data = {
        "log_name": "Security",
        "event_id": 1102,
        "@timestamp": "2019-05-18T20:19:45Z",
        "user_data": {"xml_name": "LogFileCleared", "SubjectUserName": "bob"},
    }
    assert dict(to_windows_record(user_data).data) == {"SubjectUserName": "bob"}


def test_nxlog_drops_only_its_own_header() -> None:
    record = to_windows_record(fixture("nxlog_security_4688"))
    assert (record.channel, record.event_code) == ("Security", 4688)
    assert record.computer == "WS03.corp.example"
    # EventTime is local time without a zone: read as UTC when nothing better is there.
    assert record.time == datetime(2024, 3, 5, 10, 30, 11, tzinfo=UTC)
    data = dict(record.data)
    # Security's own fields, including ProcessId, are event data ...
    assert data["SubjectUserName"] == "WS03$" and data["ProcessId"] == "0x1b10"
    assert data["CommandLine"] == "whoami /priv"
    # ... NXLog's bookkeeping is not, and Keywords is the mask rules compare with.
    assert not set(data) & NXLOG_HEADER
    assert data["Keywords"] == "0x8020000000000000"  # audit success
    assert set(data) - set(fixture("nxlog_security_4688")) == set()
    assert data["EventType"] == "AUDIT_SUCCESS"  # kept: Sysmon's EventType shares the key


def test_nxlog_keeps_keys_that_event_data_shares() -> None:
    data = dict(to_windows_record(fixture("nxlog_system_7045")).data)
    assert data["AccountName"] == "LocalSystem"  # System 7045's service account
    assert data["ServiceName"] == "PSEXESVC" and data["ProcessID"] == 700
    assert "SourceModuleType" not in data and "Message" not in data


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "evtx_json_security_1102",
            {"SubjectUserName": "Administrator", "SubjectDomainName": "CORP"},
        ),
        (
            "evtx_json_wmi_client_failure",
            {"ClientProcessId": 7108, "ResultCode": "0x80041003", "User": "CORP\\alice"},
        ),
    ],
)
def test_evtx_json_user_data_fields_arrive(name: str, expected: dict[str, Any]) -> None:
    doc = fixture(name)
    for record in (to_windows_record(doc), record_from_document(doc)):
        assert expected.items() <= dict(record.data).items()
        assert not any(k.startswith("#") for k in record.data)
    event = normalize(doc, b"", tenant_id="t", sensor_id=None)
    assert expected.keys() <= event.extra.keys()


@pytest.mark.skipif(not SIGMA_RULES.is_dir(), reason=f"shared corpus absent: {SIGMA_RULES}")
def test_sigma_rules_on_user_data_events_fire() -> None:
    from detections.compiler.plan import load_plan
    from detections.engine.apply import match_events, rule_ids

    rules = [
        SIGMA_RULES / "windows/builtin/security/win_security_audit_log_cleared.yml",
        SIGMA_RULES / "windows/builtin/wmi/win_wmi_activity_nteventlogfile_cleareventlog.yml",
    ]
    plan = load_plan(rules)
    ids = rule_ids(plan)
    assert len(ids) == 2, plan.rejections
    docs = [
        fixture("evtx_json_security_1102"),
        fixture("evtx_json_wmi_client_failure"),
        fixture("ecs_security_1102_user_data"),
    ]
    events = [
        normalize(d, b"", tenant_id="t", sensor_id=None).model_dump(mode="json") for d in docs
    ]
    fired = {(e, ids[r]) for e, r in match_events(plan, events)}
    cleared, wmi = "d99b79d2-0a6f-4f46-ad8b-260b6e17f982", "d4f1a2b3-7c8e-4d5f-b6a9-1e0c2d3f4e5b"
    assert fired == {(0, cleared), (1, wmi), (2, cleared)}


def test_sigstream_events_are_detected_and_refused_by_normalize() -> None:
    assert detect_layout({"event_type": "process_creation"}) == "sigstream"
    with pytest.raises(AdapterError, match="schema path"):
        normalize({"event_type": "x"}, b"", tenant_id="t", sensor_id=None)


def test_unknown_layout_names_the_reason_and_a_sample_of_keys() -> None:
    obj = {f"key{i:02d}": i for i in range(40)} | {"x" * 300: 1, "bad\nkey": 2}
    with pytest.raises(UnknownLayout) as info:
        detect_layout(obj)
    message = str(info.value)
    assert message.startswith("unknown layout: no Windows channel/event id (keys: ")
    assert "key00, key01" in message and "... 22 more)" in message
    assert len(message) < 1200 and "\n" not in message
    assert info.value.reason == "unknown_layout" and AdapterError.reason == "adapter_invalid"
    with pytest.raises(UnknownLayout, match="not a JSON object"):
        detect_layout([1, 2])  # type: ignore[arg-type]
    with pytest.raises(UnknownLayout, match=r"keys: none"):
        normalize({}, b"{}", tenant_id="t", sensor_id=None)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"winlog": {"event_id": 1}}, "winlog.channel"),
        ({"winlog.channel": "Security", "@timestamp": "2024-01-01T00:00:00Z"}, "event.code"),
        ({"winlog": {"channel": "S", "event_id": "x1"}}, "invalid EventID"),
        ({"winlog": {"channel": "S", "event_id": 2**40}}, "out of range"),
        ({"Channel": "S", "EventID": -1}, "out of range"),
        ({"winlog": {"channel": "S", "event_id": 1, "event_data": [1]}}, "not an object"),
        ({"winlog": {"channel": "S", "event_id": 1}}, "timestamp"),
        ({"Channel": "S", "EventID": 1}, "timestamp"),
        ({"log_name": "S", "event_id": 1, "event_data": "x"}, "event_data is not an object"),
        ({"Event": {"System": {"EventID": 1}, "UserData": [1]}}, "UserData"),
    ],
)
def test_broken_records_of_a_known_layout_have_reasons(obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(AdapterError, match=reason) as info:
        to_windows_record(obj)
    assert not isinstance(info.value, UnknownLayout)


def test_an_explicit_layout_is_checked_against_the_record() -> None:
    with pytest.raises(AdapterError):
        to_windows_record(fixture("ecs_sysmon_process_creation"), "nxlog")
    with pytest.raises(AdapterError, match="layout name"):
        to_windows_record(fixture("nxlog_security_4688"), "syslog")


def test_record_origin_is_stable_and_tells_records_apart() -> None:
    obj = fixture("ecs_sysmon_process_creation")
    raw = json.dumps(obj).encode()
    origin = record_origin("ecs", obj, raw)
    assert origin == record_origin("ecs", json.loads(raw), b"other bytes, same record")
    assert origin.startswith("ecs:ws01.corp.example:microsoft-windows-sysmon/operational:884213:")
    other = json.loads(raw)
    other["winlog"]["record_id"] = "884214"
    assert record_origin("ecs", other, raw) != origin
    # a cleared log numbers from 1 again: the time keeps the ids apart
    later = json.loads(raw)
    later["@timestamp"] = "2025-01-01T00:00:00Z"
    assert record_origin("ecs", later, raw) != origin
    del other["winlog"]["record_id"]
    assert record_origin("ecs", other, b"abc").startswith("ecs:sha256:ba7816bf")
    first = normalize(obj, raw, tenant_id="t", sensor_id=None)
    again = normalize(json.loads(raw), raw, tenant_id="t", sensor_id=None)
    assert first.event_id == again.event_id


@pytest.mark.parametrize(
    "name",
    ["nxlog_security_4688", "winlogbeat_legacy_sysmon", "evtx_json_security_1102"],
)
def test_each_layout_has_a_record_id_origin(name: str) -> None:
    obj = fixture(name)
    origin = record_origin(detect_layout(obj), obj, b"")
    assert "sha256" not in origin and origin.count(":") >= 4


def test_normalize_stamps_the_receive_and_send_times() -> None:
    now = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)
    event = normalize(
        fixture("nxlog_system_7045"), b"", tenant_id="t", sensor_id=None, received_time=now
    )
    assert event.received_time == now and event.sent_time is None
    assert event.sensor_id == "ws03.corp.example" and event.Channel == "System"


# -- the real OTRF recordings --------------------------------------------------------------

#: The otrf adapter's header list before it moved here (commit 828aa44).
_OLD_NXLOG_HEADER = {
    "Channel",
    "EventID",
    "Hostname",
    "SourceName",
    "TimeCreated",
    "@timestamp",
    "Message",
    "EventTime",
    "EventReceivedTime",
    "host",
    "port",
    "@version",
    "tags",
}


def _old_record(obj: dict[str, Any]) -> WindowsRecord:
    """The otrf adapter's record before the layouts module (a frozen copy)."""
    if "log_name" in obj and "event_id" in obj:
        return WindowsRecord(
            channel=str(obj["log_name"]),
            event_code=int(obj["event_id"]),
            computer=str(obj.get("computer_name") or "unknown"),
            time=parse_time(obj.get("@timestamp")),
            provider=obj.get("source_name"),
            data=obj.get("event_data") or {},
        )
    return WindowsRecord(
        channel=str(obj["Channel"]),
        event_code=int(obj["EventID"]),
        computer=str(obj.get("Hostname") or "unknown"),
        time=parse_time(obj.get("TimeCreated") or obj.get("@timestamp")),
        provider=obj.get("SourceName"),
        data={k: v for k, v in obj.items() if k not in _OLD_NXLOG_HEADER},
    )


def _expected(obj: dict[str, Any], layout: str) -> WindowsRecord:
    """Today's record: the old one minus the NXLog bookkeeping it used to keep, with the
    keywords mask in hex and Winlogbeat's user_data merged in."""
    old = _old_record(obj)
    data = dict(old.data)
    if layout == "nxlog":
        data = {k: v for k, v in data.items() if k not in NXLOG_HEADER}
        if isinstance(data.get("Keywords"), int):
            data["Keywords"] = f"0x{data['Keywords'] & 0xFFFFFFFFFFFFFFFF:016x}"
    elif obj.get("user_data"):
        user = {k: v for k, v in obj["user_data"].items() if k != "xml_name"}
        data = {**user, **data}
    return WindowsRecord(old.channel, old.event_code, old.computer, old.time, old.provider, data)


def _otrf_lines(path: Path) -> Iterator[bytes]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".json") and not name.startswith("__MACOSX/"):
                    yield from archive.read(name).splitlines()
    else:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member) if member.isfile() else None
                if extracted and member.name.endswith(".json"):
                    yield from extracted.read().splitlines()


OTRF_SAMPLE = [
    "credential_access/host/empire_mimikatz_opth.tar.gz",  # winlogbeat 6
    "defense_evasion/host/empire_wdigest_downgrade.tar.gz",  # winlogbeat 6
    "credential_access/host/cmd_sam_copy_esentutl.zip",  # nxlog
    "persistence/host/covenant_persistwmi.tar.gz",  # nxlog, WMI
    "lateral_movement/host/covenant_sharpsc_create_dcerpc_smb_svcctl.zip",  # nxlog, 7045
]


@pytest.mark.skipif(not OTRF.is_dir(), reason=f"shared corpus absent: {OTRF}")
@pytest.mark.parametrize("name", OTRF_SAMPLE)
def test_every_otrf_record_gets_a_layout_and_its_old_record(name: str) -> None:
    seen: dict[str, int] = {}
    for line in _otrf_lines(OTRF / name):
        if not line.strip():
            continue
        obj = json.loads(line)
        layout = detect_layout(obj)
        seen[layout] = seen.get(layout, 0) + 1
        record = to_windows_record(obj)
        assert record == _expected(obj, layout), line[:300]
        assert record_from_line(obj) == record
        event = normalize(obj, line, tenant_id="t", sensor_id=None)
        assert event.event_id == normalize(obj, line, tenant_id="t", sensor_id=None).event_id
        assert event.EventID == record.event_code
    assert sum(seen.values()) > 100 and set(seen) <= {"nxlog", "winlogbeat_legacy"}


def test_replay_reads_ndjson_of_any_layout_per_line(tmp_path: Path) -> None:
    from ingest.sources import iter_items

    schema = normalize(fixture("nxlog_system_7045"), b"", tenant_id="default", sensor_id="s9")
    lines = [json.dumps(json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))]
    lines += [schema.model_dump_json(), '{"hello": "world"}', "{truncated", "[1]"]
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join(lines) + "\n\n")
    items = list(iter_items([path], tenant_id="acme"))
    events = [i.event for i in items if i.event is not None]
    assert len(events) == len(lines) - 3
    assert {e.tenant_id for e in events[:-1]} == {"acme"} and events[-1].sensor_id == "s9"
    reasons = [i.reason or "" for i in items if i.event is None]
    assert reasons[0].startswith("unknown layout: no Windows channel/event id (keys: hello)")
    assert "schema validation failed" in reasons[1] and "schema validation failed" in reasons[2]
