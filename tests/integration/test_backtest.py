"""Backtests on a real local Spark session: an events archive in the job's Parquet layout
(``event_date=`` partitions) and raw corpora, matched with the engine's ``detect``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT
from detections.compiler.plan import load_plan
from detections.content.workflow.backtest import (
    archive_events,
    backtest,
    corpus_events,
    write_archive,
)

pytestmark = pytest.mark.integration

SAMPLES = PROJECT_ROOT / "ingest" / "samples" / "sensor_events.jsonl"
RULES = PROJECT_ROOT / "detections" / "rules" / "windows"
TAMPERING = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04"


def test_backtest_archive_and_raw_files(spark: Any, tmp_path: Path) -> None:
    plan = load_plan([RULES / "proc_creation_sensor_tampering.yml"])
    events, rejected = corpus_events(spark, [SAMPLES])
    assert rejected == 0 and events.count() == 8

    raw = backtest(events, plan)
    [rule] = raw.rules
    assert (rule.rule_id, rule.hits) == (TAMPERING, 2)  # sc stop sysmon, fltmc unload
    assert sorted(rule.top_hosts) == [("WS03", 1), ("WS04", 1)]
    assert rule.per_day == [("2026-11-20", 2)]
    assert {s["event_id"] for s in rule.samples} == {"fixture-006", "fixture-007"}

    archive = tmp_path / "archive"
    write_archive(events, archive)
    assert (archive / "event_date=2026-11-20").is_dir()
    stored = backtest(archive_events(spark, archive, since=date(2026, 11, 1)), plan)
    assert (stored.events, stored.rules[0].hits, stored.days) == (8, 2, 1)
    later = backtest(archive_events(spark, archive, since=date(2026, 11, 21)), plan)
    assert (later.events, later.rules[0].hits) == (0, 0)  # partitions before --since pruned


def test_missing_archive_says_what_to_do(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--from"):
        archive_events(spark, tmp_path / "nothing", since=None)
