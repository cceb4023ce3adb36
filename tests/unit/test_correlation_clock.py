"""Per-key event time (detections.correlation.clock): a reconnecting sensor's old burst
still correlates, exactly once; lateness is judged on the key's own clock; data older than
the horizon is reported late; quiet keys are decided by processing-time timers; and the
matches topic's records (detections.correlation.feed) round-trip."""

from __future__ import annotations

from datetime import UTC, datetime

from detections.correlation.clock import ClockConfig, KeyStep, on_matches, on_timer, watermark
from detections.correlation.feed import CorrelationFeed, decode_record
from detections.correlation.model import Condition, CorrelationSpec, correlation_finding_id
from detections.correlation.state import KeyState, Match

S = 1000
MIN = 60 * S
NOW = 1_780_000_000_000  # processing time of the tests (ms)
CFG = ClockConfig(lateness_ms=60 * S, horizon_ms=24 * 60 * MIN, ttl_ms=60 * MIN)


def spec(count: int = 6, span_s: int = 600, op: str = "gte", **extra: object) -> CorrelationSpec:
    return CorrelationSpec(
        id="burst",
        title="Burst of failed logons",
        type="event_count",
        rules=("failed",),
        group_by=("host",),
        timespan_s=span_s,
        condition=Condition(((op, float(count)),)),
        generate=True,
        **extra,  # type: ignore[arg-type]
    )


def match(t_ms: int, eid: str, host: str = "laptop", tenant: str = "default") -> Match:
    return Match(t_ms, "failed", eid, None, host, f"sensor-{host}", tenant)


def feed(
    sp: CorrelationSpec, key: str, batches: list[tuple[list[Match], int]]
) -> tuple[list[KeyStep], KeyState]:
    """Micro-batches (matches, processing time) through one key, as the state store would."""
    state, steps = KeyState(), []
    for new, now in batches:
        step = on_matches(sp, key, state, new, now, CFG)
        state = KeyState.from_json(step.state.to_json())
        steps.append(step)
    return steps, state


def test_a_reconnecting_sensors_old_burst_fires_once_on_its_own_clock() -> None:
    """The issue's scenario: the fleet is live at NOW, then a laptop uploads six failed
    logons from 45 minutes ago. Its host's key has its own clock: the burst fires, once."""
    sp = spec()
    live, _ = feed(sp, "server", [([match(NOW - 2 * S, "live-1", "server")], NOW)])
    assert live[0].firings == [] and live[0].late == []
    old = NOW - 45 * MIN
    burst = [match(old + i * 20 * S, f"fail-{i}") for i in range(6)]
    steps, state = feed(sp, "laptop", [(burst, NOW + 1 * S)])
    (firing,) = steps[0].firings
    assert steps[0].late == []
    assert firing.window_start_ms == old and len(firing.matches) == 6
    # The same upload again (a replay of the detect batch, or the laptop re-sending its
    # spool): absorbed, no second firing and no late report, though the key's clock has
    # moved past part of it.
    again = on_matches(sp, "laptop", state, burst, NOW + 2 * S, CFG)
    assert again.firings == [] and again.late == []
    assert watermark(state, CFG) > burst[0].time_ms


def test_the_burst_fires_as_soon_as_the_sixth_match_arrives() -> None:
    sp = spec()
    batches = [([match(NOW + i * S, f"e{i}")], NOW + i * S) for i in range(6)]
    steps, _ = feed(sp, "laptop", batches)
    assert [len(s.firings) for s in steps] == [0, 0, 0, 0, 0, 1]


def test_lateness_is_judged_on_the_keys_own_clock_before_the_batch() -> None:
    sp = spec(count=2)
    first = [match(NOW, "a"), match(NOW - 50 * S, "b-in-batch")]  # same batch: not late
    steps, state = feed(sp, "laptop", [(first, NOW)])
    assert steps[0].late == [] and len(steps[0].firings) == 1
    assert watermark(state, CFG) == NOW - 60 * S
    behind = on_matches(sp, "laptop", state, [match(NOW - 61 * S, "too-late")], NOW, CFG)
    assert [late.match.event_id for late in behind.late] == ["too-late"]
    assert behind.late[0].watermark_ms == NOW - 60 * S
    # Another key is unaffected by this key's clock.
    other, _ = feed(sp, "server", [([match(NOW - 61 * S, "x"), match(NOW - 70 * S, "y")], NOW)])
    assert other[0].late == [] and len(other[0].firings) == 1


def test_matches_older_than_the_horizon_are_late_for_any_key() -> None:
    sp = spec(count=1)
    ancient = match(NOW - 25 * 60 * MIN, "old")
    steps, state = feed(sp, "laptop", [([ancient], NOW)])
    assert steps[0].firings == [] and [x.match.event_id for x in steps[0].late] == ["old"]
    assert steps[0].late[0].watermark_ms == NOW - CFG.horizon_ms
    assert steps[0].remove and state.pending == []


def test_a_quiet_key_is_decided_by_its_timer() -> None:
    """``lt`` needs the window to close; a quiet key's clock moves in processing time."""
    sp = spec(count=3, op="lt", span_s=120)
    steps, state = feed(sp, "laptop", [([match(NOW, "only")], NOW)])
    assert steps[0].firings == []
    # Window [NOW, NOW+120 s]; the key's watermark is NOW-60 s: 180 s to go.
    assert steps[0].timer_ms == 180 * S
    fired = on_timer(sp, "laptop", state, CFG)
    (firing,) = fired.firings
    assert firing.value == 1 and firing.window_end_ms == NOW + 120 * S
    assert fired.remove
    # A straggler inside the window that fired is absorbed; one before it is late.
    after = on_matches(
        sp, "laptop", fired.state, [match(NOW + 100 * S, "x"), match(NOW - 1, "y")], NOW, CFG
    )
    assert after.firings == [] and [x.match.event_id for x in after.late] == ["y"]


def test_timers_are_bounded_by_the_ttl() -> None:
    sp = spec(count=3, op="lt", span_s=24 * 3600)
    steps, _ = feed(sp, "laptop", [([match(NOW, "only")], NOW)])
    assert steps[0].timer_ms == CFG.ttl_ms


def test_a_key_with_nothing_pending_is_forgotten_after_its_absorbed_window() -> None:
    sp = spec(count=1, span_s=60)
    steps, state = feed(sp, "laptop", [([match(NOW, "a")], NOW)])
    assert len(steps[0].firings) == 1 and not steps[0].remove  # remembers the fired window
    done = on_timer(sp, "laptop", state, CFG)
    assert done.firings == [] and done.remove


def test_two_tenants_on_the_same_group_key_get_distinct_finding_ids() -> None:
    sp = spec(count=1)
    (a,) = on_matches(sp, "h", KeyState(), [match(NOW, "e", "h", "acme")], NOW, CFG).firings
    (b,) = on_matches(sp, "h", KeyState(), [match(NOW, "e", "h", "globex")], NOW, CFG).firings
    (d,) = on_matches(sp, "h", KeyState(), [match(NOW, "e", "h")], NOW, CFG).firings
    assert len({a.finding_id, b.finding_id, d.finding_id}) == 3
    # The default tenant keeps the ids of releases before tenants counted.
    assert d.finding_id == correlation_finding_id("burst", "h", NOW)


def test_feed_records_round_trip_with_aliases_and_extra_fields() -> None:
    sp = CorrelationSpec(
        id="c",
        title="t",
        type="value_count",
        rules=("r1", "r2"),
        group_by=("user",),
        timespan_s=60,
        condition=Condition((("gte", 2.0),), "target"),
        generate=False,
        rule_fields=(("user", (("r1", "SubjectUserName"), ("r2", "User"))),),
    )
    f = CorrelationFeed.of([sp])
    assert f.rule_ids == {"r1", "r2"}
    event = {
        "event_id": "e1",
        "event_time": datetime.fromtimestamp(NOW / 1000, UTC).isoformat(),
        "host": "h1",
        "sensor_id": "s1",
        "tenant_id": "acme",
        "extra": {"SubjectUserName": "alice", "target": "dc1"},
    }
    ((key, value),) = f.records("r1", event)
    assert key == b"c\x1facme\x1falice"
    corr, group_key, m = decode_record(value)
    assert (corr, group_key) == ("c", "alice")
    assert m == Match(NOW, "r1", "e1", "dc1", "h1", "s1", "acme")
    assert f.records("unrelated", event) == []
    (_, other) = f.records("r2", {**event, "extra": {"User": "bob"}})[0]
    assert decode_record(other)[1] == "bob" and decode_record(other)[2].value is None
