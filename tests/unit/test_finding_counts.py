"""The detect job counts the finding documents it hands to the sinks, per destination,
not the rule matches: matches of rules that only feed correlations (``generate: false``),
of killed rules and of shadow rules are not findings of the findings index, and the CLI's
closing line says so exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from detections.compiler.logsources import Route
from detections.content.deploy.modes import RuleMode
from detections.engine.matcher import _CACHE, MatcherSpec
from detections.sinks.base import Flushed, Sink, TaskOutput
from detections.stream import worker
from detections.stream.job import BatchStats, JobTotals
from detections.stream.worker import REASON_COLUMN, VALUE_COLUMN, Destinations
from schemas.generate import arrow_event_schema
from tests.sigma_cases import rule_ir

ANY_ROUTE = Route(product=None, event_types=None, service=None)
IDS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
INFOS = {i: {"id": IDS[i], "name": f"rule {i}"} for i in range(4)}


@dataclass
class Shipped:
    value: Any


@dataclass
class RecordingSink(Sink):
    written: dict[str, int] = field(default_factory=dict)
    pending: list[tuple[str, int]] = field(default_factory=list)

    def buffer(self, output: TaskOutput) -> None:
        self.pending += [(index, len(docs)) for index, docs in output.findings.items()]

    def flush(self) -> Flushed:
        created = sum(n for _, n in self.pending)
        for index, n in self.pending:
            RecordingFindings.written[index] = RecordingFindings.written.get(index, 0) + n
        self.pending = []
        return Flushed(created=created)


@dataclass(frozen=True)
class RecordingFindings:
    """Stands in for the findings index sink (no Elasticsearch)."""

    hosts: tuple[str, ...]
    options: Any = None
    written = {}  # type: ignore[var-annotated]  # noqa: RUF012

    def open(self) -> Sink:
        return RecordingSink()


def _batch(images: list[str]) -> pa.RecordBatch:
    rows = [{"event_type": "process_creation", "extra": {}, "Image": i} for i in images]
    table = pa.Table.from_pylist(rows, schema=arrow_event_schema())
    table = table.append_column(REASON_COLUMN, pa.nulls(len(rows), pa.string()))
    event = {"event_type": "process_creation", "sensor_id": "ws01", "host": "WS01"}
    raw = [
        json.dumps(
            event | {"Image": img, "event_id": f"e{n}", "event_time": "2026-11-20T10:00:00Z"}
        )
        for n, img in enumerate(images)
    ]
    table = table.append_column(VALUE_COLUMN, pa.array(raw))
    return table.combine_chunks().to_batches()[0]


def test_only_finding_documents_count_as_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "FindingsIndex", RecordingFindings)
    RecordingFindings.written.clear()
    a_exe = rule_ir("sel:\n  Image|endswith: '\\a.exe'\ncondition: sel")
    spec = MatcherSpec.of([(i, ANY_ROUTE, a_exe) for i in range(4)])
    destinations = Destinations(
        "findings",
        "findings-shadow",
        {2: (IDS[2], RuleMode(mode="shadow")), 3: (IDS[3], RuleMode(mode="disabled"))},
        silent=frozenset({1}),  # rule 1 only feeds correlations
    )
    try:
        process = worker.partition_processor(
            Shipped((spec, INFOS)), (), ("http://unused:9200",), destinations, None, 5.0
        )
        batches = [_batch(["C:\\a.exe", "C:\\b.exe"]), _batch(["D:\\a.exe"])]
        (stats,) = list(process(iter(batches)))
    finally:
        _CACHE.clear()
    row = stats.to_pylist()[0]
    assert row["matches"] == 8  # 2 events x 4 rules
    assert (row["findings"], row["shadow_findings"], row["feed_only"]) == (2, 2, 2)
    assert row["created"] == 4
    assert RecordingFindings.written == {"findings": 2, "findings-shadow": 2}

    totals = JobTotals()
    totals.add(
        BatchStats(
            0,
            events=3,
            matches=row["matches"],
            findings=row["findings"],
            shadow_findings=row["shadow_findings"],
            feed_only=row["feed_only"],
            created=3,
            duplicates=1,
        )
    )
    assert totals.not_written == 2  # the disabled rule's matches
    assert totals.outcome() == (
        "8 rule matches -> 4 findings (3 new, 1 already in Elasticsearch), of which 2 in the "
        "shadow index; 2 feed correlations only; 2 not written (rule mode: killed or outside "
        "canary)"
    )


def test_the_outcome_of_plain_matches_is_short() -> None:
    totals = JobTotals()
    totals.add(BatchStats(0, matches=6_544, findings=6_544, created=6_500, duplicates=44))
    assert totals.outcome() == (
        "6,544 rule matches -> 6,544 findings (6,500 new, 44 already in Elasticsearch)"
    )


def test_a_silent_rules_matches_are_not_findings() -> None:
    destinations = Destinations("findings", silent=frozenset({1}))
    tally = destinations.tally({"findings": [("id", {})]}, np.array([0, 1, 1]))
    assert tally == {"findings": 1, "shadow_findings": 0, "feed_only": 2}


def test_the_bench_reads_the_new_batch_line_and_the_old_one() -> None:
    from bench.throughput import parse_batch_lines

    new = (
        "22:55:38 INFO sigstream.detect: batch 0: 20 events, 3 rejected to DLQ, 179 rule "
        "matches -> 150 findings (149 new, 1 known) in 29.5s (prepare 0.64s, run 28.28s; "
        "tasks: 1.3s matching, 2.1s writing findings)\n"
    )
    old = new.replace("179 rule matches -> 150 findings", "179 findings")
    (parsed,) = parse_batch_lines(new)
    assert (parsed["matches"], parsed["findings"], parsed["created"]) == (179, 150, 149)
    (before,) = parse_batch_lines(old)
    assert before["matches"] == 179 and "findings" not in before
