"""The correlation feed: what the detection pass hands the correlation stage. Pure.

The detection pass is the only reader and parser of ``telemetry.events``. When one of its
matches is a base rule of a correlation, it publishes one compact record per
(correlation, match) to the matches topic (``SIGSTREAM_MATCHES_TOPIC``): the correlation
id, the tenant and group key the correlation's state is keyed by, and the
:class:`~detections.correlation.state.Match`. The correlation stage reads only that
topic, so it never parses an event or runs a rule again.

The Kafka key is (correlation, tenant, group key): every match of a key lands in one
partition, so the stage's state stays partitioned, and a replay re-publishes the same
records (the state machine counts a match once, by its identity).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from detections.correlation.finding_docs import KEY_SEPARATOR
from detections.correlation.model import CorrelationSpec
from detections.correlation.state import Match

#: The fields of one record on the matches topic (``record_value``/``decode_record``).
RECORD_FIELDS = (
    "corr",
    "tenant_id",
    "group_key",
    "time_ms",
    "rule",
    "event_id",
    "value",
    "host",
    "sensor_id",
)


@dataclass(frozen=True)
class FeedEntry:
    """One correlation fed by one base rule: the event fields (aliases resolved for that
    rule) that make the group key, and the field whose value the condition reads."""

    corr: str
    group_fields: tuple[str, ...]
    value_field: str | None


@dataclass(frozen=True)
class CorrelationFeed:
    """Base rule id -> the correlations its matches feed. Shipped to the executors."""

    by_rule: Mapping[str, tuple[FeedEntry, ...]]

    @classmethod
    def of(cls, specs: Sequence[CorrelationSpec]) -> CorrelationFeed:
        by_rule: dict[str, list[FeedEntry]] = {}
        for spec in specs:
            field = spec.condition.field
            for rule in dict.fromkeys(spec.rules):
                if rule in spec.upstream:  # a correlation: its firings feed this one
                    continue
                entry = FeedEntry(
                    spec.id,
                    tuple(spec.field_for(rule, g) for g in spec.group_by),
                    spec.field_for(rule, field) if field else None,
                )
                by_rule.setdefault(rule, []).append(entry)
        return cls({rule: tuple(entries) for rule, entries in by_rule.items()})

    @property
    def rule_ids(self) -> frozenset[str]:
        return frozenset(self.by_rule)

    def records(self, rule_id: str, event: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
        """The (key, value) records one match of ``rule_id`` on ``event`` publishes."""
        out = []
        for entry in self.by_rule.get(rule_id, ()):
            group_key, match = keyed_match(entry, rule_id, event)
            out.append(record(entry.corr, group_key, match))
        return out


def field_value(event: Mapping[str, Any], name: str) -> str | None:
    """An event field as a string: a schema field, else one of ``extra``'s."""
    value = event.get(name)
    if value is None:
        value = (event.get("extra") or {}).get(name)
    return None if value is None else str(value)


def epoch_ms(value: Any) -> int:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return int(when.timestamp() * 1000)


def keyed_match(entry: FeedEntry, rule_id: str, event: Mapping[str, Any]) -> tuple[str, Match]:
    """(group key, match) of one event matched by ``rule_id`` for one correlation."""
    key = KEY_SEPARATOR.join(field_value(event, f) or "" for f in entry.group_fields)
    match = Match(
        epoch_ms(event["event_time"]),
        rule_id,
        str(event["event_id"]),
        field_value(event, entry.value_field) if entry.value_field else None,
        str(event.get("host") or ""),
        str(event.get("sensor_id") or ""),
        str(event.get("tenant_id") or "default"),
    )
    return key, match


def record(corr: str, group_key: str, match: Match) -> tuple[bytes, bytes]:
    """The Kafka (key, value) of one keyed match."""
    key = KEY_SEPARATOR.join((corr, match.tenant_id, group_key))
    value = {
        "corr": corr,
        "tenant_id": match.tenant_id,
        "group_key": group_key,
        "time_ms": match.time_ms,
        "rule": match.rule,
        "event_id": match.event_id,
        "value": match.value,
        "host": match.host,
        "sensor_id": match.sensor_id,
    }
    return key.encode(), json.dumps(value, separators=(",", ":")).encode()


def decode_record(raw: bytes | str) -> tuple[str, str, Match]:
    """(correlation id, group key, match) of one record's value."""
    v = json.loads(raw)
    match = Match(
        int(v["time_ms"]),
        str(v["rule"]),
        str(v["event_id"]),
        None if v.get("value") is None else str(v["value"]),
        str(v.get("host") or ""),
        str(v.get("sensor_id") or ""),
        str(v.get("tenant_id") or "default"),
    )
    return str(v["corr"]), str(v["group_key"]), match


@dataclass(frozen=True)
class PlannedFeed:
    """A feed against one detection plan: rule index -> id of every base rule in it."""

    feed: CorrelationFeed
    ids: Mapping[int, str]

    @classmethod
    def of(cls, feed: CorrelationFeed, plan_ids: Mapping[int, str]) -> PlannedFeed:
        wanted = feed.rule_ids
        return cls(feed, {i: rule for i, rule in plan_ids.items() if rule in wanted})

    @property
    def missing(self) -> frozenset[str]:
        """Base rules the plan does not hold (their correlations get no matches)."""
        return self.feed.rule_ids - frozenset(self.ids.values())

    def records(self, rule_index: int, event: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
        rule = self.ids.get(rule_index)
        return self.feed.records(rule, event) if rule is not None else []
