"""value_sum, value_avg, value_percentile, value_median and chained correlations (issue 18):
measures against hand-computed numbers, when a window is decided, values that are not
numbers, the percentile definition, compile-time refusals, and chains end to end through
the engine's matcher and the offline evaluator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detections.compiler.plan import plan_rules
from detections.compiler.sigma_to_ir import compile_yaml
from detections.correlation.chain import (
    chain_match,
    downstream_of,
    evaluation_order,
    firing_time_ms,
    silent_correlation_ids,
)
from detections.correlation.compile import CorrelationSet, compile_correlations
from detections.correlation.model import Condition, CorrelationSpec
from detections.correlation.offline import correlate_events
from detections.correlation.query import CorrelationContent, runnable
from detections.correlation.state import (
    Firing,
    KeyState,
    Match,
    advance,
    measure,
    number,
    percentile,
)
from schemas.events import parse_event

S = 1000  # ms


def spec(kind: str, span_s: int = 60, pct: int | None = None, **cond: float) -> CorrelationSpec:
    terms = tuple((op, float(v)) for op, v in cond.items())
    return CorrelationSpec(
        id="c1",
        title="t",
        type=kind,
        rules=("a",),
        group_by=("host",),
        timespan_s=span_s,
        condition=Condition(terms, "Bytes", pct),
        generate=False,
    )


def m(t_s: float, value: str | None, rule: str = "a") -> Match:
    return Match(int(t_s * S), rule, f"{rule}-{t_s}-{value}", value, "h1", "s1")


def run(sp: CorrelationSpec, batches: list[tuple[list[Match], float]]) -> list[Firing]:
    """Feed (matches, watermark seconds) batches through one key's state, as Spark would."""
    state, firings = KeyState(), []
    for new, wm in batches:
        step = advance(sp, "h1", state, new, int(wm * S))
        state = KeyState.from_json(step.state.to_json())
        firings += step.firings
    return firings


def once(sp: CorrelationSpec, matches: list[Match]) -> list[Firing]:
    """Every match on time, then the end of time (the offline evaluator's schedule)."""
    return run(sp, [(matches, -1), ([], 10**9)])


# --- numbers and the percentile definition -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", 10.0),
        ("2.5", 2.5),
        ("-3", -3.0),
        ("+4", 4.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("5.", 5.0),
        (" 5", None),  # Python's float() strips spaces; Rust's f64::from_str does not
        ("5 ", None),
        ("1_000", None),  # Python reads 1000; Rust refuses
        ("١٢", None),  # Arabic-Indic digits: Python reads 12; Rust refuses
        ("abc", None),
        ("", None),
        ("nan", None),  # not finite: ignored, never poisons a sum
        ("inf", None),
        ("-Infinity", None),
        ("True", None),
        (None, None),
    ],
)
def test_number_parses_as_rsigma_does_and_drops_non_finite(
    text: str | None, expected: float | None
) -> None:
    assert number(text) == expected


def test_percentile_is_linear_interpolation_between_closest_ranks() -> None:
    values = [50.0, 10.0, 40.0, 20.0, 30.0]  # sorted: 10 20 30 40 50
    assert percentile(values, 0) == 10
    assert percentile(values, 100) == 50
    assert percentile(values, 50) == 30
    assert percentile(values, 25) == 20  # position 0.25 * 4 = 1 -> exactly 20
    assert percentile(values, 90) == pytest.approx(46)  # position 3.6: 40 + 0.6 * 10
    assert percentile(values, 95) == pytest.approx(48)  # position 3.8: 40 + 0.8 * 10
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5  # the median of an even count
    assert percentile([7.0], 99) == 7
    # not nearest-rank (which would give 50 for p90 of five values)
    assert percentile(values, 90) != 50


def test_measures_by_hand() -> None:
    window = [m(1, "10"), m(2, "20"), m(3, "x"), m(4, None), m(5, "60"), m(6, "-10")]
    # numbers: 10 20 60 -10 (the two others are in the window but not in the aggregate)
    assert measure(spec("value_sum", gt=0), window) == 80
    assert measure(spec("value_avg", gt=0), window) == 20
    assert measure(spec("value_median", gt=0), window) == 15  # sorted -10 10 20 60
    assert measure(spec("value_percentile", pct=75, gt=0), window) == 30  # 3*.75=2.25 -> 20+.25*40
    assert measure(spec("value_percentile", gt=0), window) == 15  # no percentile: p50
    assert measure(spec("value_sum", gt=0), [m(1, "x"), m(2, None)]) is None


# --- when the numeric types fire -------------------------------------------------------------


def test_value_sum_fires_at_window_close_and_respects_the_boundary() -> None:
    at = spec("value_sum", gte=100)
    assert not at.decides_early
    f, g = once(at, [m(0, "40"), m(30, "60"), m(90, "500")])
    # window [0, 60]: 40 + 60 = 100 >= 100; the 500 at 90 s is outside it: its own window
    assert (f.window_start_ms, f.window_end_ms, f.value) == (0, 60 * S, 100)
    assert [x.time_ms for x in f.matches] == [0, 30 * S]
    assert (g.window_start_ms, g.value) == (90 * S, 500)
    over = spec("value_sum", gt=100)
    assert [g.value for g in once(over, [m(0, "40"), m(30, "60"), m(90, "500")])] == [500]
    # a match exactly timespan after the first is in the window (both edges inclusive)
    (edge,) = once(over, [m(0, "40"), m(60, "61")])
    assert edge.value == 101


def test_value_sum_is_not_decided_early_negative_values_can_lower_it() -> None:
    sp = spec("value_sum", gt=100)
    # 80 + 30 = 110 > 100 after 10 s, but the window ends with -20: 90, no finding
    firings = run(sp, [([m(0, "80"), m(10, "30")], -1), ([m(50, "-20")], 20), ([], 61)])
    assert firings == []
    # without the negative value it fires, and only once the window [0, 60] has closed
    assert run(sp, [([m(0, "80"), m(10, "30")], -1), ([], 59)]) == []
    (f,) = run(sp, [([m(0, "80"), m(10, "30")], -1), ([], 30), ([], 60)])
    assert f.value == 110


def test_value_avg_is_the_mean_of_the_whole_window() -> None:
    sp = spec("value_avg", gt=100)
    # a large first value alone would be > 100 (rsigma fires there); the window's mean is 73.3
    assert once(sp, [m(0, "200"), m(10, "10"), m(20, "10")]) == []
    (f,) = once(sp, [m(0, "10"), m(10, "200")])
    assert f.value == 105
    low = spec("value_avg", lt=5)
    (g,) = once(low, [m(0, "2"), m(10, "4"), m(20, "6")])
    assert g.value == 4


def test_value_percentile_and_median_fire_on_the_hand_computed_value() -> None:
    p90 = spec("value_percentile", pct=90, gte=46)
    values = [m(i, v) for i, v in enumerate(["50", "10", "40", "20", "30"])]
    (f,) = once(p90, values)
    assert f.value == pytest.approx(46)
    assert once(spec("value_percentile", pct=90, gt=46.5), values) == []
    med = spec("value_median", eq=25)
    (g,) = once(med, [m(0, "10"), m(1, "20"), m(2, "30"), m(3, "40")])
    assert g.value == 25
    assert once(spec("value_median", eq=25), [m(0, "10"), m(1, "20"), m(2, "30")]) == []


def test_matches_without_a_number_count_for_nothing_and_an_empty_aggregate_never_fires() -> None:
    # a lt condition over a window with no number would be vacuously "sum 0 < 10": no finding
    assert once(spec("value_sum", lt=10), [m(0, "n/a"), m(5, None)]) == []
    assert once(spec("value_avg", lt=10), [m(0, "n/a")]) == []
    # the numbers among them still count, and the others do not dilute an average
    (f,) = once(spec("value_avg", gte=30), [m(0, "n/a"), m(5, "30"), m(6, "")])
    assert f.value == 30 and len(f.matches) == 3


def test_count_types_still_decide_early_numeric_types_never() -> None:
    early = {
        kind: spec(kind, gte=1).decides_early
        for kind in (
            "event_count",
            "value_count",
            "temporal",
            "temporal_ordered",
            "value_sum",
            "value_avg",
            "value_percentile",
            "value_median",
        )
    }
    assert [k for k, v in early.items() if v] == [
        "event_count",
        "value_count",
        "temporal",
        "temporal_ordered",
    ]
    assert not spec("event_count", lte=3).decides_early


# --- compile -------------------------------------------------------------------------------

BASE = """
title: Base A
id: 00000000-0000-4000-8000-00000000000a
name: base_a
logsource: {category: process_creation, product: windows}
detection: {sel: {Image|endswith: '\\\\a.exe'}, condition: sel}
level: low
---
title: Base B
id: 00000000-0000-4000-8000-00000000000b
name: base_b
logsource: {category: process_creation, product: windows}
detection: {sel: {Image|endswith: '\\\\b.exe'}, condition: sel}
level: low
"""
A, B = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


def uid(name: str) -> str:
    """The id of the correlation ``name`` in these tests (pySigma wants UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sigstream-test:{name}"))


def corr(name: str, body: str, generate: bool = False) -> str:
    return (
        f"---\ntitle: {name}\nid: {uid(name)}\nname: {name}\nlevel: high\ncorrelation:\n"
        f"  generate: {str(generate).lower()}\n{body}"
    )


def compiled(text: str) -> tuple[CorrelationContent, CorrelationSet]:
    rules, rejections = compile_yaml(BASE, path="base.yml")
    plan = plan_rules(rules, rejections)
    cs = compile_correlations([("base.yml", BASE), ("corr.yml", text)], plan)
    return runnable(plan, cs.specs, cs.rejections), cs


def test_numeric_types_compile_with_field_and_percentile() -> None:
    text = (
        corr("s", "  type: value_sum\n  rules: base_a\n  group-by: [host]\n  timespan: 5m\n"
             "  condition: {field: Bytes, gt: 1000}\n")
        + corr("p", "  type: value_percentile\n  rules: base_a\n  timespan: 5m\n"
               "  condition: {field: Bytes, percentile: 95, gte: 10}\n")
        + corr("q", "  type: value_percentile\n  rules: base_a\n  timespan: 5m\n"
               "  condition: {field: Bytes, gte: 10}\n")
    )  # fmt: skip
    _, cs = compiled(text)
    assert not cs.rejections, cs.rejections
    s, p, q = cs.specs
    assert (s.type, s.condition.field, s.condition.terms) == ("value_sum", "Bytes", (("gt", 1000),))
    assert (p.condition.percentile, p.condition.describe()) == (95, "p95(Bytes) gte 10")
    assert q.condition.percentile is None  # measured as p50, rsigma's default


def test_range_conditions_work_for_numeric_types() -> None:
    _, cs = compiled(
        corr("r", "  type: value_avg\n  rules: base_a\n  timespan: 5m\n"
             "  condition: {field: Bytes, gte: 10, lt: 20}\n")
    )  # fmt: skip
    (sp,) = cs.specs
    assert sp.condition.terms == (("gte", 10.0), ("lt", 20.0))


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("{gt: 10}", "parse_error"),  # pySigma: no field reference
        ("{field: Bytes, percentile: 101, gt: 1}", "bad_condition"),
        ("{field: Bytes, percentile: 95.5, gt: 1}", "bad_condition"),
        ("{field: Bytes, percentile: -1, gt: 1}", "bad_condition"),
        ("{field: [Bytes, Packets], percentile: 50, gt: 1}", "bad_condition"),
    ],
)
def test_bad_numeric_conditions_are_refused(condition: str, reason: str) -> None:
    _, cs = compiled(
        corr("bad", f"  type: value_percentile\n  rules: base_a\n  timespan: 5m\n"
             f"  condition: {condition}\n")
    )  # fmt: skip
    assert not cs.specs
    assert [r.reason for r in cs.rejections] == [reason]


# --- chains --------------------------------------------------------------------------------

BURST = (
    "  type: event_count\n  rules: base_a\n  group-by: [host]\n  timespan: 5m\n"
    "  condition: {gte: 3}\n"
)
REPEAT = (
    "  type: event_count\n  rules: burst\n  group-by: [host]\n  timespan: 1h\n"
    "  condition: {gte: 2}\n"
)


def test_chain_resolves_by_name_orders_upstream_first_and_lists_upstream() -> None:
    # the downstream is written first; compile and evaluation_order put burst first
    _, cs = compiled(corr("repeat", REPEAT) + corr("burst", BURST))
    assert not cs.rejections
    assert [s.id for s in cs.specs] == [uid("burst"), uid("repeat")]
    burst, repeat = cs.specs
    assert repeat.rules == (uid("burst"),) and repeat.upstream == (uid("burst"),)
    assert burst.upstream == ()
    assert evaluation_order([repeat, burst]) == (burst, repeat)
    assert downstream_of(cs.specs) == {uid("burst"): (repeat,)}


def test_cycles_and_unknown_references_are_refused_the_others_load() -> None:
    x = "  type: event_count\n  rules: [base_a, y]\n  timespan: 5m\n  condition: {gte: 1}\n"
    y = "  type: event_count\n  rules: x\n  timespan: 5m\n  condition: {gte: 1}\n"
    selfish = "  type: event_count\n  rules: selfish\n  timespan: 5m\n  condition: {gte: 1}\n"
    over_x = "  type: event_count\n  rules: x\n  timespan: 1h\n  condition: {gte: 1}\n"
    unknown = "  type: event_count\n  rules: [burst, nope]\n  timespan: 5m\n  condition: {gte: 1}\n"
    _, cs = compiled(
        corr("x", x) + corr("y", y) + corr("selfish", selfish) + corr("over_x", over_x)
        + corr("burst", BURST) + corr("unknown", unknown)
    )  # fmt: skip
    assert [s.id for s in cs.specs] == [uid("burst")]
    reasons = {r.rule_id: (r.reason, r.message) for r in cs.rejections}
    assert reasons[uid("x")][0] == reasons[uid("y")][0] == "correlation_cycle"
    assert f"{uid('x')} -> {uid('y')} -> {uid('x')}" in reasons[uid("x")][1]
    assert reasons[uid("selfish")][0] == "correlation_cycle"
    assert f"{uid('selfish')} -> {uid('selfish')}" in reasons[uid("selfish")][1]
    assert reasons[uid("over_x")][0] == "upstream_not_loaded"
    assert "correlation_cycle" in reasons[uid("over_x")][1]
    assert reasons[uid("unknown")][0] == "unknown_rule"


def test_a_chain_must_group_by_what_its_upstream_groups_by() -> None:
    by_user = (
        "  type: event_count\n  rules: burst\n  group-by: [User]\n  timespan: 1h\n"
        "  condition: {gte: 2}\n"
    )
    aliased = (
        "  type: event_count\n  rules: burst\n  group-by: [machine]\n  timespan: 1h\n"
        "  aliases: {machine: {burst: host}}\n  condition: {gte: 2}\n"
    )
    count_user = (
        "  type: value_count\n  rules: burst\n  timespan: 1h\n  condition: {field: User, gte: 2}\n"
    )
    _, cs = compiled(
        corr("burst", BURST) + corr("by_user", by_user) + corr("aliased", aliased)
        + corr("count_user", count_user)
    )  # fmt: skip
    assert [s.id for s in cs.specs] == [uid("burst"), uid("aliased")]
    reasons = {r.rule_id: r.reason for r in cs.rejections}
    assert reasons == {uid("by_user"): "chain_group_by", uid("count_user"): "chain_field"}


T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def ev(image: str, seconds: float, eid: str, host: str = "WS1", **extra: Any) -> dict[str, Any]:
    return parse_event(
        {
            "event_type": "process_creation",
            "sensor_id": f"s-{host}",
            "host": host,
            "event_id": eid,
            "event_time": (T0 + timedelta(seconds=seconds)).isoformat(),
            "logsource": {"product": "windows", "category": "process_creation"},
            "Image": f"C:\\\\{image}",
            "extra": {k: str(v) for k, v in extra.items()},
        }
    ).model_dump(mode="json")


def burst(t0: float, host: str, n: int = 3, step: float = 10) -> list[dict[str, Any]]:
    return [ev("a.exe", t0 + i * step, f"{host}-{t0}-{i}", host) for i in range(n)]


def test_two_level_chain_end_to_end() -> None:
    """base_a -> burst (3 in 5 m per host) -> repeat (2 bursts in 1 h per host) -> then
    (temporal_ordered: a repeat followed by base_b within 10 m, per host)."""
    then = (
        "  type: temporal_ordered\n  rules: [repeat, base_b]\n  group-by: [host]\n  timespan: 10m\n"
    )
    content, cs = compiled(
        corr("burst", BURST) + corr("repeat", REPEAT) + corr("then", then, generate=True)
    )
    assert not cs.rejections
    events = (
        burst(0, "WS1")  # burst at 0..20 s
        + burst(600, "WS1")  # burst at 600..620 s: second burst within 1 h -> repeat
        + [ev("b.exe", 700, "b1", "WS1")]  # after the repeat (completed at 620 s) -> then
        + burst(0, "WS2")  # one burst only: no repeat on WS2
        + [ev("b.exe", 30, "b2", "WS2")]
        + burst(0, "WS3")
        + [ev("b.exe", 610, "b3", "WS3")]  # base_b before WS3's repeat completes ...
        + burst(600, "WS3")  # ... at 620 s: not "followed by"
    )
    t0 = int(T0.timestamp() * S)
    got = [
        (s.id, f.group_key, (f.window_start_ms - t0) // S, f.value)
        for s, f in correlate_events(content, events)
    ]
    assert got == [
        (uid("burst"), "WS1", 0, 3),
        (uid("burst"), "WS1", 600, 3),
        (uid("burst"), "WS2", 0, 3),
        (uid("burst"), "WS3", 0, 3),
        (uid("burst"), "WS3", 600, 3),
        # a burst completes at its third match: 20 s and 620 s
        (uid("repeat"), "WS1", 20, 2),
        (uid("repeat"), "WS3", 20, 2),
        (uid("then"), "WS1", 620, 2),
    ]
    # generate: true on "then" keeps "repeat" written; "repeat" (generate: false) silences burst
    assert silent_correlation_ids(cs.specs) == frozenset({uid("burst")})


def test_chain_match_time_key_and_identity() -> None:
    _, cs = compiled(corr("burst", BURST) + corr("repeat", REPEAT))
    up, down = cs.specs
    matches = tuple(Match(t * S, A, f"e{t}", None, "WS9", "s9", "t1") for t in (0, 10, 20, 30))
    firing = Firing(up.id, "WS9", 0, 300 * S, 4, matches)
    key, match = chain_match(up, firing, down)
    assert key == "WS9"
    # the condition (>= 3) first held with the match at 20 s: rsigma fires there too
    assert firing_time_ms(up, firing) == 20 * S
    assert match == Match(20 * S, up.id, firing.finding_id, None, "WS9", "s9", "t1")
    # a window decided at close (lte) is complete at its last match
    closing = CorrelationSpec(**{**up.__dict__, "condition": Condition((("lte", 5.0),))})
    assert firing_time_ms(closing, firing) == 30 * S


def test_a_chained_finding_points_at_the_upstream_findings() -> None:
    from detections.correlation.finding_docs import correlation_finding

    _, cs = compiled(corr("burst", BURST) + corr("repeat", REPEAT))
    up, down = cs.specs
    bursts = [
        Firing(up.id, "WS9", t * S, (t + 300) * S, 3,
               tuple(Match((t + i) * S, A, f"e{t}{i}", None, "WS9", "s9") for i in range(3)))
        for t in (0, 600)
    ]  # fmt: skip
    matches = [chain_match(up, f, down)[1] for f in bursts]
    (firing,) = run_spec(down, matches)
    info = correlation_finding(down, firing).sigstream.correlation
    assert info is not None
    assert info.base_findings == [f.finding_id for f in bursts]
    assert info.rules == [up.id]


def run_spec(sp: CorrelationSpec, matches: list[Match]) -> list[Firing]:
    step = advance(sp, "WS9", KeyState(), matches, -1)
    return advance(sp, "WS9", step.state, [], 10**15).firings
