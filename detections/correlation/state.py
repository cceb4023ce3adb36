"""The per-key correlation state machine: pure, so every semantic is unit-tested here.

One :class:`KeyState` per (correlation, group key). :func:`advance` adds the key's new
matches, given the event-time watermark, and returns firings and late reports:

* A match at or before the watermark is **late**: reported, never counted (Spark's own
  rule for late rows, so "late" means the same here and in the query's metrics).
* Windows are anchored at matches: the window of the earliest pending match at ``s`` is
  ``[s, s + timespan]``, both ends inclusive.
* Conditions that only more matches can satisfy (``gt``/``gte`` on a count type:
  :attr:`CorrelationSpec.decides_early`) fire as soon as they hold
  and the watermark has reached ``s`` (no earlier match can still arrive, so the window
  start, and with it the finding id, is final). If the window closes without holding,
  the window slides to the next pending match. Other conditions (``lt``, ``lte``, ``eq``,
  ``neq``, ranges) and every numeric type (``value_sum``/``avg``/``percentile``/
  ``median``) are decided when the watermark passes the window's end; the window is
  consumed either way.
* After a firing, matches up to the window's end are absorbed (they belong to the window
  that fired), so one burst fires once.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from detections.correlation.model import (
    DEFAULT_PERCENTILE,
    Condition,
    CorrelationSpec,
    correlation_finding_id,
)


@dataclass(frozen=True, order=True)
class Match:
    """One base-rule match as the correlation sees it."""

    time_ms: int
    rule: str
    event_id: str
    value: str | None = None  # value_count: the counted field's value
    host: str = ""
    sensor_id: str = ""
    tenant_id: str = "default"

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """(rule, tenant, sensor, event id): one match, however many sensors reuse an id."""
        return (self.rule, self.tenant_id, self.sensor_id, self.event_id)

    def to_list(self) -> list[object]:
        return [
            self.time_ms,
            self.rule,
            self.event_id,
            self.value,
            self.host,
            self.sensor_id,
            self.tenant_id,
        ]

    @classmethod
    def from_list(cls, raw: list[object]) -> Match:
        t, rule, event_id, value, host, sensor, tenant = raw
        return cls(
            int(str(t)),
            str(rule),
            str(event_id),
            None if value is None else str(value),
            str(host),
            str(sensor),
            str(tenant),
        )


@dataclass
class KeyState:
    pending: list[Match] = field(default_factory=list)
    # Matches at or before this time belong to a window that already fired.
    closed_until: int = -1
    # The key's own clock (detections.correlation.clock): the newest event time it has
    # seen, and the watermark a processing-time timeout already decided up to.
    newest_ms: int = -1
    floor_ms: int = -1
    # Where the window that fired last starts: a match in [closed_from, closed_until] is
    # that window's (a replay, or a straggler) and absorbed, never reported late.
    closed_from: int = -1

    def to_json(self) -> str:
        pending = [m.to_list() for m in self.pending]
        return json.dumps(
            [self.closed_until, pending, self.newest_ms, self.floor_ms, self.closed_from]
        )

    @classmethod
    def from_json(cls, text: str | None) -> KeyState:
        if not text:
            return cls()
        closed, pending, *clock = json.loads(text)  # states saved before the key clock: 2
        newest, floor, since = [*map(int, clock), -1, -1, -1][:3]
        return cls([Match.from_list(m) for m in pending], int(closed), newest, floor, since)


@dataclass(frozen=True)
class Firing:
    correlation_id: str
    group_key: str
    window_start_ms: int
    window_end_ms: int
    value: float
    matches: tuple[Match, ...]

    @property
    def tenant_id(self) -> str:
        return self.matches[0].tenant_id if self.matches else "default"

    @property
    def finding_id(self) -> str:
        return correlation_finding_id(
            self.correlation_id, self.group_key, self.window_start_ms, self.tenant_id
        )


@dataclass(frozen=True)
class Late:
    match: Match
    watermark_ms: int


@dataclass
class Step:
    state: KeyState
    firings: list[Firing] = field(default_factory=list)
    late: list[Late] = field(default_factory=list)
    absorbed: int = 0
    # Event time the watermark must pass for this key to make progress (None: nothing pending).
    deadline_ms: int | None = None

    @property
    def empty(self) -> bool:
        return not self.state.pending and self.deadline_ms is None


def number(value: str | None) -> float | None:
    """A match's ``value`` as a finite number, or None (missing, not a number, NaN, ±inf).

    Parsed as rsigma parses a string (Rust's ``f64::from_str``): an optional sign, digits,
    a decimal point, an exponent; ASCII only, no spaces and no ``_`` separators, which
    Python's ``float()`` would accept and rsigma would not. A match without a number still
    belongs to its window (it counts for nothing in the aggregate)."""
    if value is None or not value.isascii() or _NOT_RUST_FLOAT.search(value):
        return None
    try:
        parsed = float(value)
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None


_NOT_RUST_FLOAT = re.compile(r"[\s_]")


def percentile(values: list[float], rank: float) -> float:
    """The ``rank``-th percentile (0..100) of ``values`` by linear interpolation between
    closest ranks (Hyndman & Fan type 7, numpy's default, rsigma's ``percentile_linear_interp``):
    position ``rank/100 * (n - 1)`` in the sorted values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 1:
        return ordered[0]
    position = min(max(rank, 0.0), 100.0) / 100.0 * (n - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return ordered[lower]
    return ordered[lower] + (position - lower) * (ordered[upper] - ordered[lower])


def measure(spec: CorrelationSpec, window: list[Match]) -> float | None:
    """The number the condition is compared with, per correlation type; None when there is
    none (a numeric type over a window without a single number: it never fires)."""
    if spec.type == "event_count":
        return len(window)
    if spec.type == "value_count":
        return len({m.value for m in window if m.value is not None})
    if spec.type == "temporal":
        return len({m.rule for m in window})
    if spec.type == "temporal_ordered":
        # how many of the rules occur in the given order (a subsequence); matches at the
        # same millisecond count as in order.
        position = {rule: i for i, rule in reversed(list(enumerate(spec.rules)))}
        ordered = sorted(window, key=lambda m: (m.time_ms, position.get(m.rule, 0)))
        done = 0
        for match in ordered:
            if done < len(spec.rules) and match.rule == spec.rules[done]:
                done += 1
        return done
    numbers = [n for n in (number(m.value) for m in window) if n is not None]
    if not numbers:
        return None
    if spec.type == "value_sum":
        return math.fsum(numbers)
    if spec.type == "value_avg":
        return math.fsum(numbers) / len(numbers)
    if spec.type == "value_median":
        return percentile(numbers, 50)
    if spec.type == "value_percentile":
        rank = spec.condition.percentile
        return percentile(numbers, DEFAULT_PERCENTILE if rank is None else rank)
    raise ValueError(f"unknown correlation type {spec.type!r}")


def holds(condition: Condition, value: float | None) -> bool:
    """The condition on a measure; no measure never holds."""
    return value is not None and condition.holds(value)


def advance(
    spec: CorrelationSpec,
    group_key: str,
    state: KeyState,
    new: list[Match],
    watermark_ms: int,
    settled_ms: int | None = None,
) -> Step:
    """Add ``new`` matches to ``state`` at ``watermark_ms``; fire what is decided.

    ``settled_ms`` (default: the watermark) is the time up to which a window's start is
    taken as final for conditions that fire as soon as they hold. The per-key clock
    passes "always" (a key's matches come from few sensors, mostly in order): such a
    window fires at once, and a match that turns up later inside it is absorbed, so the
    firing and its id stay unique."""
    settled_until = watermark_ms if settled_ms is None else settled_ms
    step = Step(
        KeyState(
            list(state.pending),
            state.closed_until,
            state.newest_ms,
            state.floor_ms,
            state.closed_from,
        )
    )
    known = {m.identity for m in state.pending}
    for match in new:
        if match.identity in known or state.closed_from <= match.time_ms <= state.closed_until:
            step.absorbed += 1  # counted already, or in the window that fired
        elif match.time_ms <= watermark_ms:
            step.late.append(Late(match, watermark_ms))
        elif match.time_ms <= state.closed_until:
            step.absorbed += 1
        elif match.identity not in known:
            known.add(match.identity)
            step.state.pending.append(match)
    pending = sorted(step.state.pending)
    span = spec.timespan_ms
    cond = spec.condition
    early = spec.decides_early
    deadline: int | None = None
    while pending:
        start = pending[0].time_ms
        end = start + span
        window = [m for m in pending if m.time_ms <= end]
        value = measure(spec, window)
        closed = watermark_ms >= end
        settled = settled_until >= start
        decide = (settled and holds(cond, value)) if early else closed
        if decide and value is not None and holds(cond, value):
            step.firings.append(Firing(spec.id, group_key, start, end, value, tuple(window)))
            step.state.closed_until = end
            step.state.closed_from = start
            pending = pending[len(window) :]
        elif closed:
            pending = pending[1:] if early else pending[len(window) :]
        else:
            deadline = start if early and holds(cond, value) else end
            break
    step.state.pending = pending
    if deadline is None and step.state.closed_until > watermark_ms:
        deadline = step.state.closed_until  # forget the absorbed window once it is past
    step.deadline_ms = deadline
    return step
