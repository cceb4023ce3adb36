"""Per-key event time: every (correlation, tenant, group key) runs on its own clock. Pure.

Endpoint data arrives late per sensor: a laptop that was offline uploads its spool when it
reconnects, long after the rest of the fleet has moved on. One global watermark calls that
whole upload late and never correlates it. Here a key's watermark is its own newest event
time minus the allowed lateness (``ClockConfig.lateness_ms``: how far out of order one
group's matches may come), so a 45-minute-old burst is on time for the host it happened on.

* A match at or behind its key's watermark (as it stood before the match's micro-batch,
  Spark's own rule) is **late**: reported, never counted. With a **horizon**
  (``horizon_ms``; off by default, since replays of recorded telemetry are months old),
  so is a match older than that before the processing time, whatever its key.
* Conditions that only more matches can satisfy fire as soon as they hold (the key's
  matches come from few sensors, mostly in order); a match that turns up later inside a
  window that fired is absorbed, so one burst fires once and its id is unique.
* A quiet key's clock moves in processing time: when nothing arrives for as long as its
  next decision needs (the event time its watermark must reach, minus where it is; at most
  ``ttl_ms``), the timer decides it as if its clock had got there. A key with nothing
  pending is forgotten, so state is bounded by the keys active within ``ttl_ms``.

``detections.correlation.query`` runs this in ``applyInPandasWithState`` with
processing-time timeouts; ``detections.correlation.state.advance`` holds the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from detections.correlation.model import CorrelationSpec
from detections.correlation.state import Firing, KeyState, Late, Match, Step, advance

#: "Always": window starts are final at once under the per-key clock.
_SETTLED = 2**62


@dataclass(frozen=True)
class ClockConfig:
    lateness_ms: int = 60_000  # how far behind its key's newest match a match still counts
    horizon_ms: int | None = None  # older than this (processing time): late for any key
    ttl_ms: int = 3_600_000  # the longest a quiet key waits (processing time) for a decision
    min_timer_ms: int = 1_000  # timers closer than this wait this long (bounds timer churn)


@dataclass
class KeyStep:
    state: KeyState
    firings: list[Firing] = field(default_factory=list)
    late: list[Late] = field(default_factory=list)
    timer_ms: int | None = None  # processing-time duration until the key's next decision

    @property
    def remove(self) -> bool:
        """Nothing pending and no window to remember: drop the key's state."""
        return self.timer_ms is None


def watermark(state: KeyState, cfg: ClockConfig) -> int:
    """The key's watermark: its newest event time minus the lateness, or where a timer
    last decided it, whichever is later (-1: a key that has seen nothing)."""
    own = state.newest_ms - cfg.lateness_ms if state.newest_ms >= 0 else -1
    return max(own, state.floor_ms)


def on_matches(
    spec: CorrelationSpec,
    group_key: str,
    state: KeyState,
    new: Sequence[Match],
    now_ms: int,
    cfg: ClockConfig,
) -> KeyStep:
    """Add one micro-batch's matches of a key; fire what is decided."""
    horizon = now_ms - cfg.horizon_ms if cfg.horizon_ms is not None else -(2**62)
    too_old = [Late(m, horizon) for m in new if m.time_ms < horizon]
    fresh = [m for m in new if m.time_ms >= horizon]
    before = watermark(state, cfg)
    # Lateness is judged against the watermark before this batch; windows are then
    # decided with the clock the batch moved.
    first = advance(spec, group_key, state, fresh, before, _SETTLED)
    moved = first.state
    moved.newest_ms = max([state.newest_ms, *(m.time_ms for m in fresh if m.time_ms > before)])
    after = watermark(moved, cfg)
    second = advance(spec, group_key, moved, [], after, _SETTLED)
    return _step(second, after, [*first.firings, *second.firings], [*too_old, *first.late], cfg)


def on_timer(spec: CorrelationSpec, group_key: str, state: KeyState, cfg: ClockConfig) -> KeyStep:
    """The key was quiet until its timer: move its clock to its next decision point."""
    now = watermark(state, cfg)
    probe = advance(spec, group_key, state, [], now, _SETTLED)
    if probe.deadline_ms is None:
        return _step(probe, now, probe.firings, [], cfg)
    reached = max(now, probe.deadline_ms)
    decided = advance(spec, group_key, probe.state, [], reached, _SETTLED)
    decided.state.floor_ms = max(decided.state.floor_ms, reached)
    return _step(decided, reached, [*probe.firings, *decided.firings], [], cfg)


def _step(
    done: Step, at: int, firings: list[Firing], late: list[Late], cfg: ClockConfig
) -> KeyStep:
    timer = None
    if done.deadline_ms is not None:
        timer = min(max(done.deadline_ms - at, cfg.min_timer_ms), cfg.ttl_ms)
    return KeyStep(done.state, firings, late, timer)
