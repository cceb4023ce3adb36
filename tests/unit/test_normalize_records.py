"""The normalizing stage's per-record rule, without Spark or Kafka: raw-topic records of
every layout become schema events with the gateway's key and headers, and anything else
a DLQ record with its reason, origin, stage and original bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detections.normalize.records import Output, RawLimits, format_of, normalize_record
from schemas.events import parse_event
from tests.unit.fuzz_support import json_values

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
NOW = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)


def run(value: bytes | None, topic: str = "telemetry.raw.auto", **kw: Any) -> Output:
    args: dict[str, Any] = {
        "topic": topic,
        "partition": 1,
        "offset": 42,
        "tenant": None,
        "default_tenant": "fallback",
        "events_topic": "ev",
        "dlq_topic": "dlq",
        "received_time": NOW,
    }
    return normalize_record(value, b"k", **(args | kw))


def headers(out: Output) -> dict[str, str]:
    return {k: v.decode() for k, v in out.headers}


def raw(name: str) -> bytes:
    return json.dumps(json.loads((FIXTURES / f"{name}.json").read_text())).encode()


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_every_layout_becomes_an_event_on_auto(path: Path) -> None:
    out = run(raw(path.stem), tenant="acme")
    assert not out.rejected and out.topic == "ev", headers(out)
    event = parse_event(out.value)
    assert out.key == event.sensor_id.encode() and event.tenant_id == "acme"
    assert headers(out) == {"sigstream.tenant": "acme", "sigstream.event_id": event.event_id}
    assert event.received_time == NOW


def test_the_topic_names_the_format() -> None:
    assert format_of("telemetry.raw.nxlog") == "nxlog"
    assert not run(raw("nxlog_security_4688"), "telemetry.raw.nxlog").rejected
    wrong = run(raw("nxlog_security_4688"), "telemetry.raw.ecs")
    assert wrong.rejected and "winlog.channel" in headers(wrong)["sigstream.reason"]
    unknown = run(raw("nxlog_security_4688"), "telemetry.raw.syslog")
    assert headers(unknown)["sigstream.reason"].startswith("unknown_format: raw topic")


def test_default_tenant_and_the_header_wins_over_the_payload() -> None:
    assert parse_event(run(raw("winlogbeat_legacy_sysmon")).value).tenant_id == "fallback"
    payload = json.loads(raw("ecs_flat_dotted_keys"))
    payload["tenant_id"] = "evil"  # a field of a foreign layout: ignored
    out = run(json.dumps(payload).encode(), tenant="acme")
    assert parse_event(out.value).tenant_id == "acme"


def test_schema_events_are_validated_as_at_the_gateway() -> None:
    event = parse_event(run(raw("nxlog_system_7045")).value)
    line = event.model_dump_json(exclude={"tenant_id"}).encode()
    ok = run(line, "telemetry.raw.sigstream", tenant="acme")
    assert not ok.rejected and parse_event(ok.value).tenant_id == "acme"
    assert parse_event(ok.value).event_id == event.event_id
    claimed = event.model_copy(update={"tenant_id": "other"}).model_dump_json().encode()
    bad = run(claimed, tenant="acme")
    assert bad.rejected and headers(bad)["sigstream.reason"].startswith("tenant_mismatch")


def test_a_reread_gives_the_same_event_ids() -> None:
    for name in ("ecs_sysmon_process_creation", "nxlog_security_4688", "evtx_json_security_1102"):
        first, again = run(raw(name)), run(raw(name), offset=99, received_time=None)
        assert headers(first)["sigstream.event_id"] == headers(again)["sigstream.event_id"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"hello": "world"}', "unknown layout: no Windows channel/event id (keys: hello)"),
        (b"{truncated", "invalid_json: "),
        (b"\xff\xfe", "invalid_utf8: "),
        (b"[1, 2]", "not_an_object: "),
        (b'{"Channel": "S", "EventID": 1, "x": NaN}', "number_out_of_range: "),
        (b'{"Channel": "S", "EventID": 1, "x": "\\ud800"}', "invalid_unicode: "),
        (b'{"a":' * 20 + b"1" + b"}" * 20, "too_deep: "),
        (b"", "empty_record: "),
        (None, "empty_record: "),
        (b'{"Channel": "S", "EventID": 1}', "adapter_invalid: missing or empty timestamp"),
        (b"x" * 2000, "record_too_large: "),
    ],
)
def test_rejects_carry_reason_origin_stage_and_bytes(value: bytes | None, reason: str) -> None:
    out = run(value, limits=RawLimits(max_record_bytes=1000))
    assert out.rejected and out.topic == "dlq" and out.key == b"k" and out.value == (value or b"")
    h = headers(out)
    assert h["sigstream.reason"].startswith(reason), h
    assert h["sigstream.origin"] == "telemetry.raw.auto:1:42"
    assert h["sigstream.stage"] == "normalize" and h["sigstream.tenant"] == "fallback"
    assert len(h["sigstream.reason"]) <= 500


@given(json_values)
def test_any_json_is_an_event_or_a_reject(obj: Any) -> None:
    out = run(json.dumps(obj).encode())
    assert out.topic == ("dlq" if out.rejected else "ev")
    if not out.rejected:
        parse_event(out.value)


@given(st.binary(max_size=200))
def test_any_bytes_are_an_event_or_a_reject(value: bytes) -> None:
    assert run(value).rejected


def test_the_stage_is_a_streaming_stage_built_from_the_settings() -> None:
    from common.settings import Settings
    from detections.normalize.stage import NormalizeStage
    from detections.stream.stage import StreamingStage

    settings = Settings(raw_default_tenant="acme", raw_max_record_bytes=4096)
    stage = NormalizeStage.of(settings)
    assert isinstance(stage, StreamingStage) and stage.upstream
    assert (stage.pattern, stage.default_tenant) == (r"telemetry\.raw\..+", "acme")
    assert stage.limits == RawLimits(max_record_bytes=4096)
