"""Which finding a match belongs to: same tenant, rule and host within a tumbling window.

Tumbling windows (``floor(event time / window)``) make the group a pure function of the
match, so re-processing a Kafka batch lands every match in the same group again. The
window is configurable per rule; 0 turns grouping off (one finding per match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from common.safe_yaml import ContentError, expect_mapping, load_yaml_file, validated


@dataclass(frozen=True)
class GroupingConfig:
    default_window_s: int = 3600
    per_rule: dict[str, int] = field(default_factory=dict)

    def window_for(self, rule_id: str) -> int:
        return int(self.per_rule.get(rule_id, self.default_window_s))


def window_start(event_time: datetime, window_s: int) -> datetime:
    """Start of the tumbling window holding ``event_time`` (UTC, aligned to the epoch)."""
    epoch = int(event_time.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_s, tz=UTC)


def group_key(event_time: datetime, event_id: str, window_s: int) -> tuple[str, datetime | None]:
    """(key, window start): the window start when grouping, else the event id itself."""
    if window_s <= 0:
        return f"event:{event_id}", None
    start = window_start(event_time, window_s)
    return f"window:{window_s}:{start.isoformat()}", start


class _GroupingFile(BaseModel):
    default: int | None = Field(default=None, ge=0)
    rules: dict[str, int] | None = None


def parse_config(data: object, default_window_s: int) -> GroupingConfig:
    """``{default: seconds, rules: {rule id: seconds}}`` -> GroupingConfig; anything else
    (a list, text where seconds belong) is a :class:`ContentError` with the reason."""
    parsed = validated(_GroupingFile, expect_mapping(data, "grouping file"), "grouping file")
    per_rule = parsed.rules or {}
    if any(v < 0 for v in per_rule.values()):
        raise ContentError("grouping file: rules: window seconds must be >= 0")
    default = default_window_s if parsed.default is None else parsed.default
    return GroupingConfig(default, dict(per_rule))


@lru_cache(maxsize=8)
def load_config(path: Path | None, default_window_s: int) -> GroupingConfig:
    """The grouping config from ``path`` (YAML), cached per process (executors reuse it)."""
    if path is None:
        return GroupingConfig(default_window_s)
    try:
        return parse_config(load_yaml_file(path), default_window_s)
    except ContentError as exc:
        raise ContentError(f"{path}: {exc}") from None
