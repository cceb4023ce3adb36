"""What one Spark task of the detect job does with its slice of a micro-batch.

Runs in a Python worker over Arrow batches of parsed events: count the records the parser
rejected (the driver sends those to the dead-letter topic), run the rule engine on the
rest, turn matches into findings and bulk-create them in Elasticsearch (the findings
index, or the shadow index for rules deployed in shadow or outside their canary), and
report one row of counts, rule errors and per-rule numbers back to the driver. One pass,
one Spark job per micro-batch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import types as T

from common.metrics import LATENCY_BUCKETS
from detections.content.deploy.modes import RuleMode
from detections.drift.observe import FieldObservations
from detections.health.summary import SensorSummaries
from detections.sinks.base import VALUE_COLUMN, SinkSpec, TaskOutput
from detections.sinks.elasticsearch_sinks import EventsIndex, FindingsIndex
from detections.sinks.finding_docs import build_finding, finding_document
from detections.sinks.grouping import GroupingConfig
from detections.sinks.outage import outlasting_outages
from detections.stream.parse import MALFORMED, reason_code, record_problem
from schemas.findings import RuleInfo

#: The row each task reports to the driver.
STATS_SCHEMA = T.StructType(
    [
        T.StructField("events", T.LongType(), False),
        T.StructField("rejected", T.LongType(), False),
        T.StructField("matches", T.LongType(), False),  # rule matches, whatever their fate
        # Finding documents handed to the sinks: the findings index, the shadow index; and
        # matches of rules that only feed correlations (no document).
        T.StructField("findings", T.LongType(), False),
        T.StructField("shadow_findings", T.LongType(), False),
        T.StructField("feed_only", T.LongType(), False),
        T.StructField("created", T.LongType(), False),
        T.StructField("duplicates", T.LongType(), False),
        T.StructField("match_s", T.DoubleType(), False),  # seconds in the rule engine
        T.StructField("write_s", T.DoubleType(), False),  # seconds writing findings
        T.StructField("observe_s", T.DoubleType(), False),  # seconds observing fields (drift)
        T.StructField("errors", T.StringType(), False),  # JSON: rule index -> error
        # JSON: rule index -> [events evaluated, matches, seconds]
        T.StructField("rules", T.StringType(), False),
        # JSON: [[topic, partition, offset, reason]] of the records this task refused that
        # the JVM's parse let through (or called malformed): see ``detections.stream.parse``.
        T.StructField("rejects", T.StringType(), False),
        # JSON: [[key, value]] of the correlation stage's records for the base-rule
        # matches of this task (detections.correlation.feed; the driver publishes them).
        T.StructField("correlation_matches", T.StringType(), False),
        # JSON: [[key, value]] of this task's per-sensor summaries (detections.health.summary)
        T.StructField("summaries", T.StringType(), False),
        # JSON: [[key, value]] of this task's field observations (detections.drift.observe)
        T.StructField("observations", T.StringType(), False),
        # JSON: [[tenant, sensor, agent version]] of the heartbeats this task saw (the
        # driver's sensor -> version map, detections.drift.versions)
        T.StructField("sensor_versions", T.StringType(), False),
        # Metrics (detections/stream/metrics.py), JSON: dead letters by reason code;
        # finding documents by "<active|shadow>:<level>"; event-to-finding latency of the
        # findings index's documents as counts per LATENCY_BUCKETS bucket (+Inf last),
        # then their sum in seconds.
        T.StructField("dlq_reasons", T.StringType(), False),
        T.StructField("levels", T.StringType(), False),
        T.StructField("latency", T.StringType(), False),
    ]
)
_ARROW_TYPES = {"bigint": pa.int64(), "double": pa.float64(), "string": pa.string()}
_ARROW_STATS = pa.schema(
    [pa.field(f.name, _ARROW_TYPES[f.dataType.simpleString()]) for f in STATS_SCHEMA]
)

REASON_COLUMN = "reject_reason"
#: Where a record came from: how the driver finds the records a task refused.
ORIGIN_COLUMNS = ("topic", "partition", "offset")


@dataclass(frozen=True)
class Destinations:
    """Where findings go: the analysts' index, the shadow index, and the rules (by index)
    whose deployment mode is not plain ``active``."""

    active: str
    shadow: str | None = None
    modes: Mapping[int, tuple[str, RuleMode]] | None = None  # index -> (rule id, mode)
    events: str | None = None  # also index every valid event here (triage context)
    # Rules whose matches only feed correlations (Sigma ``generate: false``): no findings.
    silent: frozenset[int] = frozenset()
    # Finding groups' windows, from the job (None: the default window; unit tests).
    grouping: GroupingConfig | None = None
    # Further sinks of every task's output (detections/sinks/base.py), after the
    # Elasticsearch ones: a new sink is a class and an entry here, not a worker change.
    extra_sinks: tuple[SinkSpec, ...] = ()

    def sinks(
        self, es_hosts: tuple[str, ...], es_options: Mapping[str, Any] | None
    ) -> list[SinkSpec]:
        """Every sink of the task's output: the events index (when set), the findings."""
        events = [EventsIndex(es_hosts, self.events, es_options)] if self.events else []
        return [*events, FindingsIndex(es_hosts, es_options), *self.extra_sinks]

    def tally(self, documents: Mapping[str, list[Any]], rules: np.ndarray) -> dict[str, int]:
        """The finding documents per destination (``finding_documents`` output), and the
        matches (``rules``: the rule of each) of rules that only feed correlations."""
        shadow = self.shadow if self.shadow not in (None, self.active) else None
        return {
            "findings": len(documents.get(self.active, ())),
            "shadow_findings": len(documents.get(shadow, ())) if shadow else 0,
            "feed_only": int(np.isin(rules, list(self.silent)).sum()) if self.silent else 0,
        }

    def index_for(self, rule: int, event: dict[str, Any]) -> str | None:
        if rule in self.silent:
            return None
        mode = (self.modes or {}).get(rule)
        if mode is None:
            return self.active
        rule_id, rule_mode = mode
        where = rule_mode.destination(
            rule_id, str(event.get("tenant_id", "default")), str(event.get("sensor_id", ""))
        )
        if where == "active":
            return self.active
        if where == "shadow":
            return self.shadow
        return None


def partition_processor(
    content: Any,
    skip: Collection[int],
    es_hosts: tuple[str, ...],
    destinations: Destinations,
    es_options: Mapping[str, Any] | None = None,
    patience_s: float = 300.0,
    rule_budget_s: float | None = None,
    summarize: bool = True,
    observe: bool = False,
    versions: Any = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of the detect job (closes over plain data only).

    ``content`` is a Spark broadcast of (MatcherSpec, rule index -> rule info, the
    correlation feed or None): shipped to each Python worker once per deployed content,
    not with every micro-batch. Matches of a correlation's base rules also become the
    correlation stage's records (returned to the driver, which publishes them). Writes wait
    out an Elasticsearch outage of up to ``patience_s`` (``detections.sinks.outage``).
    A rule whose own evaluation time in this task (its share of the micro-batch) exceeds
    ``rule_budget_s`` is reported like a rule that raised, with its measured cost: the
    driver quarantines it, and the task skips it in its remaining Arrow batches. The
    budget comes from the driver's settings; executors never read their own. With
    ``summarize``, the task also summarizes its events per sensor for sensor health
    (``detections.health.summary``; the driver publishes the summaries); with ``observe``,
    it counts which fields arrive per logsource for field drift
    (``detections.drift.observe``; the driver publishes those too), per sensor version:
    ``versions`` is a Spark broadcast of the driver's (tenant, sensor) -> agent version map
    (``detections.drift.versions``; None: every sensor ``unknown`` until its heartbeat
    in this task), and the task reports the heartbeats it saw back to the driver."""
    skipped = frozenset(skip)

    def process(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        spec, rule_infos, *more = content.value
        feed = more[0] if more else None
        matcher = spec.matcher()
        fed = np.array(sorted(feed.ids), dtype=np.int64) if feed is not None else None
        correlation_matches: list[list[str]] = []
        counts = dict.fromkeys(
            (
                "events",
                "rejected",
                "matches",
                "findings",
                "shadow_findings",
                "feed_only",
                "created",
                "duplicates",
            ),
            0,
        )
        timing = {"match_s": 0.0, "write_s": 0.0}
        errors: dict[int, str] = {}
        per_rule: dict[int, list[float]] = {}
        ingested = datetime.now(UTC)
        rejects: list[tuple[str, int, int, str]] = []
        summaries = SensorSummaries()
        fields = FieldObservations(versions=versions.value if versions is not None else None)
        observe_s = 0.0
        tally = FindingTally()
        sinks = [sink.open() for sink in destinations.sinks(es_hosts, es_options)]
        for batch in batches:
            valid, refused = checked_records(batch, tally.dlq_reasons)
            rejects += refused
            events = batch.filter(pa.array(valid))
            counts["rejected"] += batch.num_rows - events.num_rows
            counts["events"] += events.num_rows
            if not events.num_rows:
                continue
            if summarize:
                summaries.add(events)
            if observe:
                started = time.perf_counter()
                fields.add(events)
                observe_s += time.perf_counter() - started
            started = time.perf_counter()
            result = matcher.match(events, skipped | errors.keys())
            timing["match_s"] += time.perf_counter() - started
            errors.update(result.errors)
            hits = np.bincount(result.rules) if result.rules.size else np.zeros(0, int)
            for rule, rows in result.evaluated.items():
                numbers = per_rule.setdefault(rule, [0, 0, 0.0])
                numbers[0] += rows
                numbers[1] += int(hits[rule]) if rule < hits.size else 0
                numbers[2] += result.seconds.get(rule, 0.0)
                if rule_budget_s and numbers[2] > rule_budget_s and rule not in errors:
                    errors[rule] = over_budget(numbers[2], int(numbers[0]), rule_budget_s)
            started = time.perf_counter()
            documents: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            if result.rows.size:
                counts["matches"] += int(result.rows.size)
                if fed is not None and fed.size:
                    correlation_matches += feed_records(
                        feed, events, result.rows, result.rules, fed
                    )
                documents = finding_documents(
                    events,
                    result.rows,
                    result.rules,
                    rule_infos,
                    destinations,
                    ingested,
                    result.details,
                    tally,
                )
                for name, n in destinations.tally(documents, result.rules).items():
                    counts[name] += n
            output = TaskOutput(events, documents)
            for sink in sinks:
                sink.buffer(output)
                flushed = outlasting_outages(sink.flush, patience_s)
                counts["created"] += flushed.created
                counts["duplicates"] += flushed.duplicates
            timing["write_s"] += time.perf_counter() - started
            tally.written(events)  # the findings are in: their event-to-finding latency
        row = {
            **counts,
            **timing,
            "errors": json.dumps({str(k): v for k, v in errors.items()}),
            "rules": json.dumps({str(k): v for k, v in per_rule.items()}),
            "rejects": json.dumps(rejects),
            "correlation_matches": json.dumps(correlation_matches),
            "summaries": json.dumps([[k.decode(), v.decode()] for k, v in summaries.records()]),
            "observations": json.dumps([[k.decode(), v.decode()] for k, v in fields.records()]),
            "sensor_versions": json.dumps(fields.heartbeats()),
            "observe_s": observe_s,
            **tally.columns(),
        }
        yield pa.RecordBatch.from_pylist([row], schema=_ARROW_STATS)

    return process


def feed_records(
    feed: Any, events: pa.RecordBatch, rows: Any, rules: Any, fed: np.ndarray
) -> list[list[str]]:
    """[key, value] of the correlation records of the matches of base rules (``fed``)."""
    keep = np.isin(rules, fed)
    if not keep.any():
        return []
    values = events.column(VALUE_COLUMN).take(pa.array(rows[keep])).to_pylist()
    out: list[list[str]] = []
    for value, rule in zip(values, rules[keep].tolist(), strict=True):
        for key, record in feed.records(rule, json.loads(value)):
            out.append([key.decode(), record.decode()])
    return out


def checked_records(
    batch: pa.RecordBatch, codes: Counter[str] | None = None
) -> tuple[np.ndarray, list[tuple[str, int, int, str]]]:
    """Which records of ``batch`` are valid events, and (topic, partition, offset, reason)
    of those this task refuses: the records the JVM's parse accepted but the event
    contract does not (``detections.stream.parse.record_problem``), and a precise reason for
    those it found malformed. One bad record never fails the others. ``codes`` counts the
    invalid records by reason code (the job's metrics)."""
    reasons = batch.column(REASON_COLUMN).to_pylist()
    values = batch.column(VALUE_COLUMN).to_pylist()
    names = batch.schema.names
    origin = [
        batch.column(c).to_pylist() if c in names else [None] * batch.num_rows
        for c in ORIGIN_COLUMNS
    ]
    valid = np.zeros(batch.num_rows, dtype=bool)
    refused: list[tuple[str, int, int, str]] = []
    for row, (reason, value) in enumerate(zip(reasons, values, strict=True)):
        if reason is not None and reason != MALFORMED:
            if codes is not None:
                codes[reason_code(reason)] += 1
            continue
        problem = record_problem(value)
        if problem is None and reason is None:
            valid[row] = True
            continue
        if problem is not None:
            refused.append((origin[0][row], origin[1][row], origin[2][row], problem))
        if codes is not None:
            codes[reason_code(problem or reason)] += 1
    return valid, refused


def over_budget(seconds: float, events: int, budget_s: float) -> str:
    """The quarantine reason of a rule over its time budget, with its measured cost."""
    per_event = f", {seconds / events * 1e6:,.0f} µs/event" if events else ""
    return (
        f"over its time budget: {seconds:.2f} s evaluating {events:,} events of one "
        f"micro-batch in one task{per_event} (budget {budget_s:g} s per rule)"
    )


def finding_documents(
    events: pa.RecordBatch,
    rows: Any,
    rules: Any,
    rule_infos: dict[int, dict[str, Any]],
    destinations: Destinations,
    ingested: datetime,
    details: list[dict[str, Any]] | None = None,
    tally: FindingTally | None = None,
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Index -> (id, body) of the findings of the (row, rule) matches. A finding carries
    the event as its sensor sent it (the record's JSON), so nothing the rule did not read
    is lost, and why it matched (``details``, parallel to ``rows``, from the engine).
    ``tally`` counts the documents by destination and level (metrics)."""
    infos: dict[int, RuleInfo] = {}
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    values = events.column(VALUE_COLUMN).take(pa.array(rows)).to_pylist()
    whys = details if details is not None else [None] * len(values)
    for value, rule, row, why in zip(values, rules.tolist(), rows.tolist(), whys, strict=True):
        event = json.loads(value)
        index = destinations.index_for(rule, event)
        if index is None:
            continue
        info = infos.get(rule)
        if info is None:
            info = infos[rule] = RuleInfo.model_validate(rule_infos[rule])
        finding = build_finding(info, event, ingested, destinations.grouping, why)
        out.setdefault(index, []).append(finding_document(finding))
        if tally is not None:
            tally.document(index == destinations.active, info.level, int(row))
    return out


class FindingTally:
    """What one task tells the driver's metrics: dead letters by reason code, finding
    documents by destination and level, and the event-to-finding latency of the findings
    index's documents (write time minus the event's ``received_time``), as histogram
    bucket counts so the driver adds tasks up exactly."""

    def __init__(self) -> None:
        self.dlq_reasons: Counter[str] = Counter()
        self.levels: Counter[str] = Counter()
        self.rows: list[int] = []  # rows of the current Arrow batch with a finding document
        self.buckets = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
        self.seconds = 0.0

    def document(self, active: bool, level: str | None, row: int) -> None:
        self.levels[f"{'active' if active else 'shadow'}:{(level or 'unknown').lower()}"] += 1
        if active:
            self.rows.append(row)

    def written(self, events: pa.RecordBatch, now: datetime | None = None) -> None:
        """The current batch's documents are written: observe their latencies."""
        rows, self.rows = self.rows, []
        if not rows or "received_time" not in events.schema.names:
            return
        column = events.column("received_time").take(pa.array(rows))
        received = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        micros = received.to_numpy(zero_copy_only=False)
        if received.null_count:
            micros = micros[np.asarray(received.is_valid())]
        at = (now or datetime.now(UTC)).timestamp() * 1e6
        self.observe(np.maximum((at - micros.astype(np.float64)) / 1e6, 0.0))

    def observe(self, latency: np.ndarray) -> None:
        if latency.size:
            index = np.searchsorted(np.asarray(LATENCY_BUCKETS), latency, side="left")
            self.buckets += np.bincount(index, minlength=self.buckets.size)
            self.seconds += float(latency.sum())

    def columns(self) -> dict[str, str]:
        return {
            "dlq_reasons": json.dumps(dict(self.dlq_reasons)),
            "levels": json.dumps(dict(self.levels)),
            "latency": json.dumps([*self.buckets.tolist(), self.seconds]),
        }
