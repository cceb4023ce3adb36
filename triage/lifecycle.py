"""Rollover and retention without ILM.

The stripped Elasticsearch distribution ships no ILM (``/_ilm`` does not exist) and no
data streams, so lifecycle is the classic alias pattern, run from cron or a systemd timer
(``sigstream findings lifecycle``): a write alias ``<name>`` over ``<name>-000001``,
``-000002``...; rollover when the write index is older or bigger than a limit; retention
deletes whole backing indices whose newest document is older than the retention period
(never the write index). Index templates cover ``<name>-0*``, so backing indices get the
generated mappings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from detections.sinks.elasticsearch import ensure_findings_index, put_findings_templates
from detections.sinks.events import ensure_events_index, put_events_template


@dataclass(frozen=True)
class BackingIndex:
    name: str
    is_write: bool
    newest: datetime | None  # newest document time; None when empty


def bootstrap(es: Elasticsearch, alias: str) -> str:
    """Create ``<alias>-000001`` behind the write alias ``alias``; returns what happened.
    Run it before the job's first start (the job then finds the alias and keeps it)."""
    if es.indices.exists_alias(name=alias):
        return f"{alias} is already a rollover alias"
    if es.indices.exists(index=alias):
        return f"{alias} is a plain index (created before rollover was set up); left as is"
    first = f"{alias}-000001"
    es.indices.create(index=first, aliases={alias: {"is_write_index": True}})
    return f"created {first} behind write alias {alias}"


def rollover(
    es: Elasticsearch,
    alias: str,
    max_age: str | None = "1d",
    max_docs: int | None = None,
    max_primary_shard_size: str | None = "30gb",
) -> dict[str, Any]:
    """Roll the alias over when any condition holds (Elasticsearch checks them)."""
    conditions: dict[str, Any] = {}
    if max_age:
        conditions["max_age"] = max_age
    if max_docs:
        conditions["max_docs"] = max_docs
    if max_primary_shard_size:
        conditions["max_primary_shard_size"] = max_primary_shard_size
    return dict(es.indices.rollover(alias=alias, conditions=conditions))


def backing_indices(es: Elasticsearch, alias: str, time_field: str) -> list[BackingIndex]:
    """The alias's indices with their newest document time."""
    aliases = es.indices.get_alias(name=alias)
    out = []
    for name, info in aliases.items():
        is_write = bool(info["aliases"][alias].get("is_write_index"))
        resp = es.search(index=name, size=0, aggs={"newest": {"max": {"field": time_field}}})
        value = resp["aggregations"]["newest"].get("value_as_string")
        newest = datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
        out.append(BackingIndex(name, is_write, newest))
    return sorted(out, key=lambda b: b.name)


def expired(indices: list[BackingIndex], now: datetime, retention: timedelta) -> list[str]:
    """Backing indices to delete: not the write index, and every document older than
    the retention period. Pure."""
    cutoff = now - retention
    return [b.name for b in indices if not b.is_write and (b.newest is None or b.newest < cutoff)]


def apply_retention(
    es: Elasticsearch,
    alias: str,
    retention_days: int,
    time_field: str = "@timestamp",
    dry_run: bool = False,
) -> list[str]:
    """Delete expired backing indices of ``alias``; returns their names."""
    doomed = expired(
        backing_indices(es, alias, time_field), datetime.now(UTC), timedelta(days=retention_days)
    )
    if doomed and not dry_run:
        es.indices.delete(index=",".join(doomed))
    return doomed


def setup_store(es: Elasticsearch, findings_index: str, events_index: str) -> list[str]:
    """What ``infra up`` does for a new Elasticsearch: index templates first, then the
    write aliases (so ``<name>-000001`` gets the generated mappings), then the groups and
    suppressions indices. Idempotent; an existing plain index is left as it is."""
    put_findings_templates(es, findings_index)
    put_events_template(es, events_index)
    said = [bootstrap(es, findings_index), bootstrap(es, events_index)]
    ensure_findings_index(es, findings_index)
    ensure_events_index(es, events_index)
    return said
