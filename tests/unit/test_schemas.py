"""The contract and everything generated from it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    Auditd,
    LinuxLog,
    Logsource,
    ProcessCreation,
    WindowsEvent,
    parse_event,
)
from schemas.findings import Finding, attack_from_tags, finding_id
from schemas.generate import (
    es_event_mappings,
    es_mappings,
    event_columns,
    event_json_schema,
)

BASE = {
    "sensor_id": "s-1",
    "host": "WS01",
    "event_id": "e-1",
    "event_time": "2026-01-02T03:04:05.123456Z",
}


def test_parse_routes_by_event_type() -> None:
    event = parse_event({**BASE, "event_type": "process_creation", "Image": "C:\\a.exe"})
    assert isinstance(event, ProcessCreation)
    assert event.Image == "C:\\a.exe"
    assert event.event_time == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def test_numbers_become_strings_for_sigma_fields() -> None:
    event = parse_event({**BASE, "event_type": "process_creation", "ProcessId": 4460})
    assert event.ProcessId == "4460"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        {"event_type": "no_such_type"},
        {"event_type": "process_creation", "sensor_id": ""},
        {"event_type": "process_creation", "schema_version": 2},
        {"event_type": "process_creation", "NotAField": "x"},
        {"event_type": "process_creation", "event_time": "yesterday"},
        {"event_type": "process_creation", "seq": -1},
    ],
)
def test_invalid_events_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_event({**BASE, **change})


def test_generic_windows_event_keeps_fields_in_extra() -> None:
    event = parse_event({**BASE, "event_type": "windows_event", "extra": {"TargetUserName": "bob"}})
    assert isinstance(event, WindowsEvent)
    assert event.extra == {"TargetUserName": "bob"}


def test_linux_events_default_to_their_logsource() -> None:
    record = parse_event(
        {**BASE, "event_type": "auditd", "type": "EXECVE", "a0": "id", "extra": {"a10": "x"}}
    )
    assert isinstance(record, Auditd)
    assert (record.logsource.product, record.logsource.service) == ("linux", "auditd")
    assert record.type == "EXECVE" and record.extra == {"a10": "x"}
    line = parse_event({**BASE, "event_type": "linux_log", "message": "session opened"})
    assert isinstance(line, LinuxLog)
    assert (line.logsource.product, line.logsource.service) == ("linux", None)
    linux_proc = parse_event(
        {**BASE, "event_type": "process_creation", "logsource": {"product": "linux"}}
    )
    assert isinstance(linux_proc, ProcessCreation) and linux_proc.logsource.product == "linux"
    partial = parse_event({**BASE, "event_type": "auditd", "logsource": {"service": "auditd"}})
    assert partial.logsource.product == "linux"  # its own product, not Windows'
    assert parse_event(
        {**BASE, "event_type": "process_creation", "logsource": {"category": "process_creation"}}
    ).logsource == Logsource(product="windows", category="process_creation")
    with pytest.raises(ValidationError):  # undeclared auditd keys belong in extra
        parse_event({**BASE, "event_type": "auditd", "inode": "12"})


def test_auditd_field_names_differing_only_in_case_are_distinct_columns() -> None:
    """auditd's ``syscall`` (number) and ``SYSCALL`` (name), and ``type`` beside WMI's
    ``Type``: the job's Spark session is case sensitive, the mappings are too."""
    columns = event_columns()
    assert {"syscall", "SYSCALL", "type", "Type", "name", "Name", "message"} <= set(columns)
    events = es_event_mappings()["properties"]
    assert events["SYSCALL"]["type"] == events["message"]["type"] == "keyword"


def test_no_event_field_shadows_a_column_of_the_jobs_rows() -> None:
    """The job's flat rows put Kafka's columns beside the event's: an event field named
    like one (auditd's ``key``) would make every query on them ambiguous."""
    pytest.importorskip("pyspark")
    from detections.stream.parse import KAFKA_COLUMNS

    assert not set(event_columns()) & {*KAFKA_COLUMNS, "reject_reason", "rule_index"}


def test_union_schema_has_one_type_per_field() -> None:
    columns = event_columns()
    assert columns["Image"] is str and columns["seq"] is int and columns["EventID"] is int
    # every field of every model is a column
    for model in EVENT_MODELS:
        assert set(model.model_fields) <= set(columns)


def test_spark_schema_is_generated_from_the_models() -> None:
    pytest.importorskip("pyspark")
    from pyspark.sql import types as T

    from schemas.generate import spark_event_schema

    schema = spark_event_schema()
    assert [f.name for f in schema.fields] == list(event_columns())
    assert schema["event_time"].dataType == T.TimestampType()
    assert schema["extra"].dataType == T.MapType(T.StringType(), T.StringType(), True)
    assert isinstance(schema["logsource"].dataType, T.StructType)


def test_es_mappings_follow_the_models() -> None:
    findings = es_mappings(Finding)
    assert findings["dynamic"] == "strict"
    props = findings["properties"]
    assert props["@timestamp"] == {"type": "date"}
    assert props["rule"]["properties"]["id"]["type"] == "keyword"
    assert props["sigstream"]["properties"]["event"] == {"type": "object", "enabled": False}
    events = es_event_mappings()["properties"]
    assert events["CommandLine"]["type"] == "keyword"
    assert events["event_time"] == {"type": "date"}


def test_json_schema_lists_every_event_type() -> None:
    schema = event_json_schema()
    text = str(schema)
    for event_type in EVENT_TYPES:
        assert event_type in text


def test_finding_id_is_deterministic_and_distinct() -> None:
    assert finding_id("r1", "t", "s", "e1") == finding_id("r1", "t", "s", "e1")
    assert finding_id("r1", "t", "s", "e1") != finding_id("r1", "t", "s", "e2")
    assert finding_id("r1", "t", "s", "e1") != finding_id("r2", "t", "s", "e1")


def test_finding_id_is_per_tenant_and_sensor() -> None:
    """Event ids are chosen by sensors: another tenant's or sensor's reuse of an id must
    not make a different event's finding a duplicate."""
    ids = {
        finding_id("r1", tenant, sensor, "e1")
        for tenant in ("acme", "globex")
        for sensor in ("ws01", "ws02")
    }
    assert len(ids) == 4
    assert finding_id("r1", "a\x1fb", "c", "e") != finding_id("r1", "a", "b\x1fc", "e")


def test_attack_tags_split_into_techniques_and_tactics() -> None:
    threat = attack_from_tags(["attack.execution", "attack.t1059.001", "attack.g0016", "cve.2021"])
    assert threat.technique.id == ["T1059.001"]
    assert threat.tactic.name == ["execution"]
