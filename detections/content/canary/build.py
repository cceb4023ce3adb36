"""A canary round's events (pure): each template re-stamped for the reserved canary
tenant, sensor and host, with a fresh event id and the current time.

Fresh ids per round matter twice: the gateway drops (tenant, sensor, event id) keys it
has already delivered, and finding ids are derived from the event id, so a reused id would
be "already written" and a later round could never prove anything. The current time keeps
the canary inside every time window (grouping, sensor health, triage ranges) like live
telemetry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from detections.content.canary.templates import CanaryTemplate

#: Envelope fields the gateway (or the canary) sets; a test's own values must not travel.
DROPPED = ("received_time", "sent_time", "seq")


@dataclass(frozen=True)
class CanaryIdentity:
    """Who canaries claim to be: the reserved tenant, its one sensor, a recognisable host."""

    tenant: str
    sensor: str
    host: str


@dataclass(frozen=True)
class CanaryEvent:
    rule_id: str
    event_id: str
    source: str
    event: dict[str, Any]


def round_id(now: datetime) -> str:
    """A sortable round name: ``20261206T121500Z``."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def canary_event_id(round_name: str, rule_id: str, n: int) -> str:
    """Unique per round, rule and test; short enough for the schema's 128 characters."""
    digest = hashlib.sha256(f"{rule_id}\x1f{n}".encode()).hexdigest()[:12]
    return f"canary-{round_name}-{digest}-{n}"


def build_round(
    templates: Mapping[str, Sequence[CanaryTemplate]],
    identity: CanaryIdentity,
    now: datetime,
    round_name: str | None = None,
) -> list[CanaryEvent]:
    """The events of one round for every rule in ``templates``."""
    name = round_name or round_id(now)
    stamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    out: list[CanaryEvent] = []
    for rule_id in sorted(templates):
        for n, template in enumerate(templates[rule_id]):
            event = {k: v for k, v in template.event.items() if k not in DROPPED}
            event_id = canary_event_id(name, rule_id, n)
            event.update(
                tenant_id=identity.tenant,
                sensor_id=identity.sensor,
                host=identity.host,
                event_id=event_id,
                event_time=stamp,
            )
            out.append(CanaryEvent(rule_id, event_id, template.source, event))
    return out
