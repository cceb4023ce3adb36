"""Field drift as a streaming stage (``detections.stream.stage.StreamingStage``): the
field observations the detection pass publishes -> per-route state in Elasticsearch ->
field-drift findings.

Why a small Elasticsearch-backed state, folded on the driver, rather than Spark state:
the state is per (tenant, route), a few dozen documents per tenant, and the records are
one per route per task per micro-batch, so a batch is a few hundred small JSON records
at most; ``sigstream rules drift`` must read the state anyway, and ``--set-baseline``
must snapshot it while the job runs. One copy in Elasticsearch serves all three; Spark
state would need the same documents exported. The Kafka offsets are still Spark's
(checkpointed): a replayed batch folds its records again, which inflates counters (the
judgement uses shares and "events since last seen", so it only judges a little sooner)
and never repeats a finding (deterministic id, create-only).

A record that is not an observation goes to the DLQ with its reason, on its own.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from common.dlq import dlq_headers, kafka_origin
from detections.compiler.plan import DetectionPlan
from detections.drift import store
from detections.drift.finding_docs import drift_finding
from detections.drift.observe import Observation, ObservationError, decode
from detections.drift.report import RuleFields, observed_route, rule_fields, rules_using
from detections.drift.state import DriftConfig, TenantState, fold, judge, new_route_state
from detections.drift.versions import SensorVersions
from detections.sinks.finding_docs import finding_document
from detections.stream.derived import DerivedPublisher
from detections.stream.job import JobConfig, kafka_source

log = logging.getLogger("sigstream.drift")
INVALID = "field_observation_invalid"
DLQ_STAGE = "field-drift"


def drift_config(settings: Any) -> DriftConfig:
    """The drift thresholds of ``settings`` (``SIGSTREAM_DRIFT_*``)."""
    return DriftConfig(
        expected=settings.drift_expected,
        min_events=settings.drift_min_events,
        type_share=settings.drift_type_share,
    )


@dataclass
class DriftBatch:
    batch_id: int
    records: int = 0
    rejected: int = 0
    routes: int = 0
    findings: int = 0  # new field-drift findings
    # (tenant, route, field, sensor version)
    gone: list[tuple[str, str, str, str]] = field(default_factory=list)
    baselines: dict[str, str] = field(default_factory=dict)  # set automatically
    seconds: float = 0.0


def fold_batch(
    es: Any,
    index: str,
    observations: Sequence[Observation],
    rules: Sequence[RuleFields],
    cfg: DriftConfig,
    now: float,
    baseline_after_s: float = 0.0,
) -> tuple[list[tuple[Any, list[RuleFields]]], dict[str, str], int]:
    """Fold one batch's observations into the index, one bucket per (tenant, route, sensor
    version); returns the gone fields that active rules read (each with those rules), the
    baselines set automatically, and the number of buckets written. The heartbeats of the
    batch (``Observation.versions``) are kept per tenant (``TenantState.versions``, what
    ``seed_versions`` reads at start); the driver's sensor -> version map is not told
    them here: the detection pass's tasks already report them (``sensor_versions``)."""
    tenants = sorted({o.tenant for o in observations})
    tenant_docs_read = store.get_many(es, index, [store.tenant_doc_id(t) for t in tenants])
    tenant_states = {
        t: TenantState.of(tenant_docs_read.get(store.tenant_doc_id(t)), t) for t in tenants
    }
    buckets: list[tuple[Observation, str, str]] = []
    for o in observations:
        o = tenant_states[o.tenant].admit(o)  # the route bound
        name = store_route(o.route)
        buckets.append((o, name, tenant_states[o.tenant].bucket(name, o.version)))
    docs = store.get_many(
        es, index, [store.route_doc_id(o.tenant, name, v) for o, name, v in buckets]
    )
    states: dict[tuple[str, str, str], dict[str, Any]] = {}
    for o, name, version in buckets:
        key = (o.tenant, name, version)
        state = states.get(key)
        if state is None:
            state = docs.get(store.route_doc_id(*key)) or new_route_state(
                o.tenant, o.route, version
            )
            state.setdefault("version", version)
            states[key] = state
        fold(state, o, now)
        tenant_states[o.tenant].observe(o, now)
    store.put_many(es, index, {store.route_doc_id(*k): s for k, s in states.items()})
    store.put_many(
        es,
        index,
        {
            store.tenant_doc_id(t): {
                "kind": "tenant",
                "tenant_id": t,
                "first_seen": s.first_seen,
                "versions": s.versions,
                "route_versions": s.route_versions,
                "routes_cut": s.routes_cut,
            }
            for t, s in tenant_states.items()
        },
        merge=True,
    )
    auto: dict[str, str] = {}
    for t, s in tenant_states.items():
        if s.baseline_due(now, baseline_after_s):
            auto.update(store.set_baseline(es, index, now, "auto", t))
    tenant_docs = {t: s.to_doc() for t, s in tenant_states.items()}
    baselines = store.current_baselines(es, index, tenant_docs, states.keys())
    known = {t: s.versions for t, s in tenant_states.items()}
    gone: list[tuple[Any, list[RuleFields]]] = []
    for d in judge(list(states.values()), baselines, cfg, known):
        if d.kind != "gone":
            continue
        state = states[(d.tenant, d.route, d.version)]
        users = rules_using(rules, observed_route(state), d.field, active_only=True)
        if users:
            gone.append((d, users))
    return gone, auto, len(states)


def seed_versions(es: Any, index: str, versions: SensorVersions) -> int:
    """The sensor versions the stage stored per tenant, into the driver's map (at start:
    a restarted job labels events by version before the sensors' next heartbeats)."""
    seeded = 0
    for doc in store.search(es, index, "tenant"):
        seeded += versions.update(str(doc["tenant_id"]), doc.get("versions") or {})
    return seeded


def with_quarantine(rules: Sequence[RuleFields], status_file: Path | None) -> list[RuleFields]:
    """The rules, those the detection pass quarantined (its status file) not active: a
    quarantined rule does not run, so a field only it reads going away breaks nothing."""
    if status_file is None or not status_file.exists():
        return list(rules)
    from common.safe_yaml import ContentError
    from detections.stream.status import quarantined_ids, read_status

    try:
        status = read_status(status_file)
    except (ContentError, OSError) as exc:
        log.warning("field drift: cannot read the job status %s: %s", status_file, exc)
        return list(rules)
    quarantined = quarantined_ids(status)
    return [dataclasses.replace(r, active=False) if r.rule_id in quarantined else r for r in rules]


def store_route(route: tuple[str | None, str | None, str | None]) -> str:
    from detections.drift.state import route_name

    return route_name(route)


def checkpoint_for(job_checkpoint: Path) -> Path:
    """Beside the detect query's checkpoint, never inside it."""
    return job_checkpoint.parent / f"{job_checkpoint.name}-field-drift"


@dataclass(frozen=True)
class FieldDriftStage:
    """The drift stage: its own thresholds and index, the plan's rules and their fields."""

    plan: DetectionPlan
    drift: DriftConfig
    index: str
    baseline_after_s: float = 0.0
    inactive: frozenset[str] = frozenset()
    name: str = "field-drift"

    @classmethod
    def of(cls, settings: Any, plan: DetectionPlan) -> FieldDriftStage:
        return cls(
            plan,
            drift_config(settings),
            settings.drift_index,
            settings.drift_baseline_after_h * 3600.0,
        )

    def prepare(self, cfg: JobConfig) -> None:
        """Before the detect query starts: seed the driver's sensor -> version map with
        the versions this stage stored, so a restarted job labels events by version from
        its first micro-batch, before the sensors' next heartbeats."""
        if cfg.observations_topic is None or cfg.sensor_versions is None:
            return
        from detections.sinks.elasticsearch import connect

        es = connect(cfg.es_hosts, from_settings=False, **cfg.es_options)
        try:
            if es.indices.exists(index=self.index):
                seeded = seed_versions(es, self.index, cfg.sensor_versions)
                log.info("field drift: %d sensor versions seeded before the detection pass", seeded)
        finally:
            es.close()

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None:
        if cfg.observations_topic is None:
            return None
        return start(
            spark,
            cfg,
            rule_fields(self.plan, self.inactive),
            self.drift,
            self.index,
            self.baseline_after_s,
        )


def start(
    spark: SparkSession,
    cfg: JobConfig,
    rules: Sequence[RuleFields],
    drift: DriftConfig,
    index: str,
    baseline_after_s: float = 0.0,
    on_batch: Callable[[DriftBatch], None] | None = None,
    checkpoint: Path | None = None,
) -> StreamingQuery:
    """Start the drift query over ``cfg.observations_topic``; returns at once."""
    from detections.sinks.elasticsearch import connect, ensure_findings_index, write_documents

    assert cfg.observations_topic is not None
    if cfg.runs_until_drained():
        for query in spark.streams.active:
            if query.name == "sigstream-detect":
                query.awaitTermination()
    es = connect(cfg.es_hosts, from_settings=False, **cfg.es_options)
    try:
        ensure_findings_index(es, cfg.findings_index)
        store.ensure_drift_index(es, index)
    finally:
        es.close()
    publisher = DerivedPublisher(cfg.producer_config())
    publisher.ensure_topics([cfg.observations_topic, cfg.dlq_topic], cfg.internal_partitions)
    reader = kafka_source(spark, cfg, cfg.observations_topic)
    records = reader.load().select("key", "value", "topic", "partition", "offset")

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        stats = DriftBatch(batch_id)
        active = with_quarantine(rules, cfg.status_file)
        observations: list[Observation] = []
        rejected = []
        for row in batch.collect():
            stats.records += 1
            try:
                observations.append(decode(bytes(row["value"] or b"")))
            except ObservationError as exc:
                origin = kafka_origin(row["topic"], row["partition"], row["offset"])
                headers = dlq_headers(f"{INVALID}: {exc}"[:500], origin, DLQ_STAGE)
                key = None if row["key"] is None else bytes(row["key"])
                rejected.append((key, bytes(row["value"] or b""), headers))
        if rejected:
            stats.rejected = publisher.publish(cfg.dlq_topic, rejected)
        if observations:
            es = connect(cfg.es_hosts, from_settings=False, **cfg.es_options)
            try:
                now = time.time()
                gone, stats.baselines, stats.routes = fold_batch(
                    es,
                    index,
                    observations,
                    active,
                    drift,
                    now,
                    baseline_after_s,
                )
                documents = [
                    finding_document(drift_finding(d, users, now, cfg.grouping))
                    for d, users in gone
                ]
                if documents:
                    stats.findings = write_documents(es, cfg.findings_index, documents).created
                stats.gone = [(d.tenant, d.route, d.field, d.version) for d, _ in gone]
            finally:
                es.close()
        stats.seconds = time.monotonic() - started
        if stats.findings or stats.baselines:
            log.info(
                "drift batch %d: %d observations, %d routes, baselines set %s, %d new "
                "field-drift findings in %.1fs",
                batch_id,
                len(observations),
                stats.routes,
                stats.baselines or "-",
                stats.findings,
                stats.seconds,
            )
        if on_batch:
            on_batch(stats)

    writer = (
        records.writeStream.queryName("sigstream-field-drift")
        .option("checkpointLocation", str(checkpoint or checkpoint_for(cfg.checkpoint_dir)))
        .foreachBatch(handle)
    )
    if cfg.runs_until_drained():
        writer = writer.trigger(availableNow=True)
    else:
        every = cfg.trigger_seconds if cfg.drained_by_job else cfg.health_trigger_seconds
        writer = writer.trigger(processingTime=f"{every} seconds")
    return writer.start()
