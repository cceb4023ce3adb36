"""Linux and macOS events through the job's own Spark path (parse with the generated
schema, route, keyword text computed in the JVM, match in the workers): the SigmaHQ rules
of the unit cases fire on the same events there, and only on those."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import SparkSession

from detections.compiler.plan import load_plan
from detections.engine.apply import detect
from detections.stream.parse import flat_records, flat_valid_events
from tests.unit.test_linux_macos_rules import CASES, SIGMA, auditd

pytestmark = pytest.mark.integration


def _json(event: dict) -> str:
    return json.dumps(event, default=str)


def test_linux_and_macos_rules_fire_in_the_spark_job(spark: SparkSession) -> None:
    paths = sorted({SIGMA / rule for rule, _, _ in CASES.values()})
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"SigmaHQ rules not found: {missing[:3]} (expected ../shared/data)")
    plan = load_plan(paths)
    assert len(plan.rules) == len(paths), [r.message for r in plan.rejections]
    rule_of = {p.index: p.rule.path for p in plan.rules}

    expected: set[tuple[str, str]] = set()
    events = []
    for rule, bad, benign in CASES.values():
        expected.add((str(SIGMA / rule), bad["event_id"]))
        events += [bad, benign]
    # A record sent straight to Kafka without a logsource gets its event type's own
    # (auditd: linux/auditd), as the gateway's validation gives it ...
    rule, padding, _ = CASES["auditd EXECVE record, fields and keywords"]
    bare = auditd(**{k: padding[k] for k in ("type", "argc", "a0", "a1", "a2", "a3")})
    bare.pop("logsource")
    bare["event_id"] = "bare-auditd"
    events.append(bare)
    expected.add((str(SIGMA / rule), "bare-auditd"))

    # ... and one whose logsource names no product gets its event type's product.
    partial = dict(bare, event_id="partial-auditd", logsource={"service": "auditd"})
    events.append(partial)
    expected.add((str(SIGMA / rule), "partial-auditd"))
    # Explicitly another product: not a Linux rule's event.
    events.append(dict(bare, event_id="windows-auditd", logsource={"product": "windows"}))

    rows = [(None, _json(e).encode(), "t", 0, i) for i, e in enumerate(events)]
    records = spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long"
    )
    flat = flat_records(records)
    assert flat.where("reject_reason is not null").count() == 0
    matches = detect(flat_valid_events(flat), plan, columns=["event_id"]).collect()
    got = {(str(rule_of[m["rule_index"]]), m["event_id"]) for m in matches}
    assert got == expected
