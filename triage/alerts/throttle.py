"""Per-route throttling with a digest at window end. Pure (the caller passes the clock).

A route with ``throttle: {window: 15m, per: [rule, host], max: 1}`` sends the first
finding of each (tenant, rule, host) at once and opens a 15-minute window; the next
findings of that key in the window are held back and counted. When the window ends with
findings held back, :meth:`Throttler.due` returns one :class:`Digest` ("12 more ...") to
send to the route's destinations. The tenant is always part of the key, so a digest is
about one tenant's findings and goes only to that tenant's destinations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triage.alerts.config import Throttle
from triage.alerts.routing import Facts


@dataclass
class Window:
    start: float
    end: float
    sent: int = 0
    held: int = 0
    #: The latest held-back finding (its document id) the digest describes.
    sample: str = ""
    facts: Facts | None = None


@dataclass(frozen=True)
class Digest:
    route: str
    key: tuple[str, ...]
    count: int
    start: float
    end: float
    facts: Facts
    sample: str


def key_of(throttle: Throttle, f: Facts) -> tuple[str, ...]:
    values = {"rule": f.rule_id, "host": f.host.lower(), "tenant": f.tenant, "kind": f.kind}
    return (f.tenant, *(values[p] for p in throttle.per if p != "tenant"))


@dataclass
class Throttler:
    windows: dict[tuple[str, tuple[str, ...]], Window] = field(default_factory=dict)

    def admit(self, route: str, throttle: Throttle, f: Facts, doc_id: str, now: float) -> bool:
        """True: send it; False: held back for the window's digest."""
        k = (route, key_of(throttle, f))
        w = self.windows.get(k)
        if w is None or now >= w.end:
            w = self.windows[k] = Window(start=now, end=now + throttle.window)
        if w.sent < throttle.max:
            w.sent += 1
            return True
        w.held += 1
        w.sample, w.facts = doc_id, f
        return False

    def due(self, now: float, digest_routes: set[str]) -> list[Digest]:
        """Digests of the windows that ended (for routes with ``digest``), and forget
        every ended window."""
        out: list[Digest] = []
        for (route, key), w in list(self.windows.items()):
            if now < w.end:
                continue
            del self.windows[(route, key)]
            if w.held and w.facts is not None and route in digest_routes:
                out.append(Digest(route, key, w.held, w.start, w.end, w.facts, w.sample))
        return out
