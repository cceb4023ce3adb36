"""One sensor's health, as a pure state machine: no Spark, no I/O, no clock.

The streaming query (``detections.health.query``) keeps one ``SensorState`` per
(tenant, sensor) and calls ``observe`` with the sensor's records of a micro-batch and
``expire`` on every batch and every timer. Both return ``Observation``s: a sequence gap
whose missing numbers did not arrive within the grace, a sequence reset, a clock skew
episode, a silence, a recovery from silence.

Records are taken in arrival order (Kafka offset), not sorted by ``seq``: out-of-order
delivery opens a pending gap that the late record fills before the grace runs out, and a
reset (the sensor starting again from a low ``seq``) stays distinguishable from late or
duplicate records, which carry the older event time. Sorting a batch by ``seq`` would
put a restarted sensor's first events before the old session's last ones.

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

Kind = Literal["gap", "reset", "skew", "silent", "recovered"]
Health = Literal["healthy", "degraded", "silent"]


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds; the defaults come from settings (``SIGSTREAM_HEALTH_*``)."""

    default_interval_s: float = 60.0  # a sensor that never said its heartbeat interval
    silence_multiplier: float = 3.0  # silent after this many missed intervals
    skew_threshold_s: float = 300.0  # |event time - receive time| beyond this is skew
    gap_grace_s: float = 30.0  # missing seqs may still arrive this long
    max_pending_ranges: int = 64  # bound the state: older ranges are reported at once
    rate_window_s: float = 300.0  # the event rate is an exponential average over this
    degraded_window_s: float = 3600.0  # a gap or reset keeps a sensor "degraded" this long


@dataclass(frozen=True)
class Record:
    """The envelope fields health needs, from one event or heartbeat."""

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
    skew_s: float | None = None  # event time - receive time (positive: clock ahead)
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


def _fill(state: SensorState, seq: int) -> bool:
    """Take ``seq`` out of the pending ranges; False when it was not missing."""
    for i, (first, last, opened) in enumerate(state.pending):
        if first <= seq <= last:
            parts = [[first, seq - 1, opened], [seq + 1, last, opened]]
            state.pending[i : i + 1] = [p for p in parts if p[0] <= p[1]]
            return True
    return False


def _sequence(state: SensorState, r: Record, now: float, cfg: HealthConfig) -> list[Observation]:
    seq = r.seq
    if seq is None:
        return []
    if state.max_seq is None or seq == state.max_seq + 1:
        state.max_seq, state.max_seq_time = seq, r.event_time
        return []
    if seq > state.max_seq + 1:
        state.pending.append([state.max_seq + 1, seq - 1, now])
        state.max_seq, state.max_seq_time = seq, r.event_time
        out = []
        while len(state.pending) > cfg.max_pending_ranges:
            out.append(_report_range(state, state.pending.pop(0), now))
        return out
    if _fill(state, seq):
        return []
    if seq < state.max_seq and r.event_time > (state.max_seq_time or 0.0):
        # Lower seq, newer event: the sensor started counting again. The old session's
        # missing seqs will not come any more: report them now.
        out = [_report_range(state, rng, now) for rng in state.pending]
        state.pending = []
        previous = state.max_seq
        state.session += 1
        state.resets += 1
        state.last_reset_at = now
        state.max_seq, state.max_seq_time = seq, r.event_time
        out.append(
            Observation(
                "reset",
                now,
                r.event_id,
                {"previous_seq": previous, "seq": seq, "session": state.session},
            )
        )
        return out
    state.duplicates += 1
    return []


def _skew(
    state: SensorState, records: list[Record], now: float, cfg: HealthConfig
) -> list[Observation]:
    """Skew over one batch: a clock ahead shows on any record (nothing can arrive before
    it happened); a clock behind only when even the freshest record is late, so a spool
    delivered after an outage is not mistaken for a slow clock."""
    if not records:
        return []
    ahead = max(r.event_time - r.received for r in records)
    behind = min(r.received - r.event_time for r in records)
    direction: str | None = None
    if ahead > cfg.skew_threshold_s:
        direction, state.skew_s = "ahead", ahead
    elif behind > cfg.skew_threshold_s:
        direction, state.skew_s = "behind", -behind
    else:
        state.skew_s = min((r.event_time - r.received for r in records), key=abs)
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


def observe(
    state: SensorState, records: Iterable[Record], now: float, cfg: HealthConfig
) -> list[Observation]:
    """Take a batch of one sensor's records (arrival order) into ``state``."""
    batch = list(records)
    if not batch:
        return []
    out: list[Observation] = []
    if state.silent_since is not None:
        quiet = batch[0].received - state.silent_since
        out.append(
            Observation(
                "recovered",
                now,
                f"{state.silences}",
                {"silent_since": state.silent_since, "silent_s": round(max(quiet, 0.0), 3)},
            )
        )
        state.silent_since = None
    n_events = 0
    for r in batch:
        out += _sequence(state, r, now, cfg)
        state.host = r.host or state.host
        state.first_seen = r.received if state.first_seen is None else state.first_seen
        if state.last_seen is None or r.received >= state.last_seen:
            state.last_seen = r.received
            state.last_event_time, state.last_event_id = r.event_time, r.event_id
        if r.heartbeat:
            state.heartbeats += 1
            state.interval_s = r.interval_s or state.interval_s
            state.agent_version = r.agent_version or state.agent_version
            state.events_sent = r.events_sent if r.events_sent is not None else state.events_sent
            if r.events_dropped is not None:
                state.events_dropped = r.events_dropped
            if r.events_spooled is not None:
                state.events_spooled = r.events_spooled
        else:
            n_events += 1
    state.events += n_events
    if state.rate_at is not None:
        state.rate *= math.exp(-max(now - state.rate_at, 0.0) / cfg.rate_window_s)
    state.rate += n_events / cfg.rate_window_s
    state.rate_at = now
    out += _skew(state, batch, now, cfg)
    return out + expire_gaps(state, now, cfg)


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
        out.append(
            Observation(
                "silent",
                now,
                f"{state.last_event_id}",
                {
                    "last_seen": state.last_seen,
                    "expected_interval_s": interval(state, cfg),
                    "silent_s": round(now - (state.last_seen or now), 3),
                    "last_seq": state.max_seq,
                },
            )
        )
    return out
