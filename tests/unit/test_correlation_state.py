"""The correlation state machine: all four types, group-by separation, ordered vs
unordered, window edges, non-monotone conditions, late matches, restart from saved state."""

from __future__ import annotations

from detections.correlation.model import Condition, CorrelationSpec
from detections.correlation.state import KeyState, Match, advance, measure

S = 1000  # ms


def spec(
    kind: str, rules: tuple[str, ...] = ("a",), span_s: int = 60, **cond: float
) -> CorrelationSpec:
    field = cond.pop("field", None)
    terms = tuple((op, float(v)) for op, v in cond.items()) or (("gte", float(len(rules))),)
    return CorrelationSpec(
        id="c1",
        title="t",
        type=kind,
        rules=rules,
        group_by=("host",),
        timespan_s=span_s,
        condition=Condition(terms, field),  # type: ignore[arg-type]
        generate=False,
    )


def m(t_s: float, rule: str = "a", value: str | None = None, eid: str | None = None) -> Match:
    return Match(int(t_s * S), rule, eid or f"{rule}-{t_s}-{value}", value, "h1", "s1")


def run(sp: CorrelationSpec, batches: list[tuple[list[Match], float]], key: str = "h1"):  # type: ignore[no-untyped-def]
    """Feed (matches, watermark seconds) batches through one key's state, as Spark would."""
    state, firings, late = KeyState(), [], []
    for new, wm in batches:
        step = advance(sp, key, state, new, int(wm * S))
        state = KeyState.from_json(step.state.to_json())  # what the state store keeps
        firings += step.firings
        late += step.late
    return firings, late, state


def test_event_count_fires_once_per_burst_when_the_watermark_reaches_its_start() -> None:
    sp = spec("event_count", gte=3)
    firings, _, _ = run(sp, [([m(10), m(20)], 0), ([m(30), m(40)], 5)])
    assert firings == []  # holds, but an earlier match could still arrive (watermark < 10)
    firings, _, _ = run(sp, [([m(10), m(20)], 0), ([m(30), m(40)], 10)])
    (f,) = firings
    assert (f.window_start_ms, f.window_end_ms, f.value) == (10 * S, 70 * S, 4)
    assert [x.time_ms for x in f.matches] == [10 * S, 20 * S, 30 * S, 40 * S]
    # more matches of the same window are absorbed, not a second finding
    firings, _, _ = run(sp, [([m(10), m(20), m(30)], 10), ([m(50), m(60)], 45)])
    assert len(firings) == 1


def test_event_count_below_threshold_slides_and_never_fires() -> None:
    sp = spec("event_count", gte=3)
    firings, _, state = run(sp, [([m(1), m(50), m(100), m(150)], 0), ([], 1000)])
    assert firings == [] and state.pending == []


def test_sliding_window_finds_a_burst_that_does_not_start_at_the_first_match() -> None:
    sp = spec("event_count", gte=3)
    firings, _, _ = run(sp, [([m(1), m(100), m(110), m(120)], 0), ([], 1000)])
    assert [f.window_start_ms for f in firings] == [100 * S]


def test_window_edges_are_inclusive() -> None:
    sp = spec("event_count", span_s=60, gte=2)
    at_edge, _, _ = run(sp, [([m(1), m(61)], 0), ([], 500)])
    assert len(at_edge) == 1 and at_edge[0].value == 2
    past_edge, _, _ = run(
        sp, [([m(0), Match(60 * S + 1, "a", "x", None, "h1", "s1")], 0), ([], 500)]
    )
    assert past_edge == []


def test_group_by_keys_never_combine() -> None:
    sp = spec("event_count", gte=3)
    h1, _, _ = run(sp, [([m(1), m(2)], 0), ([], 500)], key="h1")
    h2, _, _ = run(sp, [([m(3)], 0), ([], 500)], key="h2")
    assert h1 == [] and h2 == []  # 3 matches in total, but never 3 on one host


def test_value_count_counts_distinct_values_of_the_field() -> None:
    sp = spec("value_count", gte=3, field="CommandLine")  # type: ignore[arg-type]
    same, _, _ = run(
        sp, [([m(1, value="whoami"), m(2, value="whoami"), m(3, value="whoami")], 0), ([], 500)]
    )
    assert same == []
    distinct, _, _ = run(
        sp,
        [
            (
                [
                    m(1, value="whoami"),
                    m(2, value="net user"),
                    m(3, value=None),
                    m(4, value="ipconfig"),
                ],
                0,
            ),
            ([], 500),
        ],
    )
    assert [f.value for f in distinct] == [3]


def test_temporal_needs_every_rule_in_any_order() -> None:
    sp = spec("temporal", rules=("a", "b", "c"))
    two, _, _ = run(sp, [([m(1, "a"), m(2, "b"), m(3, "a")], 0), ([], 500)])
    assert two == []
    any_order, _, _ = run(sp, [([m(1, "c"), m(2, "a"), m(3, "b")], 0), ([], 500)])
    assert [f.value for f in any_order] == [3]


def test_temporal_ordered_refuses_out_of_order_sequences() -> None:
    sp = spec("temporal_ordered", rules=("a", "b", "c"))
    wrong, _, _ = run(sp, [([m(1, "c"), m(2, "a"), m(3, "b")], 0), ([], 500)])
    assert wrong == []
    right, _, _ = run(sp, [([m(1, "b"), m(2, "a"), m(3, "b"), m(4, "c")], 0), ([], 500)])
    assert [f.value for f in right] == [3]
    # arrival order does not matter, event time does: the same events sent backwards fire
    backwards, _, _ = run(sp, [([m(4, "c")], 0), ([m(3, "b")], 0), ([m(2, "a")], 0), ([], 500)])
    assert len(backwards) == 1


def test_temporal_ordered_counts_the_ordered_prefix() -> None:
    sp = spec("temporal_ordered", rules=("a", "b", "c"))
    assert measure(sp, [m(1, "a"), m(2, "c"), m(3, "b")]) == 2
    assert measure(sp, [m(1, "b"), m(1, "a")]) == 2  # same millisecond counts as in order


def test_upper_bounded_conditions_wait_for_the_window_to_close() -> None:
    sp = spec("event_count", lt=3)
    early, _, _ = run(sp, [([m(1), m(10)], 0), ([], 30)])
    assert early == []  # a third match could still arrive
    closed, _, state = run(sp, [([m(1), m(10)], 0), ([], 61)])
    assert [f.value for f in closed] == [2] and state.pending == []
    too_many, _, _ = run(sp, [([m(1), m(10), m(20)], 0), ([], 61)])
    assert too_many == []


def test_range_fires_only_inside_the_range() -> None:
    sp = spec("event_count", gte=2, lte=3)
    counts = {}
    for n in range(1, 6):
        firings, _, _ = run(sp, [([m(i) for i in range(1, n + 1)], 0), ([], 500)])
        counts[n] = [f.value for f in firings]
    assert counts == {1: [], 2: [2], 3: [3], 4: [], 5: []}


def test_late_matches_are_reported_not_counted_but_in_time_out_of_order_ones_count() -> None:
    sp = spec("event_count", gte=3)
    firings, late, _ = run(sp, [([m(100), m(110)], 0), ([m(105)], 104), ([m(90)], 104), ([], 500)])
    assert [x.match.time_ms for x in late] == [90 * S]
    assert late[0].watermark_ms == 104 * S
    assert [f.value for f in firings] == [3]  # 105 arrived out of order but within lateness


def test_a_match_exactly_at_the_watermark_is_late() -> None:
    step = advance(spec("event_count", gte=1), "h1", KeyState(), [m(10)], 10 * S)
    assert len(step.late) == 1 and step.firings == []


def test_replayed_matches_are_counted_once() -> None:
    sp = spec("event_count", gte=3)
    a, b = m(1, eid="e1"), m(2, eid="e2")
    firings, _, _ = run(sp, [([a, b], 0), ([a, b], 0), ([], 500)])
    assert firings == []


def test_restart_from_saved_state_mid_window_fires_exactly_once() -> None:
    sp = spec("event_count", span_s=60, gte=4)
    first = advance(sp, "h1", KeyState(), [m(10), m(20)], 0)
    saved = first.state.to_json()  # the checkpoint
    second = advance(sp, "h1", KeyState.from_json(saved), [m(30), m(40)], 15 * S)
    again = advance(sp, "h1", KeyState.from_json(saved), [m(30), m(40)], 15 * S)  # replayed batch
    assert len(second.firings) == len(again.firings) == 1
    assert second.firings[0].finding_id == again.firings[0].finding_id
    after = advance(sp, "h1", second.state, [m(50)], 45 * S)
    assert after.firings == [] and after.absorbed == 1


def test_deadline_says_when_the_key_needs_the_watermark() -> None:
    sp = spec("event_count", gte=3)
    waiting = advance(sp, "h1", KeyState(), [m(10)], 0)
    assert waiting.deadline_ms == 70 * S  # the window's end
    ready = advance(sp, "h1", KeyState(), [m(10), m(11), m(12)], 0)
    assert ready.deadline_ms == 10 * S  # fires once the watermark reaches the start
    done = advance(sp, "h1", ready.state, [], 10 * S)
    assert len(done.firings) == 1 and done.deadline_ms == 70 * S
    gone = advance(sp, "h1", done.state, [], 70 * S)
    assert gone.empty
