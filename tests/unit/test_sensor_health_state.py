"""The per-sensor health state machine: gaps, resets, skew, silence, recovery."""

from __future__ import annotations

from detections.health.state import (
    HealthConfig,
    Record,
    SensorState,
    event_rate,
    expire,
    health,
    next_timer,
    observe,
)

CFG = HealthConfig(default_interval_s=10, silence_multiplier=3, skew_threshold_s=60, gap_grace_s=5)
T0 = 1_800_000_000.0


def rec(seq: int | None, t: float = T0, received: float | None = None, **kw: object) -> Record:
    """An event produced at ``t`` and received at ``received`` (default: at once), sent
    as it was produced (the sensor's clock read ``t`` when it sent it)."""
    kw.setdefault("sent_time", t)
    return Record(
        event_id=f"e{seq}-{t}",
        event_time=t,
        received=t if received is None else received,
        seq=seq,
        host="WS01",
        **kw,  # type: ignore[arg-type]
    )


def kinds(observations: list) -> list[str]:  # type: ignore[type-arg]
    return [o.kind for o in observations]


def test_contiguous_sequence_raises_nothing() -> None:
    s = SensorState()
    assert observe(s, [rec(i, T0 + i) for i in range(10)], T0 + 10, CFG) == []
    assert (s.max_seq, s.events, s.missing, s.host) == (9, 10, 0, "WS01")
    assert health(s, T0 + 10, CFG) == "healthy"


def test_gap_reported_once_after_grace() -> None:
    s = SensorState()
    observe(s, [rec(0, T0), rec(1, T0 + 1), rec(5, T0 + 2)], T0 + 2, CFG)
    assert s.pending and s.missing == 0
    assert expire(s, T0 + 4, CFG) == []  # still within the grace
    (gap,) = expire(s, T0 + 8, CFG)
    assert gap.kind == "gap"
    assert gap.details == {"first_missing": 2, "last_missing": 4, "missing": 3, "session": 0}
    assert gap.key == "0:2"
    assert expire(s, T0 + 9, CFG) == []  # reported once
    assert (s.missing, s.gaps) == (3, 1)
    assert health(s, T0 + 9, CFG) == "degraded"


def test_out_of_order_within_grace_is_no_gap() -> None:
    s = SensorState()
    observe(s, [rec(0, T0), rec(3, T0 + 3), rec(1, T0 + 1)], T0 + 3, CFG)
    observe(s, [rec(2, T0 + 2), rec(4, T0 + 4)], T0 + 4, CFG)
    assert expire(s, T0 + 20, CFG) == []
    assert (s.missing, s.pending, s.duplicates) == (0, [], 0)


def test_partly_filled_gap_reports_only_what_is_still_missing() -> None:
    s = SensorState()
    observe(s, [rec(0, T0), rec(10, T0 + 1), rec(4, T0 + 0.5)], T0 + 1, CFG)
    gaps = expire(s, T0 + 10, CFG)
    assert sorted((g.details["first_missing"], g.details["last_missing"]) for g in gaps) == [
        (1, 3),
        (5, 9),
    ]
    assert s.missing == 8


def test_duplicates_of_the_same_seq_are_not_gaps_or_resets() -> None:
    s = SensorState()
    batch = [rec(0, T0), rec(1, T0 + 1), rec(1, T0 + 1), rec(0, T0), rec(2, T0 + 2)]
    assert observe(s, batch, T0 + 2, CFG) == []
    assert kinds(expire(s, T0 + 40, CFG)) == ["silent"]  # silence, but no gap
    assert (s.duplicates, s.missing, s.resets) == (2, 0, 0)


def test_reset_is_lower_seq_with_newer_event_time() -> None:
    s = SensorState()
    observe(s, [rec(i, T0 + i - 100) for i in range(100, 105)], T0 + 5, CFG)
    obs = observe(s, [rec(0, T0 + 50), rec(1, T0 + 51)], T0 + 51, CFG)
    assert kinds(obs) == ["reset"]
    assert obs[0].details == {"previous_seq": 104, "seq": 0, "session": 1}
    assert (s.resets, s.session, s.max_seq) == (1, 1, 1)
    assert health(s, T0 + 52, CFG) == "degraded"


def test_reset_reports_the_old_sessions_missing_seqs_at_once() -> None:
    s = SensorState()
    observe(s, [rec(0, T0), rec(5, T0 + 1)], T0 + 1, CFG)
    obs = observe(s, [rec(0, T0 + 2)], T0 + 2, CFG)
    assert kinds(obs) == ["gap", "reset"]
    assert obs[0].key == "0:1" and obs[0].details["missing"] == 4


def test_clock_ahead_and_behind_are_skew_episodes() -> None:
    s = SensorState()
    # sensor clock 10 minutes ahead: events "from the future"
    ahead = observe(s, [rec(0, T0 + 600, received=T0)], T0, CFG)
    assert kinds(ahead) == ["skew"] and ahead[0].details["direction"] == "ahead"
    assert ahead[0].details["skew_s"] == 600
    assert observe(s, [rec(1, T0 + 601, received=T0 + 1)], T0 + 1, CFG) == []  # same episode
    assert health(s, T0 + 1, CFG) == "degraded"
    # clock fixed, then 5 minutes behind
    assert observe(s, [rec(2, T0 + 2, received=T0 + 2)], T0 + 2, CFG) == []
    assert s.skewed is None
    behind = observe(s, [rec(3, T0 - 300, received=T0 + 3)], T0 + 3, CFG)
    assert kinds(behind) == ["skew"] and behind[0].details["direction"] == "behind"
    assert s.skew_s == -303
    assert behind[0].key == "behind:2"


def test_late_backlog_with_a_fresh_record_is_not_skew() -> None:
    s = SensorState()
    backlog = [rec(i, T0 + i, received=T0 + 3600) for i in range(5)]
    fresh = rec(5, T0 + 3600, received=T0 + 3600)
    assert observe(s, [*backlog, fresh], T0 + 3600, CFG) == []
    assert s.skewed is None


def test_silence_uses_the_heartbeat_interval_then_recovery() -> None:
    s = SensorState()
    hb = rec(0, T0, heartbeat=True, interval_s=20.0, agent_version="1.2")
    observe(s, [hb], T0, CFG)
    assert (s.interval_s, s.agent_version, s.heartbeats, s.events) == (20.0, "1.2", 1, 0)
    assert next_timer(s, T0, CFG) == 60  # 3 x 20 s
    assert expire(s, T0 + 59, CFG) == []
    (silent,) = expire(s, T0 + 61, CFG)
    assert silent.kind == "silent" and silent.details["expected_interval_s"] == 20.0
    assert health(s, T0 + 61, CFG) == "silent"
    assert expire(s, T0 + 200, CFG) == []  # one finding per silence
    back = observe(s, [rec(1, T0 + 300)], T0 + 300, CFG)
    assert kinds(back) == ["recovered"] and back[0].details["silent_s"] == 300
    assert health(s, T0 + 300, CFG) == "healthy"


def test_default_interval_for_sensors_without_heartbeats() -> None:
    s = SensorState()
    observe(s, [rec(0, T0)], T0, CFG)
    assert kinds(expire(s, T0 + 31, CFG)) == ["silent"]


def test_pending_ranges_are_bounded() -> None:
    cfg = HealthConfig(gap_grace_s=1000, max_pending_ranges=3)
    s = SensorState()
    obs = observe(s, [rec(i * 2, T0 + i) for i in range(6)], T0 + 6, cfg)
    assert len(s.pending) == 3
    assert kinds(obs) == ["gap", "gap"] and s.missing == 2


def test_state_round_trips_through_json_and_rate_decays() -> None:
    s = SensorState()
    observe(s, [rec(i, T0 + i) for i in range(600)], T0 + 600, CFG)
    again = SensorState.from_json(s.to_json())
    assert again == s
    cfg = HealthConfig(rate_window_s=300)
    assert event_rate(s, T0 + 600, cfg) > event_rate(s, T0 + 1200, cfg) > 0
