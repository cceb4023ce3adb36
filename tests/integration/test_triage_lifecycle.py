"""Rollover and retention on the real Elasticsearch (which has no ILM)."""

from __future__ import annotations

from typing import Any

import pytest

from common.settings import Settings
from detections.sinks.elasticsearch import connect, drop_findings_index, ensure_findings_index
from triage import lifecycle

pytestmark = pytest.mark.integration


def test_bootstrap_rollover_and_retention(services: dict[str, Any], unique: str) -> None:
    alias = f"test-{unique}-findings"
    es = connect(Settings().es_hosts)
    try:
        assert "created" in lifecycle.bootstrap(es, alias)
        assert "already" in lifecycle.bootstrap(es, alias)
        ensure_findings_index(es, alias)  # what the job does at start: keeps the alias
        assert es.indices.exists_alias(name=alias)
        mapping = es.indices.get_mapping(index=f"{alias}-000001")
        assert "sigstream" in mapping[f"{alias}-000001"]["mappings"]["properties"]
        old = {"@timestamp": "2020-01-01T00:00:00Z", "host": {"name": "OLD"}}
        es.index(index=alias, id="old", document=old, refresh=True)
        rolled = lifecycle.rollover(es, alias, max_age=None, max_docs=1)
        assert rolled["rolled_over"] and rolled["new_index"] == f"{alias}-000002"
        es.index(
            index=alias,
            id="new",
            document={"@timestamp": "2026-11-20T00:00:00Z", "host": {"name": "NEW"}},
            refresh=True,
        )
        assert lifecycle.apply_retention(es, alias, 365 * 100, dry_run=True) == []
        assert lifecycle.apply_retention(es, alias, 30, dry_run=True) == [f"{alias}-000001"]
        assert es.count(index=alias)["count"] == 2  # dry run deleted nothing
        assert lifecycle.apply_retention(es, alias, 30) == [f"{alias}-000001"]
        assert es.count(index=alias)["count"] == 1
        assert lifecycle.apply_retention(es, alias, 0) == []  # never the write index
    finally:
        for name in (f"{alias}-000001", f"{alias}-000002"):
            es.options(ignore_status=404).indices.delete(index=name)
        drop_findings_index(es, alias)
        es.close()


def test_setup_store_makes_rollover_aliases_with_the_generated_mappings(
    services: dict[str, Any], unique: str
) -> None:
    """What `sigstream infra up` runs: templates first, then the write aliases."""
    findings, events = f"test-{unique}-findings", f"test-{unique}-events"
    es = connect(Settings().es_hosts)
    try:
        said = lifecycle.setup_store(es, findings, events)
        assert all("created" in line for line in said), said
        for alias in (findings, events):
            assert es.indices.exists_alias(name=alias)
            aliases = es.indices.get_alias(name=alias)
            assert aliases[f"{alias}-000001"]["aliases"][alias]["is_write_index"] is True
        props = es.indices.get_mapping(index=f"{findings}-000001")[f"{findings}-000001"]
        assert props["mappings"]["properties"]["rule"]["properties"]["id"]["type"] == "keyword"
        ev = es.indices.get_mapping(index=f"{events}-000001")[f"{events}-000001"]
        assert ev["mappings"]["properties"]["event_time"]["type"] == "date"
        assert es.indices.exists(index=f"{findings}-groups")
        again = lifecycle.setup_store(es, findings, events)  # idempotent
        assert all("already" in line for line in again), again
    finally:
        for alias in (findings, events):
            es.options(ignore_status=404).indices.delete(index=f"{alias}-000001")
            es.options(ignore_status=404).indices.delete_index_template(name=f"{alias}-template")
        drop_findings_index(es, findings)
        es.close()
