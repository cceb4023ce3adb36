"""The latency benchmark's pure helpers: what it sends and how it accounts for CPU."""

from __future__ import annotations

import json
import os
import time

import pytest

from bench.common import CpuMeter
from bench.latency import encode_phase, percentile


def test_encode_phase_gives_each_event_a_fresh_id_and_its_sensor_as_key() -> None:
    pool = [{"event_id": "a", "sensor_id": "s1"}, {"event_id": "b", "sensor_id": "s2"}]
    messages = encode_phase(pool, start=1, count=3, run_id="r")
    assert [(key, event_id) for key, event_id, _ in messages] == [
        ("s2", "b-r-1"),
        ("s1", "a-r-2"),
        ("s2", "b-r-3"),
    ]
    assert [json.loads(payload)["event_id"] for _, _, payload in messages] == [
        "b-r-1",
        "a-r-2",
        "b-r-3",
    ]
    assert pool[0]["event_id"] == "a"  # the pool is left as it was


def test_cpu_meter_charges_busy_work_to_this_process() -> None:
    # The expected share is what this process really got: on a loaded machine (CI beside
    # the services) a busy loop gets well under one core, so no fixed floor would hold.
    wall0, cpu0 = time.time(), time.process_time()
    meter = CpuMeter()
    meter.start()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    meter.stop()
    got = (time.process_time() - cpu0) / (time.time() - wall0)
    if not os.path.exists("/proc/stat"):  # not Linux: the meter reports nothing
        assert meter.cores == {}
        return
    assert meter.cores.get("this benchmark", 0.0) == pytest.approx(got, abs=0.15)
    assert meter.cores["this benchmark"] > 0.05
    assert 0.0 < meter.machine_busy <= 1.0
    assert "this benchmark" in meter.summary()


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0


# --- bench/latency.py: the correlation bursts and the live fleet ------------------------------


def test_burst_schedule_interleaves_bursts_and_ends_within_the_phase() -> None:
    from bench.latency import burst_schedule

    schedule = burst_schedule(duration=2.5, every=1.0, spread=0.25, size=5)
    assert [(t, b, k) for t, b, k in schedule if b == 0] == [
        (0.0, 0, 0),
        (0.25, 0, 1),
        (0.5, 0, 2),
        (0.75, 0, 3),
        (1.0, 0, 4),
    ]
    assert {b for _, b, _ in schedule} == {0, 1}  # burst 2 would end at 3.0 s
    assert [t for t, _, _ in schedule] == sorted(t for t, _, _ in schedule)
    assert burst_schedule(duration=10.0, every=0.0, spread=0.25) == []


def test_burst_events_complete_a_failed_logon_burst_on_their_own_host() -> None:
    from bench.latency import BURST_CORRELATION, Burst, burst_event
    from detections.correlation.feed import epoch_ms
    from detections.correlation.model import correlation_finding_id

    template = {"event_id": "x", "host": "pc", "sensor_id": "pc", "seq": 56, "EventID": 4625,
                "event_type": "windows_event", "extra": {"TargetUserName": "a"},
                "event_time": "2022-08-18T06:56:26.233000Z", "received_time": "x"}  # fmt: skip
    now = 1_796_511_377.7526
    events = [burst_event(template, "r1", 3, k, now + k) for k in range(5)]
    assert {e["host"] for e in events} == {e["sensor_id"] for e in events} == {events[0]["host"]}
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert len({e["event_id"] for e in events}) == 5
    assert events[0]["event_time"] == "2026-12-05T22:56:17.752Z"  # whole milliseconds
    assert "received_time" not in events[0] and template["seq"] == 56  # template untouched
    burst = Burst(events[0]["host"], first_time=events[0]["event_time"])
    assert burst.finding_id() == correlation_finding_id(
        BURST_CORRELATION, events[0]["host"], epoch_ms(events[0]["event_time"])
    )


def test_encode_phase_as_a_live_fleet_numbers_each_sensor_and_stamps_send_times() -> None:
    from datetime import datetime

    from bench.latency import Fleet, encode_phase

    old = "2019-01-01T00:00:00Z"
    pool = [
        {"event_id": "a", "sensor_id": "s1", "seq": 9, "event_time": old},
        {"event_id": "b", "sensor_id": "s2", "seq": 4, "event_time": old},
    ]
    fleet = Fleet()
    first = encode_phase(pool, 0, 3, "r", rate=10.0, fleet=fleet)
    second = encode_phase(pool, 3, 2, "r", rate=0.0, fleet=fleet)
    sent = [json.loads(payload) for _, _, payload in first + second]
    assert [(e["sensor_id"], e["seq"]) for e in sent] == [
        ("s1", 1), ("s2", 1), ("s1", 2), ("s2", 2), ("s1", 3)
    ]  # fmt: skip
    times = [datetime.fromisoformat(e["event_time"].replace("Z", "+00:00")) for e in sent[:3]]
    assert abs((times[2] - times[0]).total_seconds() - 0.2) < 0.002  # due 2 / 10 s later
    assert abs(times[0].timestamp() - time.time()) < 60
    assert pool[0]["seq"] == 9  # the pool is left as it was


# --- bench/throughput.py: reading what the job and Spark report --------------------------------


def test_parse_batch_lines_reads_the_detect_jobs_batch_log() -> None:
    from bench.throughput import parse_batch_lines

    log = (
        "22:55:38 INFO sigstream.detect: batch 0: 20000 events, 3 rejected to DLQ, 179 "
        "findings (178 new, 1 known) in 29.5s (prepare 0.64s, run 28.28s; tasks: 1.3s "
        "matching, 2.1s writing findings)\n"
        "22:55:40 WARN something else\n"
        "22:55:41 INFO sigstream.detect: batch 1: 5 events, 0 rejected to DLQ, 0 findings "
        "(0 new, 0 known) in 0.5s (prepare 0.01s, run 0.40s; tasks: 0.0s matching, 0.0s "
        "writing findings)\n"
    )
    batches = parse_batch_lines(log)
    assert [b["batch"] for b in batches] == [0, 1]
    assert batches[0]["events"] == 20000 and batches[0]["rejected"] == 3
    assert batches[0]["matches"] == 179 and batches[0]["known"] == 1
    assert (batches[0]["prepare"], batches[0]["run"]) == (0.64, 28.28)
    assert (batches[0]["match"], batches[0]["write"]) == (1.3, 2.1)


def test_summarize_queries_spans_sums_and_state_rows() -> None:
    from bench.throughput import progress_events, summarize_queries

    def event(name: str, batch: int, ts: str, rows: int, took: int, state: int = 0) -> str:
        progress = {
            "name": name,
            "batchId": batch,
            "timestamp": ts,
            "durationMs": {"triggerExecution": took, "addBatch": took - 100},
            "sources": [{"numInputRows": rows}],
            "stateOperators": [{"numRowsTotal": state}] if state else [],
        }
        return json.dumps(
            {"Event": "org.apache.spark.sql.streaming.StreamingQueryListener$QueryProgressEvent",
             "progress": progress}
        )  # fmt: skip

    lines = [
        json.dumps({"Event": "SparkListenerJobStart"}),
        event("sigstream-detect", 0, "2026-12-05T22:56:30.000Z", 200000, 20000),
        event("sigstream-detect", 1, "2026-12-05T22:56:50.000Z", 157337, 15000),
        event("sigstream-correlate", 0, "2026-12-05T22:57:06.000Z", 90, 2000, state=4),
    ]
    queries = summarize_queries(progress_events(lines))
    detect = queries["sigstream-detect"]
    assert (detect.batches, detect.input_rows) == (2, 357337)
    assert detect.span_s == 35.0 and detect.busy_s == 35.0
    assert detect.duration_ms["addBatch"] == 34800
    assert queries["sigstream-correlate"].state_rows == 4


def test_findings_split_ratio_and_per_run_names() -> None:
    from bench.throughput import derived_overrides, findings_split, throughput_ratio
    from common.settings import Settings

    split = findings_split({"correlation": 3, "host": 20, "process_access": 100, "total": 123})
    assert split == (100, 3, 20)
    assert throughput_ratio(45.0, 84.0) == 45.0 / 84.0
    env = derived_overrides(Settings(), "bench-x-default1")
    assert env["SIGSTREAM_MATCHES_TOPIC"] == "bench-x-default1.matches"
    assert env["SIGSTREAM_FINDINGS_INDEX"] == "bench-x-default1"
    assert env["SIGSTREAM_SENSORS_INDEX"] == "bench-x-default1-sensors"
    assert "SIGSTREAM_EVENTS_TOPIC" not in env and "SIGSTREAM_DLQ_TOPIC" not in env


def test_event_log_marks_reads_spark_and_query_starts() -> None:
    from bench.throughput import event_log_marks

    lines = [
        json.dumps({"Event": "SparkListenerApplicationStart", "Timestamp": 1796511376274}),
        json.dumps(
            {
                "Event": "org.apache.spark.sql.streaming.StreamingQueryListener$QueryStartedEvent",
                "name": "sigstream-detect",
                "timestamp": "2026-12-05T22:56:30.736Z",
            }
        ),
    ]
    marks = event_log_marks(lines)
    assert marks["spark"] == 1796511376.274
    assert abs(marks["sigstream-detect"] - 1796511390.736) < 1e-3
