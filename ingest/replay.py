"""Replay real log files into Kafka as a fleet of sensors would send them, at a set rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ingest.producer import EventProducer
from ingest.sources import iter_items


@dataclass
class ReplayResult:
    sent: int
    rejected: int
    failed: int
    seconds: float
    errors: list[str]


class RateLimiter:
    """Spread sends evenly at ``rate`` per second (``None`` or 0: as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def replay(
    paths: Iterable[Path],
    producer: EventProducer,
    *,
    rate: float | None = None,
    limit: int | None = None,
    tenant_id: str = "default",
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Send every record of ``paths``: valid events to the events topic, rejects to the DLQ."""
    started = time.monotonic()
    limiter = RateLimiter(rate)
    for seen, item in enumerate(iter_items(paths, tenant_id=tenant_id), start=1):
        if limit is not None and seen > limit:
            break
        limiter.wait()
        if item.event is not None:
            producer.send_event(item.event)
        else:
            producer.send_reject(item.raw, item.reason or "unknown", item.origin)
        if progress and seen % 5000 == 0:
            progress(producer.counts.sent, producer.counts.rejected)
    producer.flush()
    c = producer.counts
    return ReplayResult(c.sent, c.rejected, c.failed, time.monotonic() - started, list(c.errors))
