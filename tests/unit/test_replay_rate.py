"""``ingest.replay.RateLimiter``: the rate it promises, without a wake-up per send."""

from __future__ import annotations

import pytest

from ingest import replay


def test_rate_limiter_keeps_the_rate_with_few_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(replay.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(replay.time, "sleep", sleep)
    limiter = replay.RateLimiter(4_000)
    for _ in range(4_000):
        limiter.wait()
    assert abs(clock[0] - 1.0) < 0.01  # 4,000 sends took one (simulated) second
    assert len(sleeps) <= 1.0 / limiter.tick + 1  # a sleep per tick, not per send
