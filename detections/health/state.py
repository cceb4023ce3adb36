"""One sensor's health, as a pure state machine: no Spark, no I/O, no clock.

The streaming query (``detections.health.query``) keeps one ``SensorState`` per
(tenant, sensor) and calls ``observe_summary`` with each of the sensor's summaries
(``detections.health.summary``: what the detection pass saw of it in one task) and
``expire`` on every batch and every timer. Both return ``Observation``s: a sequence gap
whose missing numbers did not arrive within the grace, a sequence reset, a clock skew
episode, a silence, a recovery from silence.

Sequence numbers are taken in arrival order (Kafka offset), not sorted by ``seq``: a
summary carries the runs of consecutive numbers as they arrived, so out-of-order delivery
opens a pending gap that the late record fills before the grace runs out, and a reset (the
sensor starting again from a low ``seq``) stays distinguishable from late or duplicate
records, which carry the older event time. Sorting by ``seq`` would put a restarted
sensor's first events before the old session's last ones. A run is judged by its first
record exactly as a single record was (gap, reset, fill or duplicate); its other records
extend the sequence, fill pending numbers or count as duplicates.

Summaries are delivered at least once: a summary seen before (same digest, see
``SensorState.recent``) is ignored, and a partly overlapping one only adds duplicates.

Clock skew is judged from the sensor's own clock at send time (``sent_time``, which the
gateway fills from the client's batch header, else a heartbeat's ``event_time``), never
from the event time of ordinary events: an honest sensor uploading an old spool after a
reconnect sends old events with a current ``sent_time`` and is not skewed.

Every time here is epoch seconds (float). ``now`` is the processing time of the batch or
timer; a record's ``received`` time is when the backend got it (the gateway's
``received_time``, else the Kafka timestamp), so silence and rate never depend on the
sensor's own clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from detections.health.summary import Summary

Kind = Literal["gap", "reset", "skew", "silent", "stopped", "tampered", "source_lost", "recovered"]
Health = Literal["healthy", "degraded", "silent"]


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds; the defaults come from settings (``SIGSTREAM_HEALTH_*``)."""

    default_interval_s: float = 60.0  # a sensor that never said its heartbeat interval
    silence_multiplier: float = 3.0  # silent after this many missed intervals
    skew_threshold_s: float = 300.0  # |sensor clock at send time - receive time| beyond this
    gap_grace_s: float = 30.0  # missing seqs may still arrive this long
    max_pending_ranges: int = 64  # bound the state: older ranges are reported at once
    rate_window_s: float = 300.0  # the event rate is an exponential average over this
    degraded_window_s: float = 3600.0  # a gap or reset keeps a sensor "degraded" this long


@dataclass(frozen=True)
class Record:
    """The envelope fields health needs, from one event or heartbeat (``observe`` takes
    these; the streaming query takes summaries)."""

    event_id: str
    event_time: float
    received: float
    seq: int | None = None
    host: str | None = None
    heartbeat: bool = False
    interval_s: float | None = None
    agent_version: str | None = None
    events_sent: int | None = None
    events_dropped: int | None = None
    events_spooled: int | None = None
    sent_time: float | None = None  # the sensor's clock when it sent the record
    sensor_sha256: str | None = None
    config_sha256: str | None = None
    sources: dict[str, str] | None = None
    stop_reason: str | None = None


@dataclass(frozen=True)
class Observation:
    """Something worth a finding (or, for ``recovered``, a status change).

    ``key`` identifies the episode within the sensor's history (the missing range, the
    record that showed the reset ...), so a replay of the same data yields the same key
    and the finding id derived from it does not duplicate."""

    kind: Kind
    at: float
    key: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SensorState:
    host: str = ""
    first_seen: float | None = None
    last_seen: float | None = None  # receive time of the newest record
    last_event_time: float | None = None
    last_event_id: str | None = None
    max_seq: int | None = None
    max_seq_time: float | None = None  # event time of the record holding max_seq
    # Missing seq ranges not yet reported: [first, last, opened at (processing time)].
    pending: list[list[float]] = field(default_factory=list)
    session: int = 0  # resets seen so far; part of every gap key
    events: int = 0  # records other than heartbeats
    heartbeats: int = 0
    duplicates: int = 0  # seq at or below the maximum, not missing, older event time
    missing: int = 0  # seqs reported missing in total
    gaps: int = 0
    resets: int = 0
    rate: float = 0.0
    rate_at: float | None = None
    interval_s: float | None = None
    skew_s: float | None = None  # sensor clock at send - receive time (positive: ahead)
    skewed: str | None = None  # "ahead" / "behind" while in a skew episode
    skew_episodes: int = 0
    silent_since: float | None = None
    silences: int = 0
    last_gap_at: float | None = None
    last_reset_at: float | None = None
    agent_version: str | None = None
    events_sent: int | None = None
    events_dropped: int | None = None
    events_spooled: int | None = None
    # Tamper evidence (heartbeats of ``sigstream sensor``): the last hashes and source
    # statuses heard, and the reason of a clean stop until the sensor is heard again.
    sensor_sha256: str | None = None
    config_sha256: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    stop_reason: str | None = None
    tamper_episodes: int = 0
    # Digests of the last summaries taken (at-least-once delivery: a repeat is ignored).
    recent: list[str] = field(default_factory=list)
    redelivered: int = 0  # summaries ignored as repeats
    unjudged: int = 0  # records of runs folded by a summary's bound: counted, not judged

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SensorState:
        return cls(**json.loads(text))


def interval(state: SensorState, cfg: HealthConfig) -> float:
    return state.interval_s or cfg.default_interval_s


def silence_deadline(state: SensorState, cfg: HealthConfig) -> float | None:
    """Processing time after which the sensor counts as silent."""
    if state.last_seen is None:
        return None
    return state.last_seen + cfg.silence_multiplier * interval(state, cfg)


def next_timer(state: SensorState, now: float, cfg: HealthConfig) -> float:
    """Seconds until something may change without new records: a pending gap's grace
    ends or the sensor goes silent (at least one second)."""
    deadlines = [r[2] + cfg.gap_grace_s for r in state.pending]
    if state.silent_since is None and (d := silence_deadline(state, cfg)) is not None:
        deadlines.append(d)
    if not deadlines:
        return cfg.silence_multiplier * interval(state, cfg)
    return max(1.0, min(deadlines) - now)


def event_rate(state: SensorState, now: float, cfg: HealthConfig) -> float:
    """Events per second over about the last ``rate_window_s`` (exponentially weighted;
    a sensor seen for less than the window: its average since first seen)."""
    if state.rate_at is None or state.first_seen is None:
        return 0.0
    age = now - state.first_seen
    if age < cfg.rate_window_s:
        return state.events / max(age, 1.0)
    return state.rate * math.exp(-max(now - state.rate_at, 0.0) / cfg.rate_window_s)


def health(state: SensorState, now: float, cfg: HealthConfig) -> Health:
    if state.silent_since is not None:
        return "silent"
    recent = [t for t in (state.last_gap_at, state.last_reset_at) if t is not None]
    if state.skewed or any(now - t < cfg.degraded_window_s for t in recent):
        return "degraded"
    return "healthy"


def _report_range(state: SensorState, rng: list[float], now: float) -> Observation:
    first, last = int(rng[0]), int(rng[1])
    count = last - first + 1
    state.missing += count
    state.gaps += 1
    state.last_gap_at = now
    return Observation(
        "gap",
        now,
        f"{state.session}:{first}",
        {"first_missing": first, "last_missing": last, "missing": count, "session": state.session},
    )


def _fill(state: SensorState, lo: int, hi: int) -> int:
    """Take ``lo``..``hi`` out of the pending ranges; returns how many were missing."""
    filled = 0
    kept: list[list[float]] = []
    for first, last, opened in state.pending:
        a, b = max(first, lo), min(last, hi)
        if a > b:
            kept.append([first, last, opened])
            continue
        filled += int(b - a + 1)
        kept += [p for p in ([first, a - 1, opened], [b + 1, last, opened]) if p[0] <= p[1]]
    state.pending = kept
    return filled


#: A run of consecutive seqs in arrival order: first, last, the event times of its first
#: and last record, the event id of its first record.
Run = tuple[int, int, float, float, str]


def _first_of_run(state: SensorState, run: Run, now: float, cfg: HealthConfig) -> list[Observation]:
    """The run's first record, judged as any single record is."""
    seq, _, event_time, _, event_id = run
    if state.max_seq is None or seq == state.max_seq + 1:
        state.max_seq, state.max_seq_time = seq, event_time
        return []
    if seq > state.max_seq + 1:
        state.pending.append([state.max_seq + 1, seq - 1, now])
        state.max_seq, state.max_seq_time = seq, event_time
        out = []
        while len(state.pending) > cfg.max_pending_ranges:
            out.append(_report_range(state, state.pending.pop(0), now))
        return out
    if _fill(state, seq, seq):
        return []
    if seq < state.max_seq and event_time > (state.max_seq_time or 0.0):
        # Lower seq, newer event: the sensor started counting again. The old session's
        # missing seqs will not come any more: report them now.
        out = [_report_range(state, rng, now) for rng in state.pending]
        state.pending = []
        previous = state.max_seq
        state.session += 1
        state.resets += 1
        state.last_reset_at = now
        state.max_seq, state.max_seq_time = seq, event_time
        out.append(
            Observation(
                "reset",
                now,
                event_id,
                {"previous_seq": previous, "seq": seq, "session": state.session},
            )
        )
        return out
    state.duplicates += 1
    return []


def _not_pending(state: SensorState, lo: int, hi: int) -> int | None:
    """The first seq of ``lo``..``hi`` that no pending range holds (None: all held)."""
    seq, moved = lo, True
    while moved and seq <= hi:
        moved = False
        for first, last, _ in state.pending:
            if first <= seq <= last:
                seq, moved = int(last) + 1, True
    return seq if seq <= hi else None


def _run(state: SensorState, run: Run, now: float, cfg: HealthConfig) -> list[Observation]:
    """One run of consecutive seqs: its first record decides as a single record does
    (gap, reset, fill, duplicate); the rest fill pending numbers, extend the sequence
    beyond the maximum, and at or below it are duplicates, or a reset when the run's
    newest event time is newer than the maximum's (a run does not carry each record's
    event time: such a reset is keyed ``<first event id>+<position in the run>``)."""
    first, last, _, last_time, first_id = run
    out = _first_of_run(state, run, now, cfg)
    lo = first + 1
    while lo <= last and state.max_seq is not None and lo <= state.max_seq:
        hi = min(last, state.max_seq)
        seq = _not_pending(state, lo, hi)
        if seq is None:
            _fill(state, lo, hi)
            lo = hi + 1
            continue
        if seq > lo:
            _fill(state, lo, seq - 1)
        if seq < state.max_seq and last_time > (state.max_seq_time or 0.0):
            inner = (seq, last, last_time, last_time, f"{first_id}+{seq - first}")
            out += _first_of_run(state, inner, now, cfg)  # a reset
            lo = seq + 1
            continue
        state.duplicates += (hi - seq + 1) - _fill(state, seq, hi)
        lo = hi + 1
    if lo <= last:  # lo == max_seq + 1
        state.max_seq, state.max_seq_time = last, last_time
    return out


def _skew(
    state: SensorState, clock: tuple[int, float, float, float] | None, now: float, cfg: HealthConfig
) -> list[Observation]:
    """Skew over one summary's clock samples (sensor clock at send time minus receive
    time). A clock ahead shows on any sample (nothing can be sent before the sensor's
    clock says so); a clock behind only when even the freshest sample is behind. A
    summary without samples (no sent_time, no heartbeat) leaves the episode as it is."""
    if clock is None or clock[0] <= 0:
        return []
    _, _, ahead, nearest = clock
    direction: str | None = None
    if ahead > cfg.skew_threshold_s:
        direction, state.skew_s = "ahead", ahead
    elif -ahead > cfg.skew_threshold_s:
        direction, state.skew_s = "behind", ahead
    else:
        state.skew_s = nearest
    out: list[Observation] = []
    if direction is not None and direction != state.skewed:
        state.skew_episodes += 1
        out.append(
            Observation(
                "skew",
                now,
                f"{direction}:{state.skew_episodes}",
                {"direction": direction, "skew_s": round(state.skew_s, 3)},
            )
        )
    state.skewed = direction
    return out


def _tamper(state: SensorState, hb: dict[str, Any], now: float) -> list[Observation]:
    """One heartbeat's tamper evidence, in arrival order: the sensor's code or
    configuration hash differs from the previous heartbeat's; a source that was ``ok``
    is now unavailable; a clean stop is remembered (and forgotten when heard again) so a
    following silence names its cause."""
    out: list[Observation] = []
    for what, name in (("sensor code", "sensor_sha256"), ("configuration", "config_sha256")):
        new, old = hb.get(name), getattr(state, name)
        if new and old and new != old:
            state.tamper_episodes += 1
            out.append(
                Observation(
                    "tampered",
                    now,
                    f"{name}:{old[:16]}:{new[:16]}",
                    {"changed": what, "previous_sha256": old, "sha256": new},
                )
            )
        if new:
            setattr(state, name, new)
    for source, status in sorted((hb.get("sources") or {}).items()):
        was = state.sources.get(source)
        if was == "ok" and status.startswith("unavailable"):
            out.append(
                Observation(
                    "source_lost",
                    now,
                    f"{source}:{hb.get('event_id')}",
                    {"source": source, "was": was, "status": status},
                )
            )
        state.sources[source] = status
    state.stop_reason = hb.get("stop_reason")
    return out


#: How many summary digests a sensor remembers to recognise a redelivered summary.
RECENT_SUMMARIES = 64


def observe_summary(
    state: SensorState, summary: Summary, now: float, cfg: HealthConfig
) -> list[Observation]:
    """Take one summary of the sensor (``detections.health.summary``) into ``state``.
    A sensor's summaries must come in arrival order (``Summary.order``)."""
    if summary.records <= 0:
        return []
    if summary.src is not None:  # a summary of real Kafka records: may be a redelivery
        digest = summary.digest()
        if digest in state.recent:
            state.redelivered += 1
            return []
        state.recent = [*state.recent[-(RECENT_SUMMARIES - 1) :], digest]
    received_first, received_max = summary.received or (now, now)
    out: list[Observation] = []
    if state.silent_since is not None:
        quiet = received_first - state.silent_since
        out.append(
            Observation(
                "recovered",
                now,
                f"{state.silences}",
                {"silent_since": state.silent_since, "silent_s": round(max(quiet, 0.0), 3)},
            )
        )
        state.silent_since = None
    runs = summary.runs
    if summary.skipped is not None and len(runs) >= 1:
        for run in runs[:-1]:
            out += _run(state, run, now, cfg)
        _, records, _, seq_max, time_max = summary.skipped
        state.unjudged += records
        if state.max_seq is None or seq_max > state.max_seq:
            state.max_seq, state.max_seq_time = seq_max, time_max
        out += _run(state, runs[-1], now, cfg)
    else:
        for run in runs:
            out += _run(state, run, now, cfg)
    state.host = summary.host or state.host
    state.first_seen = received_first if state.first_seen is None else state.first_seen
    if summary.last is not None and (state.last_seen is None or received_max >= state.last_seen):
        state.last_seen = received_max
        state.last_event_id, state.last_event_time = summary.last[0], summary.last[1]
    state.heartbeats += summary.heartbeats
    for hb in summary.hb:
        out += _tamper(state, hb, now)
        state.interval_s = hb.get("expected_interval_s") or state.interval_s
        state.agent_version = hb.get("agent_version") or state.agent_version
        for name in ("events_sent", "events_dropped", "events_spooled"):
            if hb.get(name) is not None:
                setattr(state, name, hb[name])
    state.events += summary.events
    if state.rate_at is not None:
        state.rate *= math.exp(-max(now - state.rate_at, 0.0) / cfg.rate_window_s)
    state.rate += summary.events / cfg.rate_window_s
    state.rate_at = now
    out += _skew(state, summary.clock, now, cfg)
    return out + expire_gaps(state, now, cfg)


def observe(
    state: SensorState, records: Iterable[Record], now: float, cfg: HealthConfig
) -> list[Observation]:
    """Take a batch of one sensor's records (arrival order) into ``state``, as one
    summary (``summarize_records``). For tests and tools; the streaming query observes
    the summaries the detection pass makes."""
    batch = list(records)
    if not batch:
        return []
    return observe_summary(state, summarize_records(batch), now, cfg)


def summarize_records(
    records: list[Record], tenant: str = "default", sensor: str = "sensor"
) -> Summary:
    """One sensor's records (arrival order) -> the summary ``SensorSummaries`` makes of
    the same events (unbounded, no Kafka origin), one record at a time: the reference the
    vectorized summarizer is tested against."""
    s = Summary(tenant=tenant, sensor=sensor)
    clock: list[float] = []
    for r in records:
        s.records += 1
        if r.heartbeat:
            s.heartbeats += 1
        else:
            s.events += 1
        t, rt = r.event_time, r.received
        s.event_time = (
            (t, t) if s.event_time is None else (min(s.event_time[0], t), max(s.event_time[1], t))
        )
        s.received = (rt, rt) if s.received is None else (s.received[0], max(s.received[1], rt))
        if s.last is None or rt >= s.last[2]:
            s.last = (r.event_id, t, rt)
        s.host = r.host or s.host
        if r.seq is None:
            s.unsequenced += 1
        elif s.runs and r.seq == s.runs[-1][1] + 1:
            first, _, t0, _, eid = s.runs[-1]
            s.runs[-1] = (first, r.seq, t0, t, eid)
        else:
            s.runs.append((r.seq, r.seq, t, t, r.event_id))
        sent = r.sent_time if r.sent_time is not None else (t if r.heartbeat else None)
        if sent is not None:
            clock.append(sent - rt)
        if r.heartbeat:
            s.hb.append(
                {
                    "seq": r.seq,
                    "event_id": r.event_id,
                    "event_time": t,
                    "sent_time": r.sent_time,
                    "received": rt,
                    "expected_interval_s": r.interval_s,
                    "agent_version": r.agent_version,
                    "events_sent": r.events_sent,
                    "events_dropped": r.events_dropped,
                    "events_spooled": r.events_spooled,
                    "sensor_sha256": r.sensor_sha256,
                    "config_sha256": r.config_sha256,
                    "sources": r.sources,
                    "stop_reason": r.stop_reason,
                }
            )
    if clock:
        nearest = min(abs(d) for d in clock)
        near = [d for d in clock if abs(d) == nearest][-1]
        s.clock = (len(clock), min(clock), max(clock), near)
    return s


def records_batch(records: list[Record], tenant: str = "default", sensor: str = "sensor") -> Any:
    """Records -> an Arrow batch with the event columns a summary reads (for tests)."""
    import pyarrow as pa

    us = pa.timestamp("us", tz="UTC")

    def ts(v: float | None) -> int | None:
        return None if v is None else round(v * 1e6)

    return pa.RecordBatch.from_pydict(
        {
            "tenant_id": pa.array([tenant] * len(records), pa.string()),
            "sensor_id": pa.array([sensor] * len(records), pa.string()),
            "host": pa.array([r.host for r in records], pa.string()),
            "event_id": pa.array([r.event_id for r in records], pa.string()),
            "seq": pa.array([r.seq for r in records], pa.int64()),
            "event_type": pa.array(
                ["heartbeat" if r.heartbeat else "process_creation" for r in records], pa.string()
            ),
            "event_time": pa.array([ts(r.event_time) for r in records], pa.int64()).cast(us),
            "received_time": pa.array([ts(r.received) for r in records], pa.int64()).cast(us),
            "sent_time": pa.array([ts(r.sent_time) for r in records], pa.int64()).cast(us),
            "expected_interval_s": pa.array(
                [None if r.interval_s is None else round(r.interval_s) for r in records],
                pa.int64(),
            ),
            "agent_version": pa.array([r.agent_version for r in records], pa.string()),
            "events_sent": pa.array([r.events_sent for r in records], pa.int64()),
            "events_dropped": pa.array([r.events_dropped for r in records], pa.int64()),
            "events_spooled": pa.array([r.events_spooled for r in records], pa.int64()),
            "sensor_sha256": pa.array([r.sensor_sha256 for r in records], pa.string()),
            "config_sha256": pa.array([r.config_sha256 for r in records], pa.string()),
            "sources": pa.array(
                [None if r.sources is None else list(r.sources.items()) for r in records],
                pa.map_(pa.string(), pa.string()),
            ),
            "stop_reason": pa.array([r.stop_reason for r in records], pa.string()),
        }
    )


def expire_gaps(state: SensorState, now: float, cfg: HealthConfig) -> list[Observation]:
    """Report the missing ranges whose grace has run out."""
    out: list[Observation] = []
    keep = []
    for rng in state.pending:
        if rng[2] + cfg.gap_grace_s <= now:
            out.append(_report_range(state, rng, now))
        else:
            keep.append(rng)
    state.pending = keep
    return out


def expire(state: SensorState, now: float, cfg: HealthConfig) -> list[Observation]:
    """What time alone decides, on a timer (no records from this sensor in the batch):
    gaps past their grace, and silence. Silence is judged only here: a sensor with
    records in the batch was heard from, however late the batch runs."""
    out = expire_gaps(state, now, cfg)
    deadline = silence_deadline(state, cfg)
    if state.silent_since is None and deadline is not None and now >= deadline:
        state.silent_since = state.last_seen
        state.silences += 1
        stopped = state.stop_reason is not None
        cause = (
            f"stopped cleanly ({state.stop_reason})"
            if stopped
            else "went silent without stopping: killed or cut off"
        )
        out.append(
            Observation(
                "stopped" if stopped else "silent",
                now,
                f"{state.last_event_id}",
                {
                    "cause": cause,
                    "last_seen": state.last_seen,
                    "expected_interval_s": interval(state, cfg),
                    "silent_s": round(now - (state.last_seen or now), 3),
                    "last_seq": state.max_seq,
                },
            )
        )
    return out
