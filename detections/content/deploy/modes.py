"""Per-rule deployment modes and where a rule's findings go under each.

* ``active``: findings go to the analysts' findings index.
* ``shadow``: the rule runs, its findings go to the shadow index only (analysts don't see them).
* ``canary``: active for a deterministic fraction of sensors (or tenants), shadow elsewhere.
* ``disabled``: the kill switch; the rule is not evaluated at all.

Canary selection hashes (rule id, sensor or tenant id), so a sensor stays in or out of a
rule's canary across batches, restarts and executors, and different rules pick different
sensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

Mode = Literal["active", "shadow", "canary", "disabled"]
Destination = Literal["active", "shadow"]
MODES: tuple[str, ...] = ("active", "shadow", "canary", "disabled")
CANARY_KEYS: tuple[str, ...] = ("sensor", "tenant")


def canary_bucket(rule_id: str, key: str) -> float:
    """A stable number in [0, 1) for (rule, sensor-or-tenant)."""
    digest = hashlib.sha256(f"{rule_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class RuleMode:
    mode: Mode = "active"
    fraction: float | None = None  # canary only: share of sensors/tenants that get it active
    canary_by: str = "sensor"  # canary only: "sensor" or "tenant"
    reason: str | None = None
    set_by: str | None = None  # "bundle", "operator", "auto-demotion"
    at: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r} (expected one of {', '.join(MODES)})")
        if self.mode == "canary":
            if self.fraction is None or not 0.0 < self.fraction <= 1.0:
                raise ValueError("canary mode needs a fraction in (0, 1]")
            if self.canary_by not in CANARY_KEYS:
                raise ValueError(f"canary_by must be one of {', '.join(CANARY_KEYS)}")

    @property
    def evaluated(self) -> bool:
        """False only for the kill switch: a disabled rule is not evaluated."""
        return self.mode != "disabled"

    def destination(self, rule_id: str, tenant_id: str, sensor_id: str) -> Destination | None:
        """Where a finding of this rule on this event goes; None when the rule is disabled."""
        if self.mode == "disabled":
            return None
        if self.mode == "canary":
            key = sensor_id if self.canary_by == "sensor" else tenant_id
            return "active" if canary_bucket(rule_id, key) < (self.fraction or 0.0) else "shadow"
        return self.mode  # type: ignore[return-value]

    def describe(self) -> str:
        if self.mode == "canary":
            return f"canary {self.fraction:.0%} of {self.canary_by}s"
        return self.mode

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RuleMode:
        return cls(
            mode=doc.get("mode", "active"),
            fraction=doc.get("fraction"),
            canary_by=doc.get("canary_by", "sensor"),
            reason=doc.get("reason"),
            set_by=doc.get("set_by"),
            at=doc.get("at"),
        )


def parse_mode(text: str) -> RuleMode:
    """``active`` | ``shadow`` | ``disabled`` | ``canary:0.1`` | ``canary:0.1:tenant``."""
    parts = text.strip().split(":")
    if parts[0] != "canary":
        if len(parts) != 1:
            raise ValueError(f"{text!r}: only canary takes a fraction")
        return RuleMode(mode=parts[0])  # type: ignore[arg-type]
    if len(parts) not in (2, 3):
        raise ValueError(f"{text!r}: expected canary:FRACTION[:sensor|tenant]")
    return RuleMode(
        mode="canary", fraction=float(parts[1]), canary_by=parts[2] if len(parts) == 3 else "sensor"
    )
