"""The streaming "detect" job: Kafka -> parse -> Sigma rules -> findings in Elasticsearch.

Each micro-batch is one Spark job: every task parses its records with the generated
schema, runs the rule engine over the valid events (``detections.stream.worker``) and
bulk-creates findings with deterministic ids. Records the parser rejected are counted
there and then written to the dead-letter topic with their reason. Offsets are
checkpointed by Spark, so after a crash the batch is replayed and the deterministic ids
make the replay harmless.

A rule the engine cannot compile is quarantined when the job starts; a rule that raises
while evaluating a batch, or that spends more than its time budget on it
(``JobConfig.rule_budget_s``), is quarantined from that moment (its error or measured cost
is reported by the task, the other rules' findings are written) and left out of every
later batch.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamReader, StreamingQuery

from detections.compiler import CompiledRule
from detections.compiler.plan import DetectionPlan
from detections.content.deploy.demotion import (
    DemotionPolicy,
    RuleBatchStats,
    demotion_finding,
    rules_to_demote,
)
from detections.content.deploy.modes import RuleMode
from detections.content.deploy.watcher import ActiveContent, DeploymentWatcher
from detections.correlation.feed import CorrelationFeed, PlannedFeed
from detections.drift.versions import SensorVersions
from detections.engine.apply import (
    compile_matcher,
    engine_inputs,
    rule_explanations,
    rule_specs,
)
from detections.engine.matcher import MatcherSpec, freeze_long_lived
from detections.health.summary import SUMMARY_FIELDS
from detections.sinks.grouping import GroupingConfig
from detections.stream.batch_query import BatchQuery
from detections.stream.derived import DerivedPublisher
from detections.stream.parse import flat_records, flat_valid_events, rejected_records
from detections.stream.stage import StageFunction, StreamingStage, as_stage
from detections.stream.status import JobStatus
from detections.stream.worker import (
    STATS_SCHEMA,
    Destinations,
    partition_processor,
)
from schemas.generate import spark_event_schema

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
    # A Kafka partition's share of a micro-batch above this many records is split over
    # several Spark tasks (the Kafka source's ``maxRecordsPerPartition``): events are keyed
    # by sensor, one busy sensor makes one partition the batch's straggler, and a backlog
    # would run on one core. Live batches are far smaller and keep one task per partition.
    max_records_per_task: int | None = 50_000
    trigger_seconds: float = 0.5
    available_now: bool = False
    status_file: Path | None = None
    # Follow a deployment store (signed bundles, rule modes, kill switch): see
    # docs/rules-workflow.md. Without it the job runs the plan it was started with.
    deploy_dir: Path | None = None
    trusted_keys: Path | None = None
    shadow_index: str | None = None
    demotion: DemotionPolicy | None = None
    # The tenant of Sigstream's own findings (demotions), as SIGSTREAM_OPERATOR_TENANT.
    operator_tenant: str = "sigstream"
    # Index every valid event too (triage context: related events, process ancestry).
    events_index: str | None = None
    # Append every valid event to a Parquet archive (`sigstream rules backtest` reads it).
    archive_dir: Path | None = None
    # Client security (common/client_options.py): extra ``kafka.*`` options for the source
    # and the DLQ writer (SASL/TLS), and Elasticsearch client kwargs (auth, CA).
    kafka_options: dict[str, str] = field(default_factory=dict)
    es_options: dict[str, Any] = field(default_factory=dict)
    # How long a micro-batch waits out an Elasticsearch outage before the job fails.
    es_patience_s: float = 300.0
    # Seconds one rule may spend evaluating its share of a micro-batch in one task before
    # it is quarantined with its measured cost (None or 0: no budget). See settings.
    rule_budget_s: float | None = 30.0
    # Ids of rules that only feed correlations (Sigma ``generate: false``): they run, but
    # write no findings of their own (detections.correlation.compile.correlation_only_rules).
    silent_rule_ids: frozenset[str] = frozenset()
    # The correlation stage's input (docs/architecture.md): matches of these base rules are
    # published to ``matches_topic``; rules of ``feed_rules`` missing from the running plan
    # (a deployed bundle without them, say) are added to it.
    correlation_feed: CorrelationFeed | None = None
    feed_rules: tuple[CompiledRule, ...] = ()
    matches_topic: str = "sigstream.correlation-matches"
    # How findings group (windows per rule), loaded by the CLI: shipped to the executors,
    # which never read their own settings (None: the default window, as in tests).
    grouping: GroupingConfig | None = None
    # Topics the job creates for its derived streams, with this many partitions.
    internal_partitions: int = 2
    # librdkafka options of the driver's producer of derived records (security included;
    # common/client_options.py confluent_kafka_config). Empty: plaintext to kafka_bootstrap.
    producer_options: dict[str, Any] = field(default_factory=dict)

    def producer_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.kafka_bootstrap, **self.producer_options}

    # Internal topic of the per-sensor summaries sensor health reads (None: the job runs
    # without sensor health and summarizes nothing; `sigstream detect` sets it).
    summaries_topic: str | None = None
    # Internal topic of the field observations field drift reads (None: the job observes
    # no fields; `sigstream detect` sets it unless --no-field-drift). docs/field-drift.md
    observations_topic: str | None = None
    # (tenant, sensor) -> agent version, on the driver: the tasks report the heartbeats
    # they see, the drift stage seeds it from its state, and each micro-batch ships it to
    # the tasks (a broadcast renewed when it changed), which observe fields per version.
    sensor_versions: SensorVersions | None = field(
        default_factory=SensorVersions, repr=False, compare=False
    )
    # The stateful stages (correlations, sensor health): state partitions of a fresh
    # checkpoint (an existing checkpoint keeps its own; raise it with the cluster's cores),
    # and sensor health's trigger: silence is judged in minutes, and every trigger of a
    # query with processing-time timeouts runs a Spark job on the detection pass's cores.
    state_partitions: int = 2
    health_trigger_seconds: float = 10.0
    # Set by ``run`` for its companions with --once: they run beside the detect query with
    # processing-time triggers (no timers) and ``run`` drains them. A stage started on its
    # own with ``available_now`` instead reads what Kafka holds when it starts, then ends.
    drained_by_job: bool = False

    def runs_until_drained(self) -> bool:
        """A stage that ends by itself (availableNow) rather than being drained."""
        return self.available_now and not self.drained_by_job


@dataclass
class BatchStats:
    batch_id: int
    events: int = 0
    rejected: int = 0
    matches: int = 0  # rule matches, including those that write no finding
    findings: int = 0  # finding documents handed to the findings index
    shadow_findings: int = 0  # ... and to the shadow index
    feed_only: int = 0  # matches of rules that only feed correlations (generate: false)
    created: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    prepare_seconds: float = 0.0  # on the driver, before the Spark job runs
    run_seconds: float = 0.0  # the Spark job (read, parse, match, write findings)
    match_seconds: float = 0.0  # summed over tasks (CPU-ish), not wall time
    write_seconds: float = 0.0
    generation: int | None = None
    correlation_matches: int = 0  # records published to the correlation stage
    sensor_summaries: int = 0  # records published to sensor health
    field_observations: int = 0  # records published to field drift
    observe_seconds: float = 0.0  # summed over tasks: observing fields for drift
    # rule index -> [events evaluated, matches, seconds]
    rules: dict[int, list[float]] = field(default_factory=dict)
    # For the metrics (detections/stream/metrics.py): the rule id of each index above and
    # of each rule quarantined in this batch (id -> reason), the rules loaded and
    # quarantined after it, dead letters by reason code, finding documents by
    # "<active|shadow>:<level>", event-to-finding latency bucket counts (+Inf last, then
    # the sum in seconds; common.metrics.LATENCY_BUCKETS).
    rule_ids: dict[int, str] = field(default_factory=dict)
    new_quarantines: dict[str, str] = field(default_factory=dict)
    rules_loaded: int = 0
    rules_quarantined: int = 0
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)


@dataclass
class JobTotals:
    batches: int = 0
    events: int = 0
    rejected: int = 0
    matches: int = 0
    findings: int = 0
    shadow_findings: int = 0
    feed_only: int = 0
    created: int = 0
    duplicates: int = 0
    quarantined: dict[str, str] = field(default_factory=dict)
    demoted: dict[str, str] = field(default_factory=dict)

    def add(self, stats: BatchStats) -> None:
        self.batches += 1
        self.events += stats.events
        self.rejected += stats.rejected
        self.matches += stats.matches
        self.findings += stats.findings
        self.shadow_findings += stats.shadow_findings
        self.feed_only += stats.feed_only
        self.created += stats.created
        self.duplicates += stats.duplicates

    @property
    def not_written(self) -> int:
        """Matches that made no finding document and feed no correlation only: rules
        killed, outside their canary, or in shadow without a shadow index."""
        return self.matches - self.findings - self.shadow_findings - self.feed_only

    def outcome(self) -> str:
        """How the rule matches ended, exactly: e.g. ``6,578 rule matches -> 6,544
        findings (6,500 new, 44 already in Elasticsearch), of which 10 in the shadow
        index; 34 feed correlations only``. New plus known is every finding written."""
        written = self.findings + self.shadow_findings
        text = (
            f"{self.matches:,} rule matches -> {written:,} findings ({self.created:,} new, "
            f"{self.duplicates:,} already in Elasticsearch)"
        )
        if self.shadow_findings:
            text += f", of which {self.shadow_findings:,} in the shadow index"
        if self.feed_only:
            text += f"; {self.feed_only:,} feed correlations only"
        if self.not_written:
            text += f"; {self.not_written:,} not written (rule mode: killed or outside canary)"
        return text


@dataclass
class RunningContent:
    """The rules the job runs now: a plan, its engine spec, and the deployment state."""

    plan: DetectionPlan
    spec: MatcherSpec
    rule_infos: dict[int, dict[str, Any]]
    quarantined: dict[int, str]  # refused at compile time or failed at run time
    deployed: ActiveContent | None = None
    feed: PlannedFeed | None = None  # base rules whose matches the correlation stage reads
    # Built on the first batch and reused: the spec shipped once to the workers, and the
    # per-batch query (building it per batch cost a large share of a small batch).
    shipped: Any = None
    query: BatchQuery | None = None

    @classmethod
    def of(
        cls,
        plan: DetectionPlan,
        deployed: ActiveContent | None = None,
        feed: CorrelationFeed | None = None,
        feed_rules: Sequence[CompiledRule] = (),
        silent_rule_ids: frozenset[str] = frozenset(),
    ) -> RunningContent:
        """``silent_rule_ids``: rules whose matches only feed correlations (no finding):
        the engine does not explain their matches, nobody would read why."""
        if feed is not None:
            plan = with_rules(plan, feed_rules)
        planned = None
        if feed is not None:
            planned = PlannedFeed.of(feed, {p.index: str(p.rule.id) for p in plan.rules})
            for rule in sorted(planned.missing):
                log.warning("correlation base rule %s is not in the running rules", rule)
        return cls(
            plan=plan,
            spec=MatcherSpec.of(
                rule_specs(plan),
                rule_explanations(
                    plan, {p.index for p in plan.rules if str(p.rule.id) in silent_rule_ids}
                ),
            ),
            rule_infos={i: info.model_dump() for i, info in plan.rule_infos().items()},
            quarantined=dict(compile_matcher(plan).errors),
            deployed=deployed,
            feed=planned,
        )

    def with_modes(self, deployed: ActiveContent) -> RunningContent:
        """The same compiled bundle under new modes (kill switch, canary, demotion)."""
        return dataclasses.replace(self, deployed=deployed)

    @property
    def skip(self) -> set[int]:
        disabled = self.deployed.disabled_indices if self.deployed else frozenset()
        return set(self.quarantined) | set(disabled)

    def destinations(self, cfg: JobConfig) -> Destinations:
        modes: dict[int, tuple[str, RuleMode]] = {}
        if self.deployed is not None:
            for planned in self.plan.rules:
                mode = self.deployed.mode_of(planned.index)
                if mode.mode != "active":
                    modes[planned.index] = (str(planned.rule.id), mode)
        silent = frozenset(
            p.index for p in self.plan.rules if str(p.rule.id) in cfg.silent_rule_ids
        )
        return Destinations(
            cfg.findings_index, cfg.shadow_index, modes, cfg.events_index, silent, cfg.grouping
        )


def with_rules(plan: DetectionPlan, extra: Sequence[CompiledRule]) -> DetectionPlan:
    """``plan`` plus the rules of ``extra`` it does not hold (by id), re-planned."""
    from detections.compiler.plan import plan_rules

    have = {str(p.rule.id) for p in plan.rules}
    missing = [r for r in extra if str(r.id) not in have]
    if not missing:
        return plan
    rules = [p.rule for p in plan.rules] + missing
    return plan_rules(rules, plan.rejections, allow_unknown_fields=True)


#: Kafka consumer options of the job's sources. ``fetch.max.wait.ms`` (Kafka's default is
#: 500 ms) is how long the broker holds a fetch that finds less than ``fetch.min.bytes``:
#: a consumer reading an offset range can pay it on its last fetch. Measured: a batch read
#: of 1,400 records took 0.85 s with the default and 0.33 s with 10 ms; the streaming job's
#: capacity (bench.latency) rose from 3,420 to 4,080 events/s.
KAFKA_SOURCE_DEFAULTS = {"kafka.fetch.max.wait.ms": "10"}


def kafka_source(
    spark: SparkSession, cfg: JobConfig, topic: str | None = None, *, pattern: str | None = None
) -> DataStreamReader:
    """A topic (default: the events topic), or the topics matching ``pattern`` (a Java
    regex), as a stream, as every query of the job reads it (the settings' security
    options and any ``kafka.*`` override in ``cfg.kafka_options`` win). Only the detect
    query reads the events topic; the stateful stages read the derived topics it
    publishes, the normalizing stage the raw topics that feed it."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .options(**KAFKA_SOURCE_DEFAULTS)
        .options(**cfg.kafka_options)
    )
    if pattern:
        reader = reader.option("subscribePattern", pattern)
    else:
        reader = reader.option("subscribe", topic or cfg.events_topic)
    reader = reader.option("startingOffsets", cfg.starting_offsets).option(
        "failOnDataLoss", "false"
    )
    if cfg.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(cfg.max_offsets_per_trigger))
    if cfg.max_records_per_task:
        reader = reader.option("maxRecordsPerPartition", str(cfg.max_records_per_task))
    return reader


def _write_dlq(rejects: DataFrame, cfg: JobConfig) -> None:
    (
        rejects.write.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .options(**cfg.kafka_options)
        .option("topic", cfg.dlq_topic)
        .save()
    )


def make_batch_handler(
    content: RunningContent,
    cfg: JobConfig,
    totals: JobTotals,
    watcher: DeploymentWatcher | None = None,
    on_batch: Callable[[BatchStats], None] | None = None,
    on_content: Callable[[RunningContent], None] | None = None,
) -> Callable[[DataFrame, int], None]:
    """The foreachBatch function. Between micro-batches it follows the deployment store
    (new bundle, modes, kill switch) and quarantines rules that failed at run time. The
    derived records of a batch are published before it returns (so before its offsets
    are committed)."""
    current = [content]
    publisher = DerivedPublisher(cfg.producer_config())

    def follow_deployments() -> None:
        if watcher is None:
            return
        deployed = watcher.poll()
        if deployed is None:
            return
        running = current[0]
        if running.deployed is not None and running.deployed.digest == deployed.digest:
            current[0] = running.with_modes(deployed)
        else:
            if running.shipped is not None:
                running.shipped.unpersist()
            gc.unfreeze()  # the previous plan becomes collectable
            current[0] = RunningContent.of(
                deployed.plan, deployed, cfg.correlation_feed, cfg.feed_rules, cfg.silent_rule_ids
            )
            freeze_long_lived()
            for index, reason in current[0].quarantined.items():
                log.warning("rule %s refused: %s", deployed.plan.rules[index].rule.id, reason)
        if on_content:
            on_content(current[0])

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        follow_deployments()
        running = current[0]
        stats = BatchStats(batch_id)
        stats.generation = running.deployed.generation if running.deployed else None
        if running.shipped is None:
            context = batch.sparkSession.sparkContext
            running.shipped = context.broadcast((running.spec, running.rule_infos, running.feed))
        if running.query is None:
            names, computed = engine_inputs(running.plan, spark_event_schema().fieldNames())
            present = set(batch.columns)
            names += [c for c in (*SUMMARY_FIELDS, "timestamp") if c not in names and c in present]
            if cfg.observations_topic is not None and "extra" not in names and "extra" in present:
                names.append("extra")  # field drift counts every field's key, not only rules'
            running.query = BatchQuery(batch.sparkSession, names, computed)
        skip, destinations = running.skip, running.destinations(cfg)
        observe = cfg.observations_topic is not None
        versions = None
        if observe and cfg.sensor_versions is not None:
            versions = cfg.sensor_versions.shipped(batch.sparkSession.sparkContext.broadcast)
        records = running.query.map_in_arrow(
            batch,
            (id(running.shipped), tuple(sorted(skip)), repr(destinations), id(versions)),
            lambda: partition_processor(
                running.shipped,
                skip,
                cfg.es_hosts,
                destinations,
                cfg.es_options,
                cfg.es_patience_s,
                cfg.rule_budget_s,
                summarize=cfg.summaries_topic is not None,
                observe=observe,
                versions=versions,
            ),
            STATS_SCHEMA,
        )
        new_errors: dict[int, str] = {}
        refused: list[list[Any]] = []
        matches: list[tuple[bytes, bytes]] = []
        summaries: list[tuple[bytes, bytes]] = []
        observations: list[tuple[bytes, bytes]] = []
        stats.prepare_seconds = time.monotonic() - started
        rows = records.collect()
        stats.run_seconds = time.monotonic() - started - stats.prepare_seconds
        for row in rows:
            stats.events += row["events"]
            stats.rejected += row["rejected"]
            stats.matches += row["matches"]
            stats.findings += row["findings"]
            stats.shadow_findings += row["shadow_findings"]
            stats.feed_only += row["feed_only"]
            stats.created += row["created"]
            stats.duplicates += row["duplicates"]
            stats.match_seconds += row["match_s"]
            stats.write_seconds += row["write_s"]
            for index, error in json.loads(row["errors"]).items():
                new_errors.setdefault(int(index), error)
            for index, numbers in json.loads(row["rules"]).items():
                total = stats.rules.setdefault(int(index), [0, 0, 0.0])
                for i, value in enumerate(numbers):
                    total[i] += value
            refused += json.loads(row["rejects"])
            add_tally(stats, row)
            matches += [(k.encode(), v.encode()) for k, v in json.loads(row["correlation_matches"])]
            summaries += [(k.encode(), v.encode()) for k, v in json.loads(row["summaries"])]
            observations += [(k.encode(), v.encode()) for k, v in json.loads(row["observations"])]
            stats.observe_seconds += row["observe_s"]
            heard = json.loads(row["sensor_versions"])
            if heard and cfg.sensor_versions is not None:
                cfg.sensor_versions.update_pairs(heard)
        # The derived streams, published before the batch's offsets are committed.
        if matches:
            stats.correlation_matches = publisher.publish(cfg.matches_topic, matches)
        if summaries and cfg.summaries_topic is not None:
            stats.sensor_summaries = publisher.publish(cfg.summaries_topic, summaries)
        if observations and cfg.observations_topic is not None:
            stats.field_observations = publisher.publish(cfg.observations_topic, observations)
        checked = with_task_reasons(batch, refused)
        if stats.rejected:
            _write_dlq(rejected_records(checked), cfg)
        if cfg.archive_dir is not None and stats.events:
            from detections.content.workflow.backtest import write_archive

            write_archive(flat_valid_events(checked), cfg.archive_dir)
        if new_errors:
            for index, reason in new_errors.items():
                log.error("rule %s quarantined: %s", running.plan.rules[index].rule.id, reason)
            running.quarantined.update(new_errors)
            totals.quarantined.update(
                {str(running.plan.rules[i].rule.id): r for i, r in new_errors.items()}
            )
            if on_content:
                on_content(running)
        if watcher is not None and running.deployed is not None and cfg.demotion is not None:
            _demote(running, stats, cfg, watcher, totals)
        rules = running.plan.rules
        stats.rule_ids = {i: str(rules[i].rule.id) for i in (*stats.rules, *new_errors)}
        stats.new_quarantines = {str(rules[i].rule.id): r for i, r in new_errors.items()}
        stats.rules_loaded, stats.rules_quarantined = len(rules), len(running.quarantined)
        stats.seconds = time.monotonic() - started
        totals.add(stats)
        log.info(
            "batch %d: %d events, %d rejected to DLQ, %d rule matches -> %d findings (%d new,"
            " %d known) in %.1fs (prepare %.2fs, run %.2fs; tasks: %.1fs matching, %.1fs"
            " writing findings, %.2fs observing fields)",
            batch_id,
            stats.events,
            stats.rejected,
            stats.matches,
            stats.findings + stats.shadow_findings,
            stats.created,
            stats.duplicates,
            stats.seconds,
            stats.prepare_seconds,
            stats.run_seconds,
            stats.match_seconds,
            stats.write_seconds,
            stats.observe_seconds,
        )
        if on_batch:
            on_batch(stats)

    return handle


def add_tally(stats: BatchStats, row: Any) -> None:
    """Add one task's metrics columns (``worker.FindingTally``) to the batch's numbers."""
    for name in ("dlq_reasons", "levels"):
        into = getattr(stats, name)
        for key, n in json.loads(row[name]).items():
            into[key] = into.get(key, 0) + n
    latency = json.loads(row["latency"])
    if not stats.latency:
        stats.latency = [0.0] * len(latency)
    stats.latency = [a + b for a, b in zip(stats.latency, latency, strict=True)]


def with_task_reasons(batch: DataFrame, refused: Sequence[Sequence[Any]]) -> DataFrame:
    """The micro-batch with the reasons the tasks gave records the JVM's parse let through
    (``[topic, partition, offset, reason]``, see ``detections.stream.worker.checked_records``):
    a task's reason wins, so those records go to the dead-letter topic and out of the
    archive. Unchanged when no task refused anything, as in nearly every batch."""
    if not refused:
        return batch
    from pyspark.sql import functions as F

    found = batch.sparkSession.createDataFrame(
        [tuple(r) for r in refused],
        "topic string, partition int, offset long, task_reason string",
    )
    joined = batch.join(F.broadcast(found), ["topic", "partition", "offset"], "left")
    reason = F.coalesce(F.col("task_reason"), F.col("reject_reason"))
    return joined.withColumn("reject_reason", reason).drop("task_reason")


def _demote(
    running: RunningContent,
    stats: BatchStats,
    cfg: JobConfig,
    watcher: DeploymentWatcher,
    totals: JobTotals,
) -> None:
    """Move rules that crossed their alert-rate or cost threshold to shadow, and tell
    analysts with a finding. Takes effect at the next micro-batch."""
    from detections.sinks.elasticsearch import connect, write_documents
    from detections.sinks.finding_docs import finding_document

    assert running.deployed is not None and cfg.demotion is not None
    numbers = [
        RuleBatchStats(
            rule_id=str(running.plan.rules[i].rule.id),
            events=int(events),
            matches=int(matches),
            cost_us_per_event=seconds / events * 1e6 if events else None,
        )
        for i, (events, matches, seconds) in stats.rules.items()
    ]
    demotions = rules_to_demote(numbers, running.deployed.modes, cfg.demotion)
    if not demotions:
        return
    infos = {str(p.rule.id): p.info for p in running.plan.rules}
    es = connect(cfg.es_hosts, from_settings=False, **cfg.es_options)
    try:
        documents = []
        for demotion in demotions:
            watcher.record_demotion(demotion.rule_id, demotion.reason, demotion.metrics)
            totals.demoted[demotion.rule_id] = demotion.reason
            finding = demotion_finding(
                infos[demotion.rule_id],
                demotion,
                running.deployed.generation,
                tenant=cfg.operator_tenant,
            )
            documents.append(finding_document(finding))
        write_documents(es, cfg.findings_index, documents)
    finally:
        es.close()


def start(
    spark: SparkSession,
    plan: DetectionPlan,
    cfg: JobConfig,
    totals: JobTotals | None = None,
    on_batch: Callable[[BatchStats], None] | None = None,
) -> StreamingQuery:
    """Start the streaming query (returns at once; await or stop the query yourself).

    With ``cfg.deploy_dir`` the job runs the deployed bundle as soon as there is one
    (``plan`` until then) and follows every later deployment between micro-batches.
    """
    from detections.sinks.elasticsearch import connect, ensure_findings_index

    es = connect(cfg.es_hosts, from_settings=False, **cfg.es_options)
    try:
        ensure_findings_index(es, cfg.findings_index)
        if cfg.shadow_index:
            ensure_findings_index(es, cfg.shadow_index)
        if cfg.events_index:
            from detections.sinks.events import ensure_events_index

            ensure_events_index(es, cfg.events_index)
    finally:
        es.close()
    watcher = None
    if cfg.deploy_dir is not None:
        keys = sorted(cfg.trusted_keys.glob("*.pub")) if cfg.trusted_keys else []
        watcher = DeploymentWatcher(cfg.deploy_dir, keys)
    deployed = watcher.poll() if watcher else None
    content = RunningContent.of(
        deployed.plan if deployed else plan,
        deployed,
        cfg.correlation_feed,
        cfg.feed_rules,
        cfg.silent_rule_ids,
    )
    derived = [cfg.summaries_topic] if cfg.summaries_topic else []
    derived += [cfg.observations_topic] if cfg.observations_topic else []
    derived += [cfg.matches_topic] if cfg.correlation_feed is not None else []
    if derived:  # also where the brokers do not create topics themselves
        DerivedPublisher(cfg.producer_config()).ensure_topics(derived, cfg.internal_partitions)
    freeze_long_lived()  # the plan lives as long as the job: keep it out of full GCs
    totals = totals or JobTotals()
    status = [JobStatus.for_plan(content.plan)]

    def save_status() -> None:
        if cfg.status_file is not None:
            s = status[0]
            s.batches, s.events = totals.batches, totals.events
            s.dead_letters, s.matches = totals.rejected, totals.matches
            s.findings = totals.findings + totals.shadow_findings
            s.write(cfg.status_file)

    def content_changed(running: RunningContent) -> None:
        if status[0].plan_version != running.plan.version:
            status[0] = JobStatus.for_plan(running.plan)
        status[0].quarantined = []
        status[0].quarantine(running.plan, running.quarantined)
        for index, reason in running.quarantined.items():
            totals.quarantined.setdefault(str(running.plan.rules[index].rule.id), reason)
        save_status()

    for index, reason in content.quarantined.items():
        log.warning("rule %s quarantined: %s", content.plan.rules[index].rule.id, reason)
    content_changed(content)

    def batch_done(stats: BatchStats) -> None:
        save_status()
        if on_batch:
            on_batch(stats)

    reader = kafka_source(spark, cfg)
    handler = make_batch_handler(content, cfg, totals, watcher, batch_done, content_changed)
    writer = (
        flat_records(reader.load())
        .writeStream.queryName("sigstream-detect")
        .option("checkpointLocation", str(cfg.checkpoint_dir))
        .foreachBatch(handler)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    return writer.start()


@dataclass
class DetectionPass:
    """The detection pass as a :class:`~detections.stream.stage.StreamingStage`."""

    plan: DetectionPlan
    totals: JobTotals | None = None
    on_batch: Callable[[BatchStats], None] | None = None
    name: str = "detect"

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery:
        return start(spark, self.plan, cfg, self.totals, self.on_batch)


# A companion runs beside the detect query in the same Spark application (the correlation
# stage, sensor health): a StreamingStage (detections/stream/stage.py), or a plain function
# (session, job config) -> query or None.
Companion = StreamingStage | StageFunction


def run(
    spark: SparkSession,
    plan: DetectionPlan,
    cfg: JobConfig,
    on_batch: Callable[[BatchStats], None] | None = None,
    companions: Sequence[Companion] = (),
    upstream: Sequence[Companion] = (),
) -> JobTotals:
    """Run until stopped (or, with ``available_now``, until everything in Kafka is processed).

    Companion queries start right after the detect query and run beside it; the job runs
    until all of them have terminated, and stops all of them if any fails or on Ctrl-C.
    With ``available_now`` the companions read what the detect query publishes while it
    runs, and once it is done each is drained (everything published processed) and
    stopped: their start and first batches overlap the detection pass instead of
    following it.

    ``upstream`` stages write the events topic (the normalizing stage): they start before
    the detect query and run beside it; with ``available_now`` each reads what its topics
    hold and ends before the detect query starts (which takes the events topic's end
    offsets when it starts, so it must see everything they wrote).

    A companion with a ``prepare(cfg)`` method has it called before the detect query
    starts (the drift stage seeds the sensor versions the detection pass labels events
    with: ``detections.drift.stage.FieldDriftStage.prepare``).
    """
    totals = JobTotals()
    queries: list[StreamingQuery] = []
    try:
        for stage in upstream:
            query = as_stage(stage).start(spark, cfg)
            if query is not None and cfg.available_now:
                query.awaitTermination()  # raises when the stage failed
                spark.streams.resetTerminated()
                read = sum(p["numInputRows"] for p in query.recentProgress)
                log.info("%s: %d records read before the detection pass", query.name, read)
            elif query is not None:
                queries.append(query)
        for companion in companions:
            prepare = getattr(companion, "prepare", None)
            if callable(prepare):
                prepare(cfg)
        queries.insert(0, DetectionPass(plan, totals, on_batch).start(spark, cfg))
        staged = dataclasses.replace(cfg, drained_by_job=cfg.available_now)
        queries += [q for c in companions if (q := as_stage(c).start(spark, staged)) is not None]
        if cfg.available_now:
            _drain(spark, queries[0], queries[1:])
        # awaitAnyTermination raises as soon as any query fails, so one broken query
        # stops the job instead of leaving the others running unobserved.
        while any(query.isActive for query in queries):
            spark.streams.awaitAnyTermination()
            spark.streams.resetTerminated()
    except KeyboardInterrupt:
        log.info("stopping (Ctrl-C): the next run resumes from the checkpoint")
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
    return totals


def _drain(spark: SparkSession, detect: StreamingQuery, stages: Sequence[StreamingQuery]) -> None:
    """--once: wait for the detect query to end, then for each stage to process all that
    was published (a chain's firings, published back, included) and stop it. A failing
    query raises."""
    while detect.isActive:
        spark.streams.awaitAnyTermination()  # raises when any query fails
        spark.streams.resetTerminated()
    if detect.exception() is not None:
        raise detect.exception()  # type: ignore[misc]
    for stage in stages:
        stage.processAllAvailable()  # raises when the stage failed
        stage.stop()
