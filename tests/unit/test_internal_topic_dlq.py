"""Malformed records of the internal topics (the correlation matches, the sensor
summaries) are refused on their own, to the DLQ with a reason and their original bytes:
the pure parts (reasons, the reserved key's pass-through, the DLQ record, the sinks'
publishing) without Spark."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from common.dlq import DLQ_ORIGIN_HEADER, DLQ_REASON_HEADER, DLQ_STAGE_HEADER
from detections.correlation import query as corr_query
from detections.correlation.clock import ClockConfig
from detections.correlation.feed import decode_record, record
from detections.correlation.query import (
    MALFORMED,
    OUTPUT,
    CorrelationConfig,
    CorrelationContent,
    CorrelationTotals,
    batch_writer,
    match_problem,
    state_function,
)
from detections.correlation.state import Match
from detections.health import query as health_query
from detections.health.state import HealthConfig, records_batch
from detections.health.summary import SensorSummaries
from detections.stream.derived import DerivedPublisher
from ingest.producer import DLQ_REASON_HEADER as INGEST_REASON_HEADER
from ingest.producer import describe_reject
from tests.e2e.harness import job_config
from tests.unit.test_sensor_health_summary import T0, hb, rec


class NoState:
    """A GroupState nobody may touch: the malformed keys keep no state."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"state.{name} used for a malformed key")


class FakeState:
    """Just enough of a GroupState for the health state function."""

    def __init__(self) -> None:
        self.value: tuple[str] | None = None
        self.hasTimedOut = False

    @property
    def exists(self) -> bool:
        return self.value is not None

    @property
    def get(self) -> tuple[str]:
        assert self.value is not None
        return self.value

    def update(self, value: tuple[str]) -> None:
        self.value = value

    def setTimeoutDuration(self, _ms: int) -> None:
        pass


class RecordingPublisher:
    """DerivedPublisher's interface, recording what it would send."""

    sent: dict[str, list[tuple[Any, ...]]]

    def __init__(self, *_args: Any, **_kw: Any) -> None:
        self.sent = {}
        RecordingPublisher.last = self

    def ensure_topics(self, *_args: Any) -> None:
        pass

    def publish(self, topic: str, records: Any) -> int:
        records = list(records)
        self.sent.setdefault(topic, []).extend(records)
        return len(records)


class FakeBatch:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def collect(self) -> list[Any]:
        return [_Row(r) for r in self.rows]


class _Row(dict):  # type: ignore[type-arg]
    def asDict(self) -> dict[str, Any]:
        return dict(self)


# --- the correlation stage -------------------------------------------------------------


def test_a_match_the_detect_job_writes_has_no_problem() -> None:
    _, value = record("c1", "h1", Match(1000, "r", "e1", "v", "h", "s", "t"))
    assert match_problem(json.loads(value)) is None
    assert decode_record(value)[:2] == ("c1", "h1")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "not a JSON object"),
        ("text", "not a JSON object"),
        ({"corr": "c1"}, "missing or invalid group_key"),
        (
            {"corr": "c", "group_key": "g", "rule": "r", "event_id": "e"},
            "missing or invalid time_ms",
        ),
        (
            {"corr": "c", "group_key": "g", "time_ms": "5", "rule": "r", "event_id": "e"},
            "missing or invalid time_ms",
        ),
        (
            {"corr": "c", "group_key": "g", "time_ms": True, "rule": "r", "event_id": "e"},
            "missing or invalid time_ms",
        ),
        ({"group_key": "g", "time_ms": 5, "rule": "r", "event_id": "e"}, "missing or invalid corr"),
        ({"corr": "c", "group_key": "g", "time_ms": 5, "event_id": "e"}, "missing or invalid rule"),
        ({"corr": "c", "group_key": "g", "time_ms": 5, "rule": "r"}, "missing or invalid event_id"),
        (
            {"corr": MALFORMED, "group_key": "g", "time_ms": 5, "rule": "r", "event_id": "e"},
            "reserved correlation id",
        ),
    ],
)
def test_a_malformed_match_gets_a_reason(value: Any, reason: str) -> None:
    assert match_problem(value) == f"correlation_match_invalid: {reason}"


def malformed_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "corr": [MALFORMED] * n,
            "tenant_id": [""] * n,
            "group_key": ["0:1"] * n,
            "time_ms": [0] * n,
            "rule": [""] * n,
            "event_id": [""] * n,
            "value": [None] * n,
            "host": [""] * n,
            "sensor_id": [""] * n,
            "reason": [f"correlation_match_invalid: not JSON {i}" for i in range(n)],
            "origin": [f"m:0:{i}" for i in range(n)],
            "raw_key": [None if i % 2 else b"k%d" % i for i in range(n)],
            "raw_value": [b"\xff garbage %d" % i for i in range(n)],
        }
    )


def test_the_reserved_key_passes_its_records_through_without_state() -> None:
    correlate = state_function((), ClockConfig(1000, None, 60_000))
    frames = iter([malformed_frame(2), malformed_frame(0), malformed_frame(1)])
    out = pd.concat(list(correlate((MALFORMED, "", "0:1"), frames, NoState())))
    assert list(out.columns) == OUTPUT.fieldNames()
    assert out["kind"].tolist() == ["rejected"] * 3
    assert out["origin"].tolist() == ["m:0:0", "m:0:1", "m:0:0"]
    assert out["raw_value"].tolist() == [b"\xff garbage 0", b"\xff garbage 1", b"\xff garbage 0"]
    assert out["raw_key"].tolist() == [b"k0", None, b"k0"]


def test_a_correlation_key_still_forgets_a_removed_correlation() -> None:
    class Removable(FakeState):
        removed = False

        def remove(self) -> None:
            self.removed = True

    state = Removable()
    state.value = ("{}",)
    correlate = state_function((), ClockConfig(1000, None, 60_000))
    assert list(correlate(("gone", "t", "g"), iter([]), state)) == []
    assert state.removed


def rejected_row(i: int) -> dict[str, Any]:
    return {
        "kind": "rejected",
        "corr": MALFORMED,
        "group_key": "0:1",
        "window_start": None,
        "window_end": None,
        "value": None,
        "watermark": None,
        "matches": None,
        "reason": "correlation_match_invalid: not JSON",
        "origin": f"test.matches:0:{i}",
        "raw_key": None,
        "raw_value": bytearray(b"garbage %d" % i),
    }


def test_the_correlation_sink_sends_rejected_rows_to_the_dlq_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corr_query, "DerivedPublisher", RecordingPublisher)
    cfg = job_config(tmp_path, "dlq-unit")
    totals = CorrelationTotals()
    seen: list[dict[str, Any]] = []
    handle = batch_writer(
        CorrelationContent(corr_query.plan_rules([])), cfg, CorrelationConfig(), totals, seen.append
    )
    handle(FakeBatch([rejected_row(0), rejected_row(7)]), 3)
    sent = RecordingPublisher.last.sent
    assert list(sent) == [cfg.dlq_topic]
    (k0, v0, h0), (_, v7, h7) = sent[cfg.dlq_topic]
    assert (k0, v0, v7) == (None, b"garbage 0", b"garbage 7")
    assert describe_reject(h0) == {
        "reason": "correlation_match_invalid: not JSON",
        "origin": "test.matches:0:0",
        "stage": "correlate",
    }
    assert dict(h7)[DLQ_ORIGIN_HEADER] == b"test.matches:0:7"
    assert totals.rejected == 2 and totals.firings == 0 and totals.batches == 1
    assert seen[0]["rejected"] == 2


def test_the_dlq_headers_are_the_ingest_sides() -> None:
    assert DLQ_REASON_HEADER == INGEST_REASON_HEADER == "sigstream.reason"
    assert (DLQ_ORIGIN_HEADER, DLQ_STAGE_HEADER) == ("sigstream.origin", "sigstream.stage")


# --- the derived publisher ---------------------------------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, **kw: Any) -> None:
        kw.pop("on_delivery")
        self.produced.append({"topic": topic, **kw})

    def flush(self, _timeout: float) -> int:
        return 0


def test_the_publisher_sends_headers_when_a_record_has_them() -> None:
    publisher = DerivedPublisher({})
    producer = FakeProducer()
    publisher._producer = producer
    headers = [("sigstream.reason", b"why")]
    assert publisher.publish("t", [(b"k", b"v"), (None, b"x", headers), (b"k2", None, [])]) == 3
    assert producer.produced == [
        {"topic": "t", "key": b"k", "value": b"v"},
        {"topic": "t", "key": None, "value": b"x", "headers": headers},
        {"topic": "t", "key": b"k2", "value": None},
    ]


# --- sensor health -------------------------------------------------------------------------


def summary_value() -> tuple[bytes, bytes]:
    s = SensorSummaries()
    s.add(records_batch([rec(0, T0), hb(1, T0 + 1)]))
    ((key, value),) = s.records()
    return key, value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"x" * 900_000, "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v": 1, "tenant": "t"}', "malformed summary: KeyError"),
        (b'{"v": 9}', "unsupported summary version 9"),
    ],
)
def test_a_record_that_is_not_a_summary_gets_a_reason(value: bytes | None, reason: str) -> None:
    summary, why = health_query.summary_problem(value)
    assert summary is None and why is not None
    assert why.startswith(f"sensor_summary_invalid: {reason}")


def test_a_summary_has_no_problem() -> None:
    _, value = summary_value()
    summary, why = health_query.summary_problem(value)
    assert why is None and summary is not None and summary.sensor


def summaries_frame(values: list[bytes | None], keys: list[bytes | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": [None if k is None else k.decode(errors="replace") for k in keys],
            "value": values,
            "partition": [1] * len(values),
            "offset": list(range(10, 10 + len(values))),
            "topic": ["test.summaries"] * len(values),
            "raw_key": keys,
            "bucket": [5] * len(values),
        }
    )


def test_the_health_state_function_rejects_a_bad_record_and_observes_the_rest() -> None:
    key, value = summary_value()
    update = health_query.state_function(HealthConfig(), clock=lambda: T0 + 5)
    frame = summaries_frame([b"not json", value, b'{"v":1}'], [b"\xffk", key, None])
    state = FakeState()
    (out,) = list(update((5,), iter([frame]), state))
    assert list(out.columns) == health_query.OUTPUT_SCHEMA.names
    rejected = out[out["target"] == "rejected"]
    assert rejected["doc_id"].tolist() == ["test.summaries:1:10", "test.summaries:1:12"]
    assert rejected["raw_value"].tolist() == [b"not json", b'{"v":1}']
    assert rejected["raw_key"].tolist() == [b"\xffk", None]
    assert [k.split(":")[0] for k in rejected["kind"]] == ["sensor_summary_invalid"] * 2
    assert (out["target"] == "sensor").sum() == 1  # the valid summary still observed
    assert state.exists and json.loads(state.get[0])
    records = [health_query.dlq_record(r) for _, r in rejected.iterrows()]
    assert records[0][:2] == (b"\xffk", b"not json")
    assert describe_reject(records[0][2])["stage"] == "sensor-health"
    assert describe_reject(records[1][2])["origin"] == "test.summaries:1:12"


def frames_of(*frames: pd.DataFrame) -> Iterator[pd.DataFrame]:
    return iter(frames)


def test_by_sensor_without_a_sink_for_rejects_still_skips_them() -> None:
    key, value = summary_value()
    got = health_query._by_sensor(frames_of(summaries_frame([b"{", value], [None, key])))
    assert sum(len(v) for v in got.values()) == 1
