"""Rate limits per sensor: token buckets of events and of decoded bytes, with the wait a
429 should announce.

Pure (the caller passes the clock), so the arithmetic is unit-tested without sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens if there are enough and return 0, else take nothing and
        return the seconds until there will be enough (what Retry-After should say)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if amount <= self.tokens:
            self.tokens -= amount
            return 0.0
        if amount > self.burst:
            return math.inf
        return (amount - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key (a credential's key id), created on first use."""

    def __init__(self, events_per_second: float, burst: float) -> None:
        self.rate = events_per_second
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, events: int, now: float) -> float:
        """0 when allowed, else the seconds to wait (``inf``: the batch can never fit)."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, updated=now)
        return bucket.take(events, now)


class ByteBudget:
    """Decoded bytes per key: charged after the fact (the size is known only once decoded)
    and allowed to go into debt; a key in debt is refused until it is paid back, before
    its next body is decoded. So decoding costs the sender, whatever the lines were."""

    def __init__(self, bytes_per_second: float, burst: float) -> None:
        self.rate = bytes_per_second
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, updated=now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket

    def debt(self, key: str, now: float) -> float:
        """Seconds until ``key`` is out of debt (0: it may send)."""
        if self.rate <= 0:
            return 0.0
        tokens = self._bucket(key, now).tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def charge(self, key: str, amount: int, now: float) -> None:
        if self.rate > 0:
            self._bucket(key, now).tokens -= amount


def retry_after_header(seconds: float) -> str:
    """Retry-After wants whole seconds; never announce 0 (the client would spin)."""
    return str(max(1, math.ceil(seconds)))
