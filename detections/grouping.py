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

import yaml


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


def parse_config(data: dict[str, object] | None, default_window_s: int) -> GroupingConfig:
    """``{default: seconds, rules: {rule id: seconds}}`` -> GroupingConfig."""
    data = data or {}
    rules = data.get("rules") or {}
    if not isinstance(rules, dict):
        raise ValueError("grouping file: 'rules' must map rule ids to seconds")
    default = data.get("default", default_window_s)
    return GroupingConfig(int(str(default)), {str(k): int(v) for k, v in rules.items()})


@lru_cache(maxsize=8)
def load_config(path: Path | None, default_window_s: int) -> GroupingConfig:
    """The grouping config from ``path`` (YAML), cached per process (executors reuse it)."""
    if path is None:
        return GroupingConfig(default_window_s)
    return parse_config(yaml.safe_load(Path(path).read_text()), default_window_s)


@lru_cache(maxsize=1)
def current_config() -> GroupingConfig:
    """From the process settings (``SIGSTREAM_GROUP_WINDOW_S``, ``SIGSTREAM_GROUPING_FILE``)."""
    from sigstream.settings import Settings

    s = Settings()
    return load_config(s.grouping_file, s.group_window_s)
