"""Hostile input through the real detect job (Kafka, Spark, Elasticsearch): a ReDoS-shaped
rule evaluated against 41-character and 100 KB command lines, and every kind of bad raw
record a producer can write to Kafka directly, between good events. Exact counts: the good
events' findings arrive once, each bad record is in the dead-letter topic with its reason,
no rule is quarantined, nothing stalls."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT
from detections.compiler.plan import load_plan
from detections.stream.job import run
from sigstream.cli import SAMPLE_EVENTS
from tests.e2e.harness import job_config, read_findings
from tests.integration.test_detect_job import EXPECTED, _dead_letters, _produce
from tests.unit.test_job_record_checks import FILES, expected_reason, oversize, record

pytestmark = pytest.mark.integration

REDOS_ID = "3e5d0c1a-0000-4000-8000-0000000000aa"
REDOS_RULE = f"""title: Nested quantifier (ReDoS shape)
id: {REDOS_ID}
status: test
level: low
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    CommandLine|re: '(a+)+$'
  condition: selection
"""


def _hostile(template: dict[str, Any], event_id: str, command_line: str) -> bytes:
    event = dict(template, event_id=event_id, seq=1000 + len(event_id))
    event["CommandLine"] = command_line
    return json.dumps(event).encode()


def test_redos_rule_and_bad_records_through_the_real_job(
    services: Any, spark: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(PROJECT_ROOT / "detections" / "rules", rules)
    (rules / "redos.yml").write_text(REDOS_RULE)
    plan = load_plan([rules])
    assert REDOS_ID in {str(p.rule.id) for p in plan.rules}  # RE2 runs it: not refused

    good = SAMPLE_EVENTS.read_bytes().splitlines()
    events = [json.loads(line) for line in good]
    template = next(e for e in events if e["event_id"] == "fixture-003")  # powershell -enc
    hostile = [
        _hostile(template, "hostile-41", "a" * 41 + "!"),  # a day on Python's re
        _hostile(template, "hostile-100k", "a" * 100_000 + "!"),
        _hostile(template, "hostile-match", "x " + "a" * 41),
    ]
    # The powershell -enc event again, with a lone surrogate: it would match, so the
    # finding (and the events index) would have to encode it. It goes to the DLQ instead.
    surrogate = json.dumps(dict(template, event_id="surrogate-enc")).replace(
        "-enc ", "-enc \\ud800 "
    )
    bad = {record(p): expected_reason(p.stem) for p in FILES}
    bad[oversize()] = "record of "
    bad[surrogate.encode()] = "lone UTF-16 surrogate escape"
    mixed: list[bytes] = []
    valid = [*good, *hostile]
    for i, line in enumerate(valid):
        mixed.append(line)
        mixed.extend(list(bad)[i :: len(valid)])  # bad records between the good ones
    assert len(mixed) == len(good) + len(hostile) + len(bad)

    cfg = job_config(
        tmp_path, suffix=f"regex-{uuid.uuid4().hex[:10]}", max_offsets_per_trigger=None
    )
    _produce(cfg, mixed)
    started = time.monotonic()
    totals = run(spark, plan, cfg)
    elapsed = time.monotonic() - started

    assert (totals.events, totals.rejected) == (len(good) + len(hostile), len(bad))
    assert totals.quarantined == {}  # the ReDoS rule ran within its budget
    found = {(f["rule"]["id"], f["event"]["id"]) for f in read_findings(cfg)}
    assert found == EXPECTED | {(REDOS_ID, "hostile-match")}
    assert totals.created == len(EXPECTED) + 1

    letters = _dead_letters(cfg)
    assert len(letters) == len(bad)
    reasons = {value: headers["reason"] for value, headers in letters}
    assert set(reasons) == set(bad)  # the original bytes, each once
    for value, expected in bad.items():
        assert reasons[value].startswith(expected), (value[:80], reasons[value])
    assert elapsed < 600  # a safety bound: Python's re would need about a day
