"""The streaming "detect" job: Kafka -> parse -> Sigma rules -> findings in Elasticsearch.

Each micro-batch is one Spark job: every task parses its records with the generated
schema, runs the rule engine over the valid events (``detections.worker``) and
bulk-creates findings with deterministic ids. Records the parser rejected are counted
there and then written to the dead-letter topic with their reason. Offsets are
checkpointed by Spark, so after a crash the batch is replayed and the deterministic ids
make the replay harmless.

A rule the engine cannot compile is quarantined when the job starts; a rule that raises
while evaluating a batch is quarantined from that moment (its error is reported by the
task, the other rules' findings are written) and left out of every later batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from detections.engine import compile_matcher, engine_columns, rule_specs
from detections.matcher import MatcherSpec
from detections.parse import events_with_reasons, parse_records, rejected_records
from detections.plan import DetectionPlan
from detections.status import JobStatus
from detections.worker import REASON_COLUMN, STATS_SCHEMA, VALUE_COLUMN, partition_processor

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
    rule_seconds: dict[int, float] = field(default_factory=dict)


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


def _write_dlq(rejects: DataFrame, cfg: JobConfig) -> None:
    (
        rejects.write.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .option("topic", cfg.dlq_topic)
        .save()
    )


def make_batch_handler(
    plan: DetectionPlan,
    cfg: JobConfig,
    totals: JobTotals,
    quarantined: dict[int, str],
    on_batch: Callable[[BatchStats], None] | None = None,
    on_quarantine: Callable[[dict[int, str]], None] | None = None,
) -> Callable[[DataFrame, int], None]:
    """The foreachBatch function. ``quarantined`` (rule index -> reason) is shared with
    the caller and grows when a rule fails at run time."""
    spec = MatcherSpec.of(rule_specs(plan))
    rule_infos = {i: info.model_dump() for i, info in plan.rule_infos().items()}

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        stats = BatchStats(batch_id)
        process = partition_processor(
            spec, set(quarantined), rule_infos, cfg.es_hosts, cfg.findings_index
        )
        records = events_with_reasons(parse_records(batch))
        records = records.select(
            REASON_COLUMN, VALUE_COLUMN, *engine_columns(plan, records.columns)
        )
        new_errors: dict[int, str] = {}
        for row in records.mapInArrow(process, STATS_SCHEMA).collect():
            stats.events += row["events"]
            stats.rejected += row["rejected"]
            stats.matches += row["matches"]
            stats.created += row["created"]
            stats.duplicates += row["duplicates"]
            for index, error in json.loads(row["errors"]).items():
                new_errors.setdefault(int(index), error)
            for index, spent in json.loads(row["seconds"]).items():
                rule = int(index)
                stats.rule_seconds[rule] = stats.rule_seconds.get(rule, 0.0) + spent
        if stats.rejected:
            _write_dlq(rejected_records(parse_records(batch)), cfg)
        if new_errors:
            for index, reason in new_errors.items():
                log.error("rule %s quarantined: %s", plan.rules[index].rule.id, reason)
            quarantined.update(new_errors)
            if on_quarantine:
                on_quarantine(new_errors)
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
    quarantined = dict(compile_matcher(plan).errors)
    status = JobStatus.for_plan(plan)
    status.quarantine(plan, quarantined)
    totals = totals or JobTotals()
    for index, reason in quarantined.items():
        log.warning("rule %s quarantined: %s", plan.rules[index].rule.id, reason)
        totals.quarantined[str(plan.rules[index].rule.id)] = reason

    def save_status() -> None:
        if cfg.status_file is not None:
            status.batches, status.events = totals.batches, totals.events
            status.dead_letters, status.findings = totals.rejected, totals.matches
            status.write(cfg.status_file)

    def batch_done(stats: BatchStats) -> None:
        save_status()
        if on_batch:
            on_batch(stats)

    def on_quarantine(bad: dict[int, str]) -> None:
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
    handler = make_batch_handler(plan, cfg, totals, quarantined, batch_done, on_quarantine)
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
