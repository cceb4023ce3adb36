"""The per-record sensor-health state machine as it was before summaries (issue 18), kept
verbatim as the reference ``observe_summary`` is tested against (except its skew rule,
which judged event time against receive time)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from detections.health.state import (
    HealthConfig,
    Observation,
    Record,
    SensorState,
    _report_range,
    expire_gaps,
)


def _legacy_fill(state: SensorState, seq: int) -> bool:
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
    if _legacy_fill(state, seq):
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
