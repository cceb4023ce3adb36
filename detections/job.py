"""The streaming "detect" job: Kafka -> parse -> Sigma plan -> findings in Elasticsearch.

Each micro-batch: malformed records go to the dead-letter topic with their reason; valid
events are matched against the plan; findings are bulk-created in Elasticsearch from the
executors with deterministic ids. Offsets are checkpointed by Spark, so after a crash the
batch is replayed and the deterministic ids make the replay harmless.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from detections.engine import RuleExpressions, build_rule_columns, detect
from detections.isolation import find_failing_rules, without
from detections.parse import parse_records, rejected_records, valid_events
from detections.plan import DetectionPlan
from detections.status import JobStatus

log = logging.getLogger("sigstream.detect")


@dataclass(frozen=True)
class JobConfig:
    kafka_bootstrap: str
    events_topic: str
    dlq_topic: str
    es_hosts: tuple[str, ...]
    findings_index: str
    checkpoint_dir: Path
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = 200_000
    trigger_seconds: float = 2.0
    available_now: bool = False
    status_file: Path | None = None


@dataclass
class BatchStats:
    batch_id: int
    events: int = 0
    rejected: int = 0
    matches: int = 0
    created: int = 0
    duplicates: int = 0
    seconds: float = 0.0


@dataclass
class JobTotals:
    batches: int = 0
    events: int = 0
    rejected: int = 0
    matches: int = 0
    created: int = 0
    duplicates: int = 0
    history: list[BatchStats] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)

    def add(self, stats: BatchStats) -> None:
        self.batches += 1
        self.events += stats.events
        self.rejected += stats.rejected
        self.matches += stats.matches
        self.created += stats.created
        self.duplicates += stats.duplicates
        self.history.append(stats)


def _findings_writer(
    rule_infos: dict[int, dict[str, Any]], es_hosts: tuple[str, ...], index: str
) -> Callable[[Iterator[Any]], Iterator[tuple[int, int]]]:
    """A partition function run on executors: build findings and bulk-create them."""

    def write(rows: Iterator[Any]) -> Iterator[tuple[int, int]]:
        from detections.findings import build_finding, finding_document
        from detections.sinks.elasticsearch import connect, write_documents
        from schemas.findings import RuleInfo

        infos = {i: RuleInfo.model_validate(d) for i, d in rule_infos.items()}
        ingested = datetime.now(UTC)

        def documents() -> Iterator[tuple[str, dict[str, Any]]]:
            for row in rows:
                event = json.loads(row["event_json"])
                yield finding_document(build_finding(infos[row["rule_index"]], event, ingested))

        es = connect(es_hosts)
        try:
            result = write_documents(es, index, documents())
        finally:
            es.close()
        yield result.created, result.duplicates

    return write


def _write_dlq(rejects: DataFrame, cfg: JobConfig) -> None:
    (
        rejects.write.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .option("topic", cfg.dlq_topic)
        .save()
    )


def make_batch_handler(
    plan: DetectionPlan,
    rules: RuleExpressions,
    cfg: JobConfig,
    totals: JobTotals,
    on_batch: Callable[[BatchStats], None] | None = None,
    on_quarantine: Callable[[dict[int, str]], None] | None = None,
) -> Callable[[DataFrame, int], None]:
    rule_infos = {i: info.model_dump() for i, info in plan.rule_infos().items()}
    writer = _findings_writer(rule_infos, cfg.es_hosts, cfg.findings_index)
    active = [rules]  # replaced when rules are quarantined at run time

    def match(events: DataFrame, batch_id: int) -> DataFrame:
        """Matches of the batch, persisted; quarantines rules that make evaluation fail."""
        try:
            matches = detect(events, plan, active[0]).persist()
            matches.count()
            return matches
        except Exception as exc:
            log.warning("batch %d: rule evaluation failed (%s); isolating the rule", batch_id, exc)
            bad = find_failing_rules(events, plan, active[0])
            if not bad:
                raise  # not a rule's fault: let Spark retry the batch
            active[0] = without(active[0], bad)
            for index, reason in bad.items():
                log.error("rule %s quarantined: %s", plan.rules[index].rule.id, reason)
            if on_quarantine:
                on_quarantine({index: reason for index, reason in bad.items()})
            matches = detect(events, plan, active[0]).persist()
            matches.count()
            return matches

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        stats = BatchStats(batch_id)
        parsed = parse_records(batch).persist()
        try:
            counts = parsed.groupBy(F.col("reject_reason").isNull().alias("ok")).count().collect()
            for row in counts:
                if row["ok"]:
                    stats.events = row["count"]
                else:
                    stats.rejected = row["count"]
            if stats.rejected:
                _write_dlq(rejected_records(parsed), cfg)
            if stats.events:
                events = valid_events(parsed)
                matches = match(events, batch_id)
                documents = matches.select(
                    "rule_index",
                    F.to_json(
                        F.struct(*[F.col(c) for c in events.columns]),
                        {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"},
                    ).alias("event_json"),
                )
                try:
                    for created, duplicates in documents.rdd.mapPartitions(writer).collect():
                        stats.created += created
                        stats.duplicates += duplicates
                finally:
                    matches.unpersist()
                stats.matches = stats.created + stats.duplicates
        finally:
            parsed.unpersist()
        stats.seconds = time.monotonic() - started
        totals.add(stats)
        log.info(
            "batch %d: %d events, %d rejected to DLQ, %d findings (%d new, %d known) in %.1fs",
            batch_id,
            stats.events,
            stats.rejected,
            stats.matches,
            stats.created,
            stats.duplicates,
            stats.seconds,
        )
        if on_batch:
            on_batch(stats)

    return handle


def start(
    spark: SparkSession,
    plan: DetectionPlan,
    cfg: JobConfig,
    totals: JobTotals | None = None,
    on_batch: Callable[[BatchStats], None] | None = None,
) -> StreamingQuery:
    """Start the streaming query (returns at once; await or stop the query yourself)."""
    from detections.sinks.elasticsearch import connect, ensure_findings_index

    es = connect(cfg.es_hosts)
    try:
        ensure_findings_index(es, cfg.findings_index)
    finally:
        es.close()
    rules = build_rule_columns(plan)
    status = JobStatus.for_plan(plan)
    status.quarantine(plan, rules.quarantined)
    for index, reason in rules.quarantined.items():
        log.warning("rule %s quarantined: %s", plan.rules[index].rule.id, reason)
    totals = totals or JobTotals()

    def save_status() -> None:
        if cfg.status_file is not None:
            status.batches, status.events = totals.batches, totals.events
            status.dead_letters, status.findings = totals.rejected, totals.matches
            status.write(cfg.status_file)

    def batch_done(stats: BatchStats) -> None:
        save_status()
        if on_batch:
            on_batch(stats)

    def quarantined(bad: dict[int, str]) -> None:
        status.quarantine(plan, bad)
        totals.quarantined.update({str(plan.rules[i].rule.id): r for i, r in bad.items()})
        save_status()

    save_status()
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .option("subscribe", cfg.events_topic)
        .option("startingOffsets", cfg.starting_offsets)
        .option("failOnDataLoss", "false")
    )
    if cfg.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(cfg.max_offsets_per_trigger))
    handler = make_batch_handler(plan, rules, cfg, totals, batch_done, quarantined)
    writer = (
        reader.load()
        .writeStream.queryName("sigstream-detect")
        .option("checkpointLocation", str(cfg.checkpoint_dir))
        .foreachBatch(handler)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    return writer.start()


def run(
    spark: SparkSession,
    plan: DetectionPlan,
    cfg: JobConfig,
    on_batch: Callable[[BatchStats], None] | None = None,
) -> JobTotals:
    """Run until stopped (or, with ``available_now``, until everything in Kafka is processed)."""
    totals = JobTotals()
    query = start(spark, plan, cfg, totals, on_batch)
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        log.info("stopping (Ctrl-C): the next run resumes from the checkpoint")
        query.stop()
    return totals
