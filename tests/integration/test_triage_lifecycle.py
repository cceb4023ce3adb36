"""Rollover and retention on the real Elasticsearch (which has no ILM)."""

from __future__ import annotations

from typing import Any

import pytest

from detections.sinks.elasticsearch import connect, drop_findings_index, ensure_findings_index
from triage import lifecycle

pytestmark = pytest.mark.integration


def test_bootstrap_rollover_and_retention(services: dict[str, Any], unique: str) -> None:
    alias = f"test-{unique}-findings"
    es = connect(["http://127.0.0.1:9200"])
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
