"""Bad detection content never stops the job: broken rules are rejected at load time or
quarantined at run time, with a reason, and every other rule keeps producing findings."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT
from detections.compiler import Pred, compile_path
from detections.compiler.plan import load_plan, plan_rules
from detections.stream.job import JobTotals, start
from detections.stream.status import read_status
from ingest.producer import EventProducer
from sigstream.cli import SAMPLE_EVENTS
from tests.e2e.harness import job_config, read_findings
from tests.integration.test_detect_job import EXPECTED

pytestmark = pytest.mark.integration

HEADER = """
title: {title}
id: {id}
status: test
level: high
logsource: {{category: process_creation, product: windows}}
"""

BROKEN_RULES = {
    "bad_regex.yml": (
        "Broken regex",
        "a0000000-0000-0000-0000-000000000001",
        "detection:\n  sel:\n    CommandLine|re: '(unclosed'\n  condition: sel\n",
    ),
    "bad_modifier.yml": (
        "Unknown modifier",
        "a0000000-0000-0000-0000-000000000002",
        "detection:\n  sel:\n    CommandLine|sounds_like: 'x'\n  condition: sel\n",
    ),
    "bad_field.yml": (
        "Field nobody sends",
        "a0000000-0000-0000-0000-000000000003",
        "detection:\n  sel:\n    NoSuchField: 'x'\n  condition: sel\n",
    ),
    "bad_yaml.yml": (
        "Not even YAML",
        "a0000000-0000-0000-0000-000000000004",
        "detection: [unclosed\n",
    ),
}
RUNTIME_BROKEN_ID = "a0000000-0000-0000-0000-0000000000ff"


def _rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(PROJECT_ROOT / "detections" / "rules", rules)
    for name, (title, rule_id, body) in BROKEN_RULES.items():
        (rules / name).write_text(HEADER.format(title=title, id=rule_id) + body)
    return rules


def test_broken_rules_are_isolated_in_a_running_job(
    services: Any, spark: Any, tmp_path: Path
) -> None:
    compiled, rejections = compile_path([_rules_dir(tmp_path)])
    # A rule the compiler accepted but the engine cannot run: a regex RE2
    # refuses (standing in for any gap between the compiler and the engine). The job
    # quarantines it when it starts, with the engine's reason, and runs every other rule.
    template = next(r for r in compiled if r.id and r.id.endswith("4d02"))
    runtime_broken = dataclasses.replace(
        template,
        id=RUNTIME_BROKEN_ID,
        title="Fails at run time",
        ir=Pred("CommandLine", "regex", r"\p{NoSuchProperty}", True),
    )
    plan = plan_rules([*compiled, runtime_broken], rejections)
    reasons = {r.rule_id: r.reason for r in plan.rejections}
    assert reasons.get("a0000000-0000-0000-0000-000000000001") == "invalid_regex"
    assert reasons.get("a0000000-0000-0000-0000-000000000002") == "unsupported_modifier"
    assert reasons.get("a0000000-0000-0000-0000-000000000003") == "unknown_field"
    assert any(r.reason == "parse_error" and "bad_yaml" in str(r.path) for r in plan.rejections)
    own_rules = len(load_plan([PROJECT_ROOT / "detections" / "rules"]).rules)
    assert len(plan.rules) == own_rules + 1  # the good rules + the one the engine refuses

    cfg = job_config(
        tmp_path, available_now=False, trigger_seconds=1.0, status_file=tmp_path / "status.json"
    )
    producer = EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic)
    for line in SAMPLE_EVENTS.read_bytes().splitlines():
        producer.send_raw("fixture", line)
    producer.flush()

    totals = JobTotals()
    query = start(spark, plan, cfg, totals)
    try:
        query.processAllAvailable()
        assert list(totals.quarantined) == [RUNTIME_BROKEN_ID]
        assert "RE2" in totals.quarantined[RUNTIME_BROKEN_ID]  # the engine's reason
        assert "invalid character class range" in totals.quarantined[RUNTIME_BROKEN_ID]
        assert {(f["rule"]["id"], f["event"]["id"]) for f in read_findings(cfg)} == EXPECTED

        # The job is still running and the good rules still fire on new events.
        event = json.loads(SAMPLE_EVENTS.read_bytes().splitlines()[4])
        event.update(event_id="fixture-late", seq=99)
        producer.send_raw("fixture", json.dumps(event).encode())
        producer.flush()
        query.processAllAvailable()
        assert query.isActive
        ids = {f["event"]["id"] for f in read_findings(cfg)}
        assert "fixture-late" in ids
    finally:
        query.stop()
        producer.close()

    status = read_status(tmp_path / "status.json")
    assert [q["rule_id"] for q in status["quarantined"]] == [RUNTIME_BROKEN_ID]
    assert status["rules_loaded"] == own_rules + 1
    assert status["rejected_by_reason"]["unknown_field"] == 1
    assert status["events"] == 9
