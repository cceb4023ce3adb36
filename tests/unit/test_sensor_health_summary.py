"""Per-sensor summaries of the detection pass (``detections.health.summary``) and the
health state machine observing them (``observe_summary``): the vectorized summarizer
agrees with the record-by-record reference, observing summaries finds what observing
records found (the pre-summary state machine, ``legacy_health``), redelivered summaries
change nothing, the bound holds, and a late spool upload is not clock skew."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, replace

import numpy as np
import pyarrow as pa
import pytest

from detections.health.state import (
    HealthConfig,
    Observation,
    Record,
    SensorState,
    expire,
    observe,
    observe_summary,
    records_batch,
    summarize_records,
)
from detections.health.summary import (
    SUMMARY_FIELDS,
    SUMMARY_VERSION,
    SensorSummaries,
    Summary,
    SummaryError,
    decode,
    sensor_key,
)
from tests.unit import legacy_health

CFG = HealthConfig(default_interval_s=10, silence_multiplier=3, skew_threshold_s=60, gap_grace_s=5)
T0 = 1_800_000_000.0


def rec(seq: int | None, t: float, received: float | None = None, **kw: object) -> Record:
    kw.setdefault("sent_time", t)
    return Record(
        event_id=f"e{seq}-{t}",
        event_time=t,
        received=t if received is None else received,
        seq=seq,
        host="WS01",
        **kw,  # type: ignore[arg-type]
    )


def hb(seq: int, t: float, received: float | None = None, **kw: object) -> Record:
    return rec(seq, t, received, heartbeat=True, interval_s=20.0, agent_version="a/1", **kw)


def summary_of(records: list[Record], **kw: object) -> Summary:
    s = SensorSummaries(**kw)  # type: ignore[arg-type]
    s.add(records_batch(records))
    (one,) = s.summaries()
    return one


def random_stream(rng: random.Random, n: int) -> list[Record]:
    """A sensor misbehaving every way: runs, jumps, late and duplicate records, resets,
    heartbeats, records without seq, a wrong clock now and then."""
    out: list[Record] = []
    seq, us = rng.randrange(0, 50), int(T0 * 1e6)
    for _ in range(n):
        us += rng.randrange(1, 10**6)
        t = us / 1e6  # whole microseconds, as Arrow timestamps carry them
        roll = rng.random()
        if roll < 0.05:
            seq += rng.randrange(2, 9)  # a jump
        elif roll < 0.10 and seq > 3:
            late = seq - rng.randrange(1, 4)  # late or duplicate, older event time
            out.append(rec(late, t - 50, received=t))
            continue
        elif roll < 0.12:
            seq = rng.randrange(0, 3)  # reset
        elif roll < 0.14:
            out.append(rec(None, t))
            continue
        skew = 500.0 if rng.random() < 0.05 else 0.0
        if rng.random() < 0.08:
            out.append(hb(seq, t + skew, received=t, sent_time=None, events_sent=len(out)))
        else:
            out.append(rec(seq, t, received=t, sent_time=t + skew))
        seq += 1
    return out


# -- the summarizer -------------------------------------------------------------------


def test_summary_runs_follow_arrival_order() -> None:
    records = [rec(s, T0 + i) for i, s in enumerate([5, 6, 7, 3, 4, 8, 0, 1, 7])]
    s = summary_of(records)
    assert [r[:2] for r in s.runs] == [(5, 7), (3, 4), (8, 8), (0, 1), (7, 7)]
    assert s.runs[0][2:] == (T0, T0 + 2, "e5-1800000000.0")
    assert (s.records, s.events, s.heartbeats, s.unsequenced) == (9, 9, 0, 0)
    assert s.event_time == (T0, T0 + 8) and s.received == (T0, T0 + 8)
    assert s.last == ("e7-1800000008.0", T0 + 8, T0 + 8) and s.host == "WS01"


def test_a_batch_without_any_seq_is_summarized() -> None:
    """Shippers and replays send no sequence numbers: a batch of only those is counted,
    with no runs (an empty run list once crashed the detect task)."""
    s = summary_of([rec(None, T0 + i) for i in range(3)])
    assert s.runs == [] or list(s.runs) == []
    assert (s.records, s.events, s.unsequenced) == (3, 3, 3)


def test_heartbeats_keep_their_fields_and_the_clock_samples() -> None:
    records = [
        rec(0, T0, sent_time=None),  # no clock sample: an event without sent_time
        hb(1, T0 + 600, received=T0 + 1, sent_time=None, events_sent=10, events_dropped=2),
        rec(2, T0 + 2, sent_time=T0 + 2.5),
        rec(None, T0 + 3),
    ]
    s = summary_of(records)
    assert (s.records, s.events, s.heartbeats, s.unsequenced) == (4, 3, 1, 1)
    assert s.clock == (3, 0.0, 599.0, 0.0)  # the heartbeat's event time is its send time
    (h,) = s.hb
    assert h["event_time"] == T0 + 600 and h["sent_time"] is None and h["received"] == T0 + 1
    assert (h["expected_interval_s"], h["agent_version"]) == (20.0, "a/1")
    assert (h["events_sent"], h["events_dropped"], h["events_spooled"]) == (10, 2, None)


@pytest.mark.parametrize("seed", range(8))
def test_vectorized_summary_equals_the_record_by_record_reference(seed: int) -> None:
    rng = random.Random(seed)
    records = random_stream(rng, 400)
    summaries = SensorSummaries(max_runs=10_000, max_heartbeats=10_000)
    cut = sorted(rng.sample(range(1, len(records)), 5))  # several Arrow batches
    for a, b in zip([0, *cut], [*cut, len(records)], strict=True):
        summaries.add(records_batch(records[a:b]))
    (vectorized,) = summaries.summaries()
    assert vectorized.to_json() == summarize_records(records).to_json()


def test_sensors_and_partitions_get_their_own_summary_keyed_by_tenant_and_sensor() -> None:
    a = records_batch([rec(0, T0), rec(1, T0 + 1)], tenant="t1", sensor="ws01")
    b = records_batch([rec(7, T0), rec(8, T0 + 1)], tenant="t2", sensor="ws01")
    c = records_batch([rec(2, T0 + 2)], tenant="t1", sensor="ws01")
    batch = pa.concat_tables([pa.Table.from_batches([x]) for x in (a, b, c)])
    n = batch.num_rows
    batch = batch.append_column("topic", pa.array(["ev"] * n)).append_column(
        "partition", pa.array([0, 0, 1, 1, 0], pa.int32())
    )
    batch = batch.append_column("offset", pa.array([10, 11, 4, 5, 12], pa.int64()))
    summaries = SensorSummaries()
    summaries.add(batch.combine_chunks().to_batches()[0])
    records = dict((k, json.loads(v)) for k, v in summaries.records())
    assert set(records) == {sensor_key("t1", "ws01"), sensor_key("t2", "ws01")}
    assert records[b"t1\x1fws01"]["runs"] == [[0, 2, T0, T0 + 2, "e0-1800000000.0"]]
    assert records[b"t1\x1fws01"]["src"] == ["ev", 0, 10, 12]
    assert records[b"t2\x1fws01"]["src"] == ["ev", 1, 4, 5]
    assert all(v["v"] == SUMMARY_VERSION for v in records.values())


def test_received_falls_back_to_the_kafka_timestamp_then_to_now() -> None:
    batch = records_batch([rec(0, T0), rec(1, T0 + 1)])
    names = batch.schema.names
    cols = [
        pa.nulls(2, batch.schema.field("received_time").type) if n == "received_time" else c
        for n, c in zip(names, batch.columns, strict=True)
    ]
    no_received = pa.RecordBatch.from_arrays(cols, names=names)
    with_ts = pa.RecordBatch.from_arrays(
        [*cols, pa.array([int((T0 + 5) * 1e6)] * 2, pa.timestamp("us", tz="UTC"))],
        names=[*names, "timestamp"],
    )
    s = SensorSummaries()
    s.add(with_ts)
    assert s.summaries()[0].received == (T0 + 5, T0 + 5)
    s = SensorSummaries(clock=lambda: T0 + 9)
    s.add(no_received)
    assert s.summaries()[0].received == (T0 + 9, T0 + 9)


def test_summary_json_round_trips_and_bad_values_are_refused() -> None:
    s = summary_of([rec(0, T0), hb(1, T0 + 1), rec(5, T0 + 2)])
    s = replace(s, src=("telemetry.events", 1, 100, 102))
    back = decode(s.to_json().encode())
    assert back == s and back.digest() == s.digest()
    for bad in (b"", b"[]", b"{}", b'{"v":2}', s.to_json().replace('"n":[3', '"n":["x"').encode()):
        with pytest.raises(SummaryError):
            decode(bad)


def test_a_sensor_sending_a_million_random_seqs_is_bounded() -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    seqs = rng.integers(0, 10**9, n)
    batch = records_batch([rec(0, T0)])
    us = pa.timestamp("us", tz="UTC")
    times = pa.array(np.arange(n) * 1000 + int(T0 * 1e6)).cast(us)
    arrays = {
        "tenant_id": pa.array(["t"] * n),
        "sensor_id": pa.array(["noisy"] * n),
        "host": pa.array(["H"] * n),
        "event_id": pa.array([f"e{i}" for i in range(n)]),
        "seq": pa.array(seqs),
        "event_type": pa.array(["process_creation"] * n),
        "event_time": times,
        "received_time": times,
        "sent_time": pa.nulls(n, us),
    }
    del batch
    big = pa.RecordBatch.from_pydict(arrays)
    summaries = SensorSummaries(max_runs=256)
    started = time.perf_counter()
    for chunk in big.to_reader(max_chunksize=10_000) if hasattr(big, "to_reader") else [big]:
        summaries.add(chunk)
    seconds = time.perf_counter() - started
    (s,) = summaries.summaries()
    assert len(s.runs) == 256 and s.skipped is not None
    folded_runs, folded_records, lo, hi, _ = s.skipped
    assert sum(r[1] - r[0] + 1 for r in s.runs) + folded_records == n
    assert folded_runs == n - 256 and 0 <= lo <= hi < 10**9
    assert len(s.to_json()) < 40_000
    assert seconds < 30  # about a second here; the point is no per-run Python work
    # The state takes it without judging the folded runs one by one.
    state = SensorState()
    observe_summary(state, s, T0, HealthConfig(gap_grace_s=1000))
    assert state.unjudged == folded_records and state.events == n


def test_heartbeats_are_bounded_too() -> None:
    s = summary_of([hb(i, T0 + i, events_sent=i) for i in range(100)], max_heartbeats=8)
    assert s.heartbeats == 100 and [h["seq"] for h in s.hb] == list(range(92, 100))


def test_summary_fields_are_event_fields() -> None:
    from schemas.generate import event_columns

    assert set(SUMMARY_FIELDS) <= set(event_columns())


# -- observing summaries --------------------------------------------------------------

SEQUENCES = {
    "contiguous": [[rec(i, T0 + i) for i in range(10)]],
    "gap": [[rec(0, T0), rec(1, T0 + 1), rec(5, T0 + 2)], [rec(6, T0 + 3)]],
    "out_of_order": [
        [rec(0, T0), rec(3, T0 + 3), rec(1, T0 + 1)],
        [rec(2, T0 + 2), rec(4, T0 + 4)],
    ],
    "partly_filled": [[rec(0, T0), rec(10, T0 + 1), rec(4, T0 + 0.5), rec(5, T0 + 0.6)]],
    "duplicates": [[rec(0, T0), rec(1, T0 + 1), rec(1, T0 + 1), rec(0, T0), rec(2, T0 + 2)]],
    "reset": [[rec(i, T0 + i - 100) for i in range(100, 105)], [rec(0, T0 + 50), rec(1, T0 + 51)]],
    "reset_after_gap": [[rec(0, T0), rec(5, T0 + 1)], [rec(0, T0 + 2), rec(1, T0 + 3)]],
    "late_run_then_new": [
        [rec(0, T0), rec(1, T0 + 1), rec(6, T0 + 6)],
        [
            rec(2, T0 + 2),
            rec(3, T0 + 3),
            rec(4, T0 + 4),
            rec(5, T0 + 5),
            rec(6, T0 + 6),
            rec(7, T0 + 7),
        ],
    ],
    "clock": [
        [rec(0, T0 + 600, received=T0)],
        [rec(1, T0 + 1)],
        [rec(2, T0 - 300, received=T0 + 3)],
    ],
    "heartbeats": [[hb(0, T0), rec(1, T0 + 1)], [hb(2, T0 + 2, events_sent=5)]],
}


def _comparable(state: SensorState) -> dict[str, object]:
    d = asdict(state)
    for name in ("recent", "redelivered", "unjudged"):
        d.pop(name)
    return d


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_observing_summaries_finds_what_observing_records_found(name: str) -> None:
    old, new = SensorState(), SensorState()
    for i, batch in enumerate(SEQUENCES[name]):
        now = T0 + 10 * i
        assert observe(new, batch, now, CFG) == legacy_health.observe(old, batch, now, CFG)
        assert _comparable(new) == _comparable(old)
    later = T0 + 1000
    assert expire(new, later, CFG) == expire(old, later, CFG)


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_give_the_same_findings_as_records(seed: int) -> None:
    """Differential: the pre-summary state machine per batch vs one summary per batch."""
    rng = random.Random(100 + seed)
    records = [replace(r, sent_time=r.event_time) for r in random_stream(rng, 300)]
    old, new = SensorState(), SensorState()
    cfg = replace(CFG, max_pending_ranges=8)
    i = 0
    while i < len(records):
        n = rng.randrange(1, 40)
        batch, i = records[i : i + n], i + n
        now = batch[-1].received
        got, want = observe(new, batch, now, cfg), legacy_health.observe(old, batch, now, cfg)
        assert_same(got, want)
    assert _comparable(new) == _comparable(old)


def assert_same(got: list[Observation], want: list[Observation]) -> None:
    """Equal, except the key of a reset found inside a run: a summary does not carry
    every record's event id, so it is keyed by its position in the run."""
    assert [(o.kind, o.at, o.details) for o in got] == [(o.kind, o.at, o.details) for o in want]
    for g, w in zip(got, want, strict=True):
        assert g.key == w.key or (g.kind == "reset" and "+" in g.key)


def test_a_redelivered_summary_changes_nothing() -> None:
    s = summary_of([rec(0, T0), rec(1, T0 + 1), rec(5, T0 + 2)])
    s = replace(s, src=("telemetry.events", 0, 0, 2))
    state = SensorState()
    first = observe_summary(state, s, T0 + 2, CFG)
    before = asdict(state)
    assert observe_summary(state, decode(s.to_json()), T0 + 3, CFG) == []
    after = asdict(state)
    assert after.pop("redelivered") == 1 and before.pop("redelivered") == 0
    assert after == before and first == []
    (gap,) = expire(state, T0 + 10, CFG)
    assert gap.kind == "gap" and state.events == 3  # counted once


def test_an_overlapping_replay_only_adds_duplicates() -> None:
    """A summary that overlaps ones already taken (a replay cut differently): its seqs
    are at or below the maximum, with their old event times: duplicates, no finding."""
    state = SensorState()
    batch = [rec(i, T0 + i) for i in range(10)]
    observe_summary(state, replace(summary_of(batch[:6]), src=("ev", 0, 0, 5)), T0 + 6, CFG)
    observe_summary(state, replace(summary_of(batch[6:]), src=("ev", 0, 6, 9)), T0 + 10, CFG)
    again = replace(summary_of(batch[3:]), src=("ev", 0, 3, 9))
    assert observe_summary(state, again, T0 + 11, CFG) == []
    assert (state.duplicates, state.max_seq, state.resets, state.missing) == (7, 9, 0, 0)
    assert expire(state, T0 + 12, CFG) == []


def test_one_summary_or_many_find_the_same() -> None:
    rng = random.Random(5)
    records = [replace(r, sent_time=r.event_time) for r in random_stream(rng, 200)]
    whole, parts = SensorState(), SensorState()
    now = records[-1].received
    found = observe(whole, records, now, CFG)
    found_parts = []
    for a in range(0, len(records), 17):
        found_parts += observe(parts, records[a : a + 17], now, CFG)
    kinds = sorted((o.kind, o.key) for o in found if o.kind != "skew")
    assert kinds == sorted((o.kind, o.key) for o in found_parts if o.kind != "skew")


# -- clock skew from the sensor's clock at send time ------------------------------------


def test_a_late_spool_upload_is_not_clock_skew() -> None:
    """A laptop offline for 45 minutes uploads its spool when it reconnects: events and
    heartbeats from 45 minutes ago, in a batch its (correct) clock stamped as sent now.
    Not skew; the same events from a sensor whose clock is 45 minutes behind are."""
    now = T0 + 2700
    spool = [
        hb(0, T0, received=now, sent_time=now),
        *[rec(i, T0 + i * 60, received=now, sent_time=now) for i in range(1, 45)],
        hb(45, T0 + 2640, received=now, sent_time=now),
    ]
    cfg = HealthConfig(skew_threshold_s=300)
    honest = SensorState()
    assert [o.kind for o in observe(honest, spool, now, cfg)] == []
    assert honest.skewed is None and abs(honest.skew_s or 0.0) < 1
    assert honest.events == 44 and honest.heartbeats == 2 and honest.missing == 0
    # Old sensors that send no sent_time: their events are never judged; heartbeats are.
    legacy = SensorState()
    no_clock = [replace(r, sent_time=None) for r in spool if not r.heartbeat]
    assert observe(legacy, no_clock, now, cfg) == [] and legacy.skewed is None
    # A wrong clock: the sensor's clock read 45 minutes ago when it sent.
    wrong = SensorState()
    late_clock = [replace(r, sent_time=now - 2700) for r in spool]
    (skew,) = observe(wrong, late_clock, now, cfg)
    assert skew.kind == "skew" and skew.details == {"direction": "behind", "skew_s": -2700.0}


def test_skew_episode_survives_summaries_without_clock_samples() -> None:
    cfg = HealthConfig(skew_threshold_s=60)
    state = SensorState()
    (skew,) = observe(state, [rec(0, T0 + 600, received=T0)], T0, cfg)
    assert skew.details["direction"] == "ahead"
    assert observe(state, [rec(1, T0 + 1, sent_time=None)], T0 + 1, cfg) == []
    assert state.skewed == "ahead"  # nothing said otherwise
    assert observe(state, [rec(2, T0 + 2)], T0 + 2, cfg) == []
    assert state.skewed is None
