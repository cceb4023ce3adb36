"""The gateway's Prometheus metrics: events in, duplicates, rejects by reason, refusals.

One :class:`GatewayMetrics` per app. With several worker processes
(``gateway serve --workers N``) each worker counts into prometheus_client's multiprocess
files (``PROMETHEUS_MULTIPROC_DIR``, set by the parent before it spawns them) and the
parent serves their sum on one metrics port; counters of a worker that died and was
restarted stay in the sum. Labels are reason codes of the gateway's own fixed vocabulary
(``parse``, ``pipeline``), never tenants, sensors or hosts.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")


def reason_label(reason: str) -> str:
    """A reason code as a label value; anything else (never expected) is ``other``, so a
    future free-text reason cannot grow the series without bound."""
    return reason if _CODE.fullmatch(reason) else "other"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "sigstream_gateway_events_accepted",
            "Events written to the events topic (all protocols: /v1/events, /_bulk, "
            "/v1/logs, syslog).",
            registry=r,
        )
        self.duplicates = Counter(
            "sigstream_gateway_events_duplicate",
            "Events not written again: their (tenant, sensor, event id) is already in Kafka.",
            registry=r,
        )
        self.rejected = Counter(
            "sigstream_gateway_events_rejected",
            "Events refused one by one (written to the DLQ with the reason), by reason.",
            ["reason"],
            registry=r,
        )
        self.refused = Counter(
            "sigstream_gateway_batches_refused",
            "Whole requests refused before any event was written (unauthorized, "
            "body_too_large, rate_limited, kafka_unavailable, ...), by reason.",
            ["reason"],
            registry=r,
        )
        self.batches = Counter(
            "sigstream_gateway_batches_delivered",
            "Requests whose events were delivered (acknowledged by Kafka).",
            registry=r,
        )

    def delivered(self, accepted: int, duplicates: int, reject_reasons: Iterable[str]) -> None:
        """One delivered batch's numbers."""
        self.batches.inc()
        if accepted:
            self.accepted.inc(accepted)
        if duplicates:
            self.duplicates.inc(duplicates)
        for reason, n in Tally(reject_reasons).items():
            self.rejected.labels(reason_label(reason)).inc(n)

    def refusal(self, reason: str) -> None:
        """One whole request refused."""
        self.refused.labels(reason_label(reason)).inc()
