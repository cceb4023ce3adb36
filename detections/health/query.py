"""The sensor-health streaming query: Kafka events -> per-sensor state -> health findings
and the sensors index.

It runs beside the detect query (a ``detections.job`` companion) with its own Kafka
source and checkpoint, so it neither slows the rule engine nor depends on it:

* parse only the envelope (and heartbeat) columns: a small ``from_json`` schema picked
  from the generated event schema, the Kafka timestamp standing in for ``received_time``
  when the gateway did not stamp one;
* ``groupBy(tenant_id, sensor_id).applyInPandasWithState`` keeps one ``SensorState``
  (JSON) per sensor and runs the pure state machine (``detections.health.state``), with
  processing-time timeouts: a silent sensor sends nothing, only a timer can notice it;
* ``foreachBatch``: health findings to the findings index (``write_documents``: create
  with deterministic ids, then the groups analysts triage) and one status document per
  sensor touched to the sensors index.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from detections.findings import finding_document
from detections.health.findings import (
    health_finding,
    sensor_doc_id,
    sensor_status,
    sensors_mappings,
)
from detections.health.state import (
    HealthConfig,
    Record,
    SensorState,
    expire,
    next_timer,
    observe,
)
from detections.job import JobConfig, kafka_source

log = logging.getLogger("sigstream.health")

#: Envelope and heartbeat fields health reads; their types come from the generated schema.
HEALTH_FIELDS = (
    "tenant_id",
    "sensor_id",
    "host",
    "event_id",
    "seq",
    "event_time",
    "received_time",
    "event_type",
    "expected_interval_s",
    "agent_version",
    "events_sent",
    "events_dropped",
    "events_spooled",
)

STATE_SCHEMA = T.StructType([T.StructField("json", T.StringType())])
OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("target", T.StringType()),  # "finding" or "sensor"
        T.StructField("kind", T.StringType()),  # observation kind, or "status"
        T.StructField("doc_id", T.StringType()),
        T.StructField("body", T.StringType()),
    ]
)


def health_schema() -> T.StructType:
    """The slice of the event schema health parses (cheap: a dozen columns, not 150)."""
    from schemas.generate import spark_event_schema

    full = spark_event_schema()
    return T.StructType([full[name] for name in HEALTH_FIELDS])


def envelope_rows(records: DataFrame) -> DataFrame:
    """Kafka rows -> one row per parseable event: what ``Record`` needs, epoch seconds."""
    e = F.from_json(F.col("value").cast("string"), health_schema(), {"mode": "PERMISSIVE"})
    parsed = records.select(e.alias("e"), "timestamp", "partition", "offset")
    return parsed.where(
        F.col("e.sensor_id").isNotNull()
        & F.col("e.event_id").isNotNull()
        & F.col("e.event_time").isNotNull()
    ).select(
        F.coalesce(F.col("e.tenant_id"), F.lit("default")).alias("tenant_id"),
        F.col("e.sensor_id").alias("sensor_id"),
        F.col("e.host").alias("host"),
        F.col("e.event_id").alias("event_id"),
        F.col("e.seq").alias("seq"),
        F.col("e.event_time").cast("double").alias("event_time"),
        F.coalesce(F.col("e.received_time"), F.col("timestamp")).cast("double").alias("received"),
        (F.col("e.event_type") == "heartbeat").alias("heartbeat"),
        F.col("e.expected_interval_s").cast("double").alias("interval_s"),
        F.col("e.agent_version").alias("agent_version"),
        F.col("e.events_sent").alias("events_sent"),
        F.col("e.events_dropped").alias("events_dropped"),
        F.col("e.events_spooled").alias("events_spooled"),
        "partition",
        "offset",
    )


_COLUMNS = (
    "event_id",
    "event_time",
    "received",
    "seq",
    "host",
    "heartbeat",
    "interval_s",
    "agent_version",
    "events_sent",
    "events_dropped",
    "events_spooled",
    "partition",
    "offset",
)


def _value(v: Any) -> Any:
    """None for SQL nulls (NaN in float columns, None/NaN in object ones)."""
    return None if v is None or v != v else v


def _int(v: Any) -> int | None:
    v = _value(v)
    return None if v is None else int(v)


def _records(c: dict[str, list[Any]], rows: list[int]) -> list[Record]:
    """Rows ``rows`` of the columns ``c`` -> Records in arrival (partition, offset) order.
    Plain lists, not pandas row access: that cost more than the state machine itself."""
    order = sorted(rows, key=lambda i: (c["partition"][i], c["offset"][i]))
    out = []
    for i in order:
        interval_s = _value(c["interval_s"][i])
        out.append(
            Record(
                event_id=c["event_id"][i],
                event_time=float(c["event_time"][i]),
                received=float(c["received"][i]),
                seq=_int(c["seq"][i]),
                host=_value(c["host"][i]),
                heartbeat=bool(c["heartbeat"][i]),
                interval_s=None if interval_s is None else float(interval_s),
                agent_version=_value(c["agent_version"][i]),
                events_sent=_int(c["events_sent"][i]),
                events_dropped=_int(c["events_dropped"][i]),
                events_spooled=_int(c["events_spooled"][i]),
            )
        )
    return out


def _by_sensor(frames: Iterator[pd.DataFrame]) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
    """The batch's columns as lists, and sensor key -> its row numbers."""
    batch = [f for f in frames if len(f)]
    if not batch:
        return {}, {}
    frame = pd.concat(batch, ignore_index=True) if len(batch) > 1 else batch[0]
    c = {name: frame[name].tolist() for name in (*_COLUMNS, "tenant_id", "sensor_id")}
    rows: dict[str, list[int]] = {}
    for i, (tenant, sensor) in enumerate(zip(c["tenant_id"], c["sensor_id"], strict=True)):
        rows.setdefault(f"{tenant}{_SEP}{sensor}", []).append(i)
    return c, rows


_SEP = "\x1f"


def state_function(
    cfg: HealthConfig, clock: Callable[[], float] = time.time, timers: bool = True
) -> Callable[[Any, Iterator[pd.DataFrame], GroupState], Iterator[pd.DataFrame]]:
    """The ``applyInPandasWithState`` function for one bucket of sensors: their records
    of the batch (or a timer) in, finding documents and status documents out.

    Sensors with records are observed; the bucket's other sensors get their timer check
    (gaps past the grace, silence) on the same call, since Spark fires a key's timeout
    only when the key has no data, and a bucket of many sensors nearly always has some.
    """

    def update(
        key: Any, frames: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        now = clock()
        sensors: dict[str, dict[str, Any]] = json.loads(state.get[0]) if state.exists else {}
        c, rows = ({}, {}) if state.hasTimedOut else _by_sensor(frames)
        out: list[tuple[str, str, str, str]] = []
        timer = math.inf
        for name in sorted(set(sensors) | set(rows)):
            tenant, sensor = name.split(_SEP, 1)
            current = SensorState(**sensors[name]) if name in sensors else SensorState()
            mine = rows.get(name)
            if mine:
                observations = observe(current, _records(c, mine), now, cfg)
            else:
                observations = expire(current, now, cfg)
            sensors[name] = asdict(current)
            timer = min(timer, next_timer(current, now, cfg))
            for obs in observations:
                if obs.kind == "recovered":
                    continue
                doc_id, body = finding_document(health_finding(tenant, sensor, current.host, obs))
                out.append(("finding", obs.kind, doc_id, json.dumps(body)))
            if mine or observations:
                status = sensor_status(tenant, sensor, current, now, cfg)
                doc = status.model_dump_json()
                out.append(("sensor", "status", sensor_doc_id(tenant, sensor), doc))
        state.update((json.dumps(sensors, separators=(",", ":")),))
        if timers and timer < math.inf:
            state.setTimeoutDuration(int(timer * 1000))
        yield pd.DataFrame({n: [r[i] for r in out] for i, n in enumerate(OUTPUT_SCHEMA.names)})

    return update


def health_updates(
    events: DataFrame, cfg: HealthConfig, buckets: int = 256, timers: bool = True
) -> DataFrame:
    """Envelope rows -> finding and status documents, with per-sensor state and timers.

    State is kept per bucket of sensors (a stable hash of tenant and sensor), not per
    sensor: ``applyInPandasWithState`` has a fixed cost per key and batch (tens of ms on a
    loaded machine) that dwarfs the state machine's work for one sensor. The number of
    buckets is part of the checkpoint: changing it needs a new checkpoint.

    ``timers=False`` for an available-now run: Spark keeps running no-data batches for an
    operator with processing-time timeouts, so such a query would never finish. Without
    timers, silence is only noticed for sensors of buckets that still receive records.
    """
    bucket = F.pmod(F.xxhash64("tenant_id", "sensor_id"), F.lit(buckets)).alias("bucket")
    return (
        events.withColumn("bucket", bucket)
        .groupBy("bucket")
        .applyInPandasWithState(
            state_function(cfg, timers=timers),
            OUTPUT_SCHEMA,
            STATE_SCHEMA,
            "update",
            GroupStateTimeout.ProcessingTimeTimeout if timers else GroupStateTimeout.NoTimeout,
        )
    )


@dataclass
class HealthBatch:
    batch_id: int
    sensors: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    created: int = 0
    seconds: float = 0.0
    state_seconds: float = 0.0  # the Spark job: read, parse, per-sensor state (collect)
    write_seconds: float = 0.0  # findings and sensor documents to Elasticsearch


def write_batch(
    rows: list[Any], es_hosts: tuple[str, ...], findings_index: str, sensors_index: str
) -> tuple[int, int]:
    """Write one batch's documents; returns (new findings, sensor documents)."""
    from elasticsearch import helpers

    from detections.sinks.elasticsearch import connect, write_documents

    findings = [(r["doc_id"], json.loads(r["body"])) for r in rows if r["target"] == "finding"]
    sensors = [
        {
            "_op_type": "index",
            "_index": sensors_index,
            "_id": r["doc_id"],
            "_source": json.loads(r["body"]),
        }
        for r in rows
        if r["target"] == "sensor"
    ]
    es = connect(es_hosts)
    try:
        created = write_documents(es, findings_index, findings).created if findings else 0
        if sensors:
            helpers.bulk(es, sensors, chunk_size=2000, max_retries=5)
        return created, len(sensors)
    finally:
        es.close()


def ensure_indices(es_hosts: tuple[str, ...], findings_index: str, sensors_index: str) -> None:
    from detections.sinks.elasticsearch import connect, ensure_findings_index, ensure_index

    es = connect(es_hosts)
    try:
        ensure_findings_index(es, findings_index)
        mappings = sensors_mappings()
        if not es.indices.exists(index=sensors_index):
            es.options(ignore_status=400).indices.create(
                index=sensors_index,
                mappings=mappings,
                settings={"number_of_shards": 1, "number_of_replicas": 0},
            )
        else:
            ensure_index(es, sensors_index, mappings)
    finally:
        es.close()


def checkpoint_for(job_checkpoint: Path) -> Path:
    """Beside the detect query's checkpoint, never inside it."""
    return job_checkpoint.parent / f"{job_checkpoint.name}-sensor-health"


def start(
    spark: SparkSession,
    cfg: JobConfig,
    health: HealthConfig,
    sensors_index: str,
    on_batch: Callable[[HealthBatch], None] | None = None,
    checkpoint: Path | None = None,
    buckets: int = 256,
) -> StreamingQuery:
    """Start the sensor-health query (returns at once)."""
    ensure_indices(cfg.es_hosts, cfg.findings_index, sensors_index)
    reader = kafka_source(spark, cfg)
    # No maxOffsetsPerTrigger (the detect query's cap is not applied): a batch reads all
    # that has arrived, so a sensor with records waiting in Kafka is never timed out as
    # silent because a capped batch did not reach them yet. Health reads a dozen columns
    # per record, so even a large backlog is a cheap batch.
    timers = not cfg.available_now
    updates = health_updates(envelope_rows(reader.load()), health, buckets, timers)

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        rows = batch.collect()
        stats = HealthBatch(batch_id)
        stats.state_seconds = time.monotonic() - started
        stats.findings.update(r["kind"] for r in rows if r["target"] == "finding")
        stats.created, stats.sensors = write_batch(
            rows, cfg.es_hosts, cfg.findings_index, sensors_index
        )
        stats.seconds = time.monotonic() - started
        stats.write_seconds = stats.seconds - stats.state_seconds
        if stats.findings:
            log.info(
                "health batch %d: %d sensors updated, findings %s (%d new) in %.1fs",
                batch_id,
                stats.sensors,
                dict(stats.findings),
                stats.created,
                stats.seconds,
            )
        if on_batch:
            on_batch(stats)

    writer = (
        updates.writeStream.queryName("sigstream-sensor-health")
        .outputMode("update")
        .option("checkpointLocation", str(checkpoint or checkpoint_for(cfg.checkpoint_dir)))
        .foreachBatch(handle)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    return writer.start()


def config_from_settings() -> tuple[HealthConfig, str]:
    from sigstream.settings import get_settings

    s = get_settings()
    health = HealthConfig(
        default_interval_s=s.health_interval_s,
        silence_multiplier=s.health_silence_multiplier,
        skew_threshold_s=s.health_skew_threshold_s,
        gap_grace_s=s.health_gap_grace_s,
    )
    return health, s.sensors_index


def start_sensor_health(spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None:
    """The ``detections.job`` companion: the health query with the process settings."""
    health, sensors_index = config_from_settings()
    return start(spark, cfg, health, sensors_index)
