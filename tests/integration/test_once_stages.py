"""`sigstream detect --once` as the job wires it (``detections.stream.job.run``): the
stages run beside the detection pass and are drained once it has read everything. A chain
advances a link per stage batch while draining, with no second run of the stage."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from detections.correlation.model import correlation_finding_id
from detections.correlation.query import (
    CorrelationConfig,
    CorrelationTotals,
    feeding,
    load_content,
)
from detections.correlation.stage import CorrelationStage
from detections.stream.job import run
from tests.e2e.harness import job_config
from tests.integration.test_correlations import (
    CHAIN,
    CHAIN_ID,
    COUNT_ID,
    RULES,
    T0,
    correlation_findings,
    event,
    send,
)

pytestmark = pytest.mark.integration


def test_once_drains_a_chain_beside_the_detection_pass(
    services: Any, spark: Any, tmp_path: Path, unique: str
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "corr.yml").write_text(RULES + "---" + CHAIN)
    content = load_content([folder])
    assert not content.rejections and CHAIN_ID in {s.id for s in content.specs}
    cfg = job_config(tmp_path, unique)
    assert cfg.available_now  # --once
    send(
        cfg,
        [event("h1", t, "a.exe", f"c-{t}") for t in (1, 2, 3, 100, 101, 102)]
        + [event("h2", t, "a.exe", f"d-{t}") for t in (1, 2, 3)],
    )
    totals = CorrelationTotals()
    stage = CorrelationStage(content, CorrelationConfig(lateness_s=10), totals)
    job = run(spark, content.plan, feeding(cfg, content), companions=[stage])

    assert job.events == 9
    assert [q.name for q in spark.streams.active] == []  # every query stopped
    found = correlation_findings(cfg)
    assert [f["rule"]["id"] for f in found] == [CHAIN_ID]
    assert totals.firings == 4 and totals.chained == 3
    corr = found[0]["sigstream"]["correlation"]
    assert corr["group_by"] == {"host": "h1"} and corr["value"] == 2
    starts = [int((T0 + timedelta(seconds=t)).timestamp() * 1000) for t in (1, 100)]
    assert corr["base_findings"] == [correlation_finding_id(COUNT_ID, "h1", s) for s in starts]

    # Run again over the same topics and checkpoints: nothing new, nothing duplicated.
    again = CorrelationTotals()
    stage = dataclasses.replace(stage, totals=again)
    job = run(spark, content.plan, feeding(cfg, content), companions=[stage])
    assert job.events == 0 and again.firings == 0
    assert [f["rule"]["id"] for f in correlation_findings(cfg)] == [CHAIN_ID]
