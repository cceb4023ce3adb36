"""Differential check of Sigma correlations: Sigstream's offline evaluator against rsigma.

For each of the eight correlation types (and a chain of correlations) this builds a small
rule set (base rules + correlations, one folder both engines read) and a stream of
episodes: each episode is one host's events, hours away from every other episode, made to
fire, not to fire, sit on a boundary, or carry values that are not numbers. Both engines
evaluate the same events:

* rsigma: ``rsigma engine eval --rules DIR --event @events.ndjson --include-event
  --suppress 5m`` (events flattened as ``bench.dataset.flat_event`` does, plus ``host``
  and ``@timestamp``). rsigma fires at the event that makes its trailing window hold, and
  by default again at every later event while it holds; ``--suppress 5m`` (the 5 m
  timespan: every single-level episode is shorter, the chain's bursts are 10 min apart)
  makes that one firing per burst. A correlation result carries no time of its own: it
  gets the time of the event whose detections precede it in the output (rsigma prints an
  event's detections, then the correlations it fired, chained ones included).
  A second run without ``--suppress`` gives, per group, rsigma's value at the episode's
  last event: where Sigstream's window is the whole episode, the two values must be equal
  (the measures themselves, not only the decisions, are compared).
* Sigstream: ``detections.correlation.offline.correlate_events`` over the same events in
  schema form, content loaded from the same folder (``query.load_content``).

Each episode has its own host (the group key). A firing of rsigma and one of Sigstream
agree when they are of the same correlation and key and rsigma's firing time lies inside
Sigstream's window ``[start, start + timespan]`` (paired one to one, in time order).
Episodes built to show a documented semantic difference (docs/correlations.md, "Sigstream
and rsigma") carry the reason; a disagreement without one is unexplained and makes the
command exit 1.

    python -m bench.correlation_rsigma [--rsigma PATH] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import progress
from bench.dataset import flat_event
from bench.rsigma import binary, version

T0 = datetime(2026, 5, 1, tzinfo=UTC)
EPISODE_GAP_S = 4 * 3600  # between episodes: more than any timespan + the suppression
SUPPRESS = "5m"
KEY_SEPARATOR = "\x1f"  # detections.correlation.finding_docs.KEY_SEPARATOR

#: Reasons a disagreement is expected (each documented in docs/correlations.md).
KNOWN = {
    "decided_at_close": "a numeric type is decided on the whole window when it closes; "
    "rsigma fires at the first event whose trailing window holds",
    "non_finite": "a 'nan' value: Sigstream ignores non-finite numbers, rsigma adds NaN to "
    "the sum (NaN compares false)",
    "rsigma_temporal_default": "temporal without a condition: rsigma defaults to gte 1 "
    "(any one rule), pySigma and the spec to every rule",
    "rsigma_percentile_unchecked": "rsigma 0.23 returns value_percentile's percentile "
    "without testing the condition (correlation/window.rs check_condition): it fires at "
    "every event",
}


def uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sigstream-bench-correlation:{name}"))


BASE_RULES = "\n---\n".join(
    f"""title: Base {x.upper()}
id: {uid(f"base_{x}")}
name: base_{x}
status: test
logsource: {{category: process_creation, product: windows}}
detection: {{sel: {{Image|endswith: '\\{x}.exe'}}, condition: sel}}
level: low"""
    for x in "ab"
)


def correlation(name: str, body: str, generate: bool = False) -> str:
    return (
        f"title: {name}\nid: {uid(name)}\nname: {name}\nstatus: test\nlevel: high\n"
        f"correlation:\n  generate: {str(generate).lower()}\n{body}"
    )


@dataclass(frozen=True)
class Episode:
    """One host's events: (seconds from the episode start, image, extra fields)."""

    label: str
    events: tuple[tuple[float, str, dict[str, str]], ...]
    # documented reasons the engines differ on this episode: (correlation name or "*", key)
    known: tuple[tuple[str, str], ...] = ()

    def reason(self, correlation: str) -> str | None:
        return next((k for name, k in self.known if name in ("*", correlation)), None)


@dataclass(frozen=True)
class Case:
    type: str
    correlations: tuple[str, ...]  # YAML documents
    episodes: tuple[Episode, ...]


def a(*offsets: float) -> tuple[tuple[float, str, dict[str, str]], ...]:
    return tuple((t, "a.exe", {}) for t in offsets)


Events = tuple[tuple[float, str, dict[str, str]], ...]


def values(pairs: Sequence[tuple[float, str | None]]) -> Events:
    """base_a events with ``Bytes`` (None: the field is absent)."""
    return tuple((t, "a.exe", {} if v is None else {"Bytes": v}) for t, v in pairs)


def users(pairs: Sequence[tuple[float, str | None]]) -> Events:
    """base_a events with ``User`` (None: the field is absent)."""
    return tuple((t, "a.exe", {} if v is None else {"User": v}) for t, v in pairs)


def numeric(kind: str, condition: str, name: str | None = None) -> tuple[str, ...]:
    return (
        correlation(
            name or kind,
            f"  type: {kind}\n  rules: base_a\n  group-by: [host]\n  timespan: 5m\n"
            f"  condition: {condition}\n",
        ),
    )


CLOSE = (("*", "decided_at_close"),)
UNCHECKED = (("*", "rsigma_percentile_unchecked"),)

# fmt: off
CASES: tuple[Case, ...] = (
    Case(
        "event_count",
        (
            correlation(
                "event_count",
                "  type: event_count\n  rules: base_a\n  group-by: [host]\n  timespan: 5m\n"
                "  condition: {gte: 3}\n",
            ),
        ),
        (
            Episode("3 in 60 s", a(0, 30, 60)),
            Episode("2 only", a(0, 30)),
            Episode("3 spread over 400 s", a(0, 200, 400)),
            Episode("5 in 40 s (one finding)", a(0, 10, 20, 30, 40)),
            Episode("3 on the inclusive edge (0, 150, 300 s)", a(0, 150, 300)),
            Episode("3 just past the edge (0, 150, 301 s)", a(0, 150, 301)),
        ),
    ),
    Case(
        "value_count",
        (
            correlation(
                "value_count",
                "  type: value_count\n  rules: base_a\n  group-by: [host]\n  timespan: 5m\n"
                "  condition: {field: User, gte: 3}\n",
            ),
        ),
        (
            Episode("3 users", users([(0, "u1"), (10, "u2"), (20, "u3")])),
            Episode("2 users, 4 events", users([(0, "u1"), (10, "u2"), (20, "u1"), (30, "u2")])),
            Episode("u1, no User, u2", users([(0, "u1"), (10, None), (20, "u2")])),
        ),
    ),
    Case(
        "temporal",
        (
            correlation(
                "temporal",
                "  type: temporal\n  rules: [base_a, base_b]\n  group-by: [host]\n"
                "  timespan: 5m\n",
            ),
            correlation(
                "temporal_all",
                "  type: temporal\n  rules: [base_a, base_b]\n  group-by: [host]\n"
                "  timespan: 5m\n  condition: {gte: 2}\n",
            ),
        ),
        (
            Episode("a then b in 200 s", ((0, "a.exe", {}), (200, "b.exe", {}))),
            Episode("b then a in 100 s", ((0, "b.exe", {}), (100, "a.exe", {}))),
            Episode("a then b 400 s apart", ((0, "a.exe", {}), (400, "b.exe", {})),
                    (("temporal", "rsigma_temporal_default"),)),
            Episode("a only", a(0, 10), (("temporal", "rsigma_temporal_default"),)),
        ),
    ),
    Case(
        "temporal_ordered",
        (
            correlation(
                "temporal_ordered",
                "  type: temporal_ordered\n  rules: [base_a, base_b]\n  group-by: [host]\n"
                "  timespan: 5m\n",
            ),
        ),
        (
            Episode("a then b", ((0, "a.exe", {}), (100, "b.exe", {}))),
            Episode("b then a", ((0, "b.exe", {}), (100, "a.exe", {}))),
            Episode("a and b in the same second", ((0, "a.exe", {}), (0, "b.exe", {}))),
            Episode("b, a, b", ((0, "b.exe", {}), (50, "a.exe", {}), (100, "b.exe", {}))),
        ),
    ),
    Case(
        "value_sum",
        numeric("value_sum", "{field: Bytes, gt: 100}"),
        (
            Episode("60 + 50 = 110", values([(0, "60"), (30, "50")])),
            Episode("60 + 40 = 100 (not > 100)", values([(0, "60"), (30, "40")])),
            Episode("not numbers are ignored: abc, absent, 1_000, ' 5', 120",
                    values([(0, "abc"), (10, None), (20, "1_000"), (25, " 5"), (30, "120")])),
            Episode("1e2 + 1 = 101", values([(0, "1e2"), (10, "1")])),
            Episode("80 + 30 then -20: 110 at 10 s, 90 at close",
                    values([(0, "80"), (10, "30"), (50, "-20")]), CLOSE),
            Episode("nan + 150", values([(0, "nan"), (10, "150")]), (("*", "non_finite"),)),
        ),
    ),
    Case(
        "value_avg",
        numeric("value_avg", "{field: Bytes, gt: 100}"),
        (
            Episode("10, 200: mean 105", values([(0, "10"), (10, "200")])),
            Episode("50, 60: mean 55", values([(0, "50"), (10, "60")])),
            Episode("200, 10, 10: 200 at first, mean 73.3 at close",
                    values([(0, "200"), (10, "10"), (20, "10")]), CLOSE),
            Episode("100, 102, x: mean 101", values([(0, "100"), (10, "102"), (20, "x")])),
        ),
    ),
    Case(
        "value_percentile",
        numeric("value_percentile", "{field: Bytes, percentile: 90, gte: 46}")
        + numeric("value_percentile", "{field: Bytes, percentile: 90, gte: 70}", "p90_gte_70"),
        (
            Episode("10..50: p90 = 46 (linear)", values([(i * 10, str(v)) for i, v in
                                                          enumerate([10, 20, 30, 40, 50])]),
                    UNCHECKED),
            Episode("10..40: p90 = 37", values([(i * 10, str(v)) for i, v in
                                                 enumerate([10, 20, 30, 40])]), UNCHECKED),
            Episode("1, 2, 3, 4, 100: p90 = 61.6 (linear), 100 (nearest rank)",
                    values([(i * 10, str(v)) for i, v in enumerate([1, 2, 3, 4, 100])]),
                    UNCHECKED),
        ),
    ),
    Case(
        "value_median",
        numeric("value_median", "{field: Bytes, gte: 25}"),
        (
            Episode("10, 20, 30, 40: median 25",
                    values([(0, "10"), (10, "20"), (20, "30"), (30, "40")])),
            Episode("10, 20, 30: median 20", values([(0, "10"), (10, "20"), (20, "30")])),
            Episode("40, 10, 10: 40 at first, median 10 at close",
                    values([(0, "40"), (10, "10"), (20, "10")]), CLOSE),
        ),
    ),
    Case(
        "chain",
        (
            correlation(
                "burst",
                "  type: event_count\n  rules: base_a\n  group-by: [host]\n  timespan: 5m\n"
                "  condition: {gte: 3}\n",
            ),
            correlation(
                "repeat",
                "  type: event_count\n  rules: burst\n  group-by: [host]\n  timespan: 1h\n"
                "  condition: {gte: 2}\n",
            ),
            correlation(
                "then",
                "  type: temporal_ordered\n  rules: [repeat, base_b]\n  group-by: [host]\n"
                "  timespan: 10m\n",
                generate=True,
            ),
        ),
        (
            Episode("2 bursts 10 min apart, then b",
                    (*a(0, 10, 20, 600, 610, 620), (700, "b.exe", {}))),
            Episode("1 burst, then b", (*a(0, 10, 20), (30, "b.exe", {}))),
            Episode("2 bursts, b before the second completes",
                    (*a(0, 10, 20, 600, 615, 620), (610, "b.exe", {}))),
            Episode("2 bursts 50 min apart", a(0, 10, 20, 3000, 3010, 3020)),
        ),
    ),
)
# fmt: on


# --- events --------------------------------------------------------------------------------


def case_events(case: Case) -> tuple[list[dict[str, Any]], dict[str, Episode]]:
    """Schema-form events of ``case`` in time order, and host -> episode."""
    from schemas.events import parse_event

    events: list[dict[str, Any]] = []
    hosts: dict[str, Episode] = {}
    for i, episode in enumerate(case.episodes):
        host = f"{case.type}-{i}"
        hosts[host] = episode
        start = T0 + timedelta(seconds=i * EPISODE_GAP_S)
        for j, (offset, image, extra) in enumerate(episode.events):
            raw: dict[str, object] = {
                "event_type": "process_creation",
                "sensor_id": f"s-{host}",
                "host": host,
                "event_id": f"{host}-{j}",
                "event_time": (start + timedelta(seconds=offset)).isoformat(),
                "logsource": {"product": "windows", "category": "process_creation"},
                "Image": f"C:\\Windows\\{image}",
                "User": extra.get("User"),
                "extra": {k: v for k, v in extra.items() if k != "User"},
            }
            events.append(parse_event(raw).model_dump(mode="json"))
    events.sort(key=lambda e: (e["event_time"], e["event_id"]))
    return events, hosts


def rsigma_event(event: dict[str, Any]) -> dict[str, Any]:
    flat = flat_event(event)
    flat["host"] = event["host"]
    flat["event_id"] = event["event_id"]
    flat["@timestamp"] = event["event_time"]
    return flat


def epoch_s(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


# --- the two engines -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fire:
    correlation: str  # id
    key: str
    time_s: int | None = None  # rsigma: when it fired
    window: tuple[int, int] | None = None  # sigstream: [start, end] seconds
    value: float | None = None


def run_rsigma(
    exe: str, rules: Path, events: list[dict[str, Any]], work: Path, suppress: str | None
) -> list[Fire]:
    events_file = work / "events.ndjson"
    events_file.write_text("".join(json.dumps(rsigma_event(e)) + "\n" for e in events))
    cmd = [
        exe, "engine", "eval", "--rules", str(rules), "--event", f"@{events_file}",
        "--include-event", "--output-format", "ndjson", "--color", "never",
        *(["--suppress", suppress] if suppress else []),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"rsigma failed ({out.returncode}): {out.stderr[-2000:]}")
    fires: list[Fire] = []
    now: int | None = None
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        result = json.loads(line)
        if "matched_selections" in result:  # a detection: the event being processed
            now = epoch_s(str(result["event"]["@timestamp"]))
            continue
        key = KEY_SEPARATOR.join(str(v) for _, v in result["group_key"])
        fires.append(
            Fire(str(result["rule_id"]), key, now, None, float(result["aggregated_value"]))
        )
    return fires


def run_sigstream(rules: Path, events: list[dict[str, Any]]) -> tuple[list[Fire], list[str]]:
    from detections.correlation.offline import correlate_events
    from detections.correlation.query import load_content

    content = load_content([rules])
    refused = [f"{r.rule_id}: {r.reason}: {r.message}" for r in content.rejections]
    fires = [
        Fire(spec.id, f.group_key, None, (f.window_start_ms // 1000, f.window_end_ms // 1000),
             f.value)
        for spec, f in correlate_events(content, events)
    ]  # fmt: skip
    return fires, refused


# --- comparison ----------------------------------------------------------------------------


@dataclass
class CaseResult:
    type: str
    correlations: int
    rsigma: int
    sigstream: int
    agreeing: int = 0
    values_compared: int = 0
    values_equal: int = 0
    explained: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def disagreeing(self) -> int:
        return len(self.explained) + len(self.unexplained)


def _pair(r: list[Fire], s: list[Fire]) -> tuple[int, list[Fire], list[Fire]]:
    """Pair rsigma firings with Sigstream windows containing their time, one to one in
    time order: (pairs, rsigma's unpaired, Sigstream's unpaired)."""
    left = sorted(s, key=lambda f: f.window or (0, 0))
    lone_r, pairs = [], 0
    for fire in sorted(r, key=lambda f: f.time_s or 0):
        hit = next(
            (x for x in left if x.window and x.window[0] <= (fire.time_s or -1) <= x.window[1]),
            None,
        )
        if hit is None:
            lone_r.append(fire)
        else:
            left.remove(hit)
            pairs += 1
    return pairs, lone_r, left


def compare(
    case: Case,
    hosts: dict[str, Episode],
    rs: list[Fire],
    ss: list[Fire],
    names: dict[str, str],
    last_values: dict[tuple[str, str], Fire] | None = None,
    last_event: dict[str, int] | None = None,
) -> CaseResult:
    result = CaseResult(case.type, len(case.correlations), len(rs), len(ss))
    by_rs: dict[tuple[str, str], list[Fire]] = {}
    by_ss: dict[tuple[str, str], list[Fire]] = {}
    for f in rs:
        by_rs.setdefault((f.correlation, f.key), []).append(f)
    for f in ss:
        by_ss.setdefault((f.correlation, f.key), []).append(f)
    t0 = int(T0.timestamp())
    for corr, key in sorted(set(by_rs) | set(by_ss)):
        pairs, lone_r, lone_s = _pair(by_rs.get((corr, key), []), by_ss.get((corr, key), []))
        result.agreeing += pairs
        if not lone_r and not lone_s:
            continue
        episode = hosts.get(key.split(KEY_SEPARATOR)[0])
        name = names.get(corr, corr)
        rs_text = ", ".join(f"fired at +{(f.time_s or t0) - t0}s value {f.value:g}" for f in lone_r)
        ss_text = ", ".join(
            f"window [+{f.window[0] - t0}s, +{f.window[1] - t0}s] value {f.value:g}"
            for f in lone_s
            if f.window
        )
        line = (
            f"{name} | {key} ({episode.label if episode else '?'}) | "
            f"rsigma only: {rs_text or '-'} | sigstream only: {ss_text or '-'}"
        )
        reason = episode.reason(name) if episode else None
        if reason:
            result.explained.append(f"{line} | {reason}: {KNOWN[reason]}")
        else:
            result.unexplained.append(line)
    # the measures: rsigma's value at the episode's last event vs Sigstream's window value,
    # where Sigstream has one window holding the whole episode
    for (corr, key), fires in sorted(by_ss.items()):
        last = (last_values or {}).get((corr, key))
        end = (last_event or {}).get(key)
        episode = hosts.get(key)
        if len(fires) != 1 or last is None or end is None or last.time_s != end:
            continue
        why = episode.reason(names.get(corr, corr)) if episode else "no episode"
        if why and why != "rsigma_percentile_unchecked":  # that bug leaves the value right
            continue
        assert episode is not None
        offsets = [t for t, _, _ in episode.events]
        window = fires[0].window
        if window is None or window[0] != end - int(max(offsets) - min(offsets)) or window[1] < end:
            continue
        result.values_compared += 1
        if (
            last.value is not None
            and fires[0].value is not None
            and math.isclose(last.value, fires[0].value, rel_tol=1e-9, abs_tol=1e-12)
        ):
            result.values_equal += 1
        else:
            result.unexplained.append(
                f"{names.get(corr, corr)} | {key} ({episode.label}) | value: rsigma "
                f"{last.value:g} at the last event, sigstream {fires[0].value:g}"
            )
    return result


def run_case(exe: str, case: Case, work: Path) -> CaseResult:
    rules = work / case.type / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "base.yml").write_text(BASE_RULES + "\n")
    (rules / "correlations.yml").write_text("\n---\n".join(case.correlations) + "\n")
    events, hosts = case_events(case)
    progress(f"{case.type}: {len(events)} events, {len(case.episodes)} episodes …")
    rs = run_rsigma(exe, rules, events, work / case.type, SUPPRESS)
    every = run_rsigma(exe, rules, events, work / case.type, None)
    last_values = {}
    for fire in every:  # in output order: the last one per group wins
        last_values[(fire.correlation, fire.key)] = fire
    last_event: dict[str, int] = {}
    for e in events:
        last_event[e["host"]] = max(last_event.get(e["host"], 0), epoch_s(e["event_time"]))
    ss, refused = run_sigstream(rules, events)
    names = {}
    for doc in case.correlations:
        name = doc.split("name: ", 1)[1].split("\n", 1)[0]
        names[uid(name)] = name
    result = compare(case, hosts, rs, ss, names, last_values, last_event)
    result.refused = refused
    result.unexplained += [f"sigstream refused {r}" for r in refused]
    return result


def table(results: Sequence[CaseResult]) -> str:
    head = ("type", "correlations", "rsigma firings", "sigstream firings", "agreeing",
            "values equal", "disagreeing (explained)", "unexplained")  # fmt: skip
    rows = [
        (r.type, str(r.correlations), str(r.rsigma), str(r.sigstream), str(r.agreeing),
         f"{r.values_equal}/{r.values_compared}", f"{r.disagreeing} ({len(r.explained)})",
         str(len(r.unexplained)))
        for r in results
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def compare_all(exe: str, work: Path, only: Sequence[str] = ()) -> list[CaseResult]:
    return [run_case(exe, c, work) for c in CASES if not only or c.type in only]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.correlation_rsigma",
        description="Run every Sigma correlation type (and a chain) through rsigma and "
        "Sigstream's offline evaluator on the same events; print agreement per type. "
        "Exit 1 on a disagreement no documented semantic difference explains, 2 when "
        "rsigma is missing.",
    )
    parser.add_argument("--rsigma", help="rsigma binary (default: $RSIGMA, PATH, ~/.cargo/bin)")
    parser.add_argument("--type", action="append", default=[], choices=[c.type for c in CASES],
                        help="only this case (repeatable)")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="write rules, events and outputs here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exe = args.rsigma or binary()
    if not exe:
        print("rsigma not found: cargo install rsigma (or pass --rsigma PATH)", file=sys.stderr)
        return 2
    progress(f"rsigma: {exe} ({version(exe)})")
    work = args.keep or Path(tempfile.mkdtemp(prefix="sigstream-corr-rsigma-"))
    try:
        results = compare_all(exe, work, args.type)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    for r in results:
        for line in r.explained:
            print(f"  explained   {r.type}: {line}")
        for line in r.unexplained:
            print(f"  UNEXPLAINED {r.type}: {line}")
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    totals = Counter(agreeing=sum(r.agreeing for r in results),
                     unexplained=sum(len(r.unexplained) for r in results))  # fmt: skip
    progress(f"agreeing {totals['agreeing']}, unexplained disagreements {totals['unexplained']}")
    return 1 if totals["unexplained"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
