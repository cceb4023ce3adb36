"""The sensor-health streaming query: per-sensor summaries -> per-sensor state -> health
findings and the sensors index.

Only the detect query reads and parses the raw events: each of its tasks summarizes its
slice per sensor (``detections.health.summary``) and the job produces the summaries to
the internal topic ``summaries_topic`` (default ``sigstream.sensor-summaries``), keyed by
tenant and sensor. This query (a ``detections.stream.job`` companion, own checkpoint) reads that
topic:

* the value is decoded in the Python worker (``summary.decode``, versioned JSON), the
  Kafka key picks the state bucket; a record that is not a summary is not dropped: it
  leaves the state function as a "rejected" row (reason, origin, original bytes) and the
  sink sends it to the DLQ (``cfg.dlq_topic``) before the batch ends;
* ``groupBy(bucket).applyInPandasWithState`` keeps one ``SensorState`` (JSON) per sensor
  and runs the pure state machine (``detections.health.state.observe_summary``) over each
  sensor's summaries in arrival order, with processing-time timeouts: a silent sensor
  sends nothing, only a timer can notice it;
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

from common.dlq import dlq_headers, kafka_origin
from detections.health.finding_docs import (
    health_finding,
    sensor_doc_id,
    sensor_status,
    sensors_mappings,
)
from detections.health.state import (
    HealthConfig,
    SensorState,
    expire,
    next_timer,
    observe_summary,
)
from detections.health.summary import Summary, SummaryError, decode
from detections.sinks.finding_docs import finding_document
from detections.sinks.grouping import GroupingConfig
from detections.stream.derived import DerivedPublisher
from detections.stream.job import JobConfig, kafka_source
from detections.stream.spark_session import query_conf

log = logging.getLogger("sigstream.health")

STATE_SCHEMA = T.StructType([T.StructField("json", T.StringType())])
OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("target", T.StringType()),  # "finding", "sensor" or "rejected"
        T.StructField("kind", T.StringType()),  # observation kind, "status", or the reason
        T.StructField("doc_id", T.StringType()),  # or the origin (topic:partition:offset)
        T.StructField("body", T.StringType()),
        # "rejected" rows only: the record's original key and value, for the DLQ
        T.StructField("raw_key", T.BinaryType()),
        T.StructField("raw_value", T.BinaryType()),
    ]
)
#: The DLQ reason prefix of a summaries-topic record that is not a summary.
INVALID = "sensor_summary_invalid"
DLQ_STAGE = "sensor-health"


def summary_rows(records: DataFrame) -> DataFrame:
    """Summaries-topic rows -> (key, value, partition, offset, topic, raw_key): the JSON
    is decoded in the state function, by the same code that wrote it. The value stays
    bytes (a record that is not a summary goes to the DLQ as it was); the key as a string
    picks the state bucket, its bytes go to the DLQ with a rejected record."""
    return records.select(
        F.col("key").cast("string").alias("key"),
        "value",
        "partition",
        "offset",
        "topic",
        F.col("key").alias("raw_key"),
    )


@dataclass(frozen=True)
class Rejected:
    """A summaries-topic record that is not a summary: why, where from, its bytes."""

    reason: str
    origin: str
    raw_key: bytes | None
    raw_value: bytes | None


def summary_problem(value: bytes | str | None) -> tuple[Summary | None, str | None]:
    """(the summary, None) of one value, or (None, the DLQ reason) when it is not one."""
    if value is None:
        return None, f"{INVALID}: no value"
    try:
        return decode(value), None
    except SummaryError as exc:
        return None, f"{INVALID}: {exc}"


def _by_sensor(
    frames: Iterator[pd.DataFrame], rejected: list[Rejected] | None = None
) -> dict[str, list[Summary]]:
    """The batch's summaries per sensor key, each sensor's in arrival order; records
    that are not summaries go to ``rejected`` (with their reason, origin and bytes)."""
    out: dict[str, list[tuple[tuple[Any, ...], Summary]]] = {}
    for frame in frames:
        if not len(frame):
            continue
        n = len(frame)
        topics = frame["topic"].tolist() if "topic" in frame else [None] * n
        keys = frame["raw_key"].tolist() if "raw_key" in frame else [None] * n
        for value, partition, offset, topic, key in zip(
            frame["value"].tolist(),
            frame["partition"].tolist(),
            frame["offset"].tolist(),
            topics,
            keys,
            strict=True,
        ):
            summary, reason = summary_problem(value)
            if summary is None:
                assert reason is not None
                origin = kafka_origin(topic, partition, offset)
                log.warning("sensor-summaries record %s refused (to the DLQ): %s", origin, reason)
                if rejected is not None:
                    rejected.append(Rejected(reason, origin, _bytes(key), _bytes(value)))
                continue
            name = f"{summary.tenant}{_SEP}{summary.sensor}"
            out.setdefault(name, []).append(((*summary.order(), partition, offset), summary))
    return {name: [s for _, s in sorted(items, key=lambda i: i[0])] for name, items in out.items()}


def _bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


_SEP = "\x1f"


def state_function(
    cfg: HealthConfig,
    clock: Callable[[], float] = time.time,
    timers: bool = True,
    grouping: GroupingConfig | None = None,
) -> Callable[[Any, Iterator[pd.DataFrame], GroupState], Iterator[pd.DataFrame]]:
    """The ``applyInPandasWithState`` function for one bucket of sensors: their summaries
    of the batch (or a timer) in, finding documents and status documents out.

    Sensors with summaries are observed; the bucket's other sensors get their timer check
    (gaps past the grace, silence) on the same call, since Spark fires a key's timeout
    only when the key has no data, and a bucket of many sensors nearly always has some.
    """

    def update(
        key: Any, frames: Iterator[pd.DataFrame], state: GroupState
    ) -> Iterator[pd.DataFrame]:
        now = clock()
        sensors: dict[str, dict[str, Any]] = json.loads(state.get[0]) if state.exists else {}
        rejected: list[Rejected] = []
        rows = {} if state.hasTimedOut else _by_sensor(frames, rejected)
        out: list[tuple[Any, ...]] = [
            ("rejected", r.reason, r.origin, "", r.raw_key, r.raw_value) for r in rejected
        ]
        timer = math.inf
        for name in sorted(set(sensors) | set(rows)):
            tenant, sensor = name.split(_SEP, 1)
            current = SensorState(**sensors[name]) if name in sensors else SensorState()
            mine = rows.get(name)
            if mine:
                observations = []
                for summary in mine:
                    observations += observe_summary(current, summary, now, cfg)
            else:
                observations = expire(current, now, cfg)
            sensors[name] = asdict(current)
            timer = min(timer, next_timer(current, now, cfg))
            for obs in observations:
                if obs.kind == "recovered":
                    continue
                doc_id, body = finding_document(
                    health_finding(tenant, sensor, current.host, obs, grouping)
                )
                out.append(("finding", obs.kind, doc_id, json.dumps(body), None, None))
            if mine or observations:
                status = sensor_status(tenant, sensor, current, now, cfg)
                doc = status.model_dump_json()
                out.append(("sensor", "status", sensor_doc_id(tenant, sensor), doc, None, None))
        state.update((json.dumps(sensors, separators=(",", ":")),))
        if timers and timer < math.inf:
            state.setTimeoutDuration(int(timer * 1000))
        yield pd.DataFrame({n: [r[i] for r in out] for i, n in enumerate(OUTPUT_SCHEMA.names)})

    return update


def health_updates(
    summaries: DataFrame,
    cfg: HealthConfig,
    buckets: int = 256,
    timers: bool = True,
    grouping: GroupingConfig | None = None,
) -> DataFrame:
    """Summary rows -> finding and status documents, with per-sensor state and timers.

    State is kept per bucket of sensors (a stable hash of the Kafka key: tenant and
    sensor), not per
    sensor: ``applyInPandasWithState`` has a fixed cost per key and batch (tens of ms on a
    loaded machine) that dwarfs the state machine's work for one sensor. The number of
    buckets is part of the checkpoint: changing it needs a new checkpoint.

    ``timers=False`` for an available-now run: Spark keeps running no-data batches for an
    operator with processing-time timeouts, so such a query would never finish. Without
    timers, silence is only noticed for sensors of buckets that still receive records.
    """
    bucket = F.pmod(F.xxhash64("key"), F.lit(buckets)).alias("bucket")
    return (
        summaries.withColumn("bucket", bucket)
        .groupBy("bucket")
        .applyInPandasWithState(
            state_function(cfg, timers=timers, grouping=grouping),
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
    rejected: int = 0  # records of the summaries topic that are not summaries: to the DLQ
    seconds: float = 0.0
    state_seconds: float = 0.0  # the Spark job: read summaries, per-sensor state (collect)
    write_seconds: float = 0.0  # findings and sensor documents to Elasticsearch


def write_batch(
    rows: list[Any],
    es_hosts: tuple[str, ...],
    findings_index: str,
    sensors_index: str,
    es_options: dict[str, Any] | None = None,
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
    es = connect(es_hosts, from_settings=False, **(es_options or {}))
    try:
        created = write_documents(es, findings_index, findings).created if findings else 0
        if sensors:
            helpers.bulk(es, sensors, chunk_size=2000, max_retries=5)
        return created, len(sensors)
    finally:
        es.close()


def ensure_indices(
    es_hosts: tuple[str, ...],
    findings_index: str,
    sensors_index: str,
    es_options: dict[str, Any] | None = None,
) -> None:
    from detections.sinks.elasticsearch import connect, ensure_findings_index, ensure_index

    es = connect(es_hosts, from_settings=False, **(es_options or {}))
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
    """Beside the detect query's checkpoint, never inside it. (``-summaries``: the query
    reads the summaries topic since issue 18; a checkpoint of the raw-topic query is not
    reused.)"""
    return job_checkpoint.parent / f"{job_checkpoint.name}-sensor-health-summaries"


def start(
    spark: SparkSession,
    cfg: JobConfig,
    health: HealthConfig,
    sensors_index: str,
    on_batch: Callable[[HealthBatch], None] | None = None,
    checkpoint: Path | None = None,
    buckets: int = 256,
    summaries_topic: str | None = None,
) -> StreamingQuery:
    """Start the sensor-health query over the summaries topic (``summaries_topic``, else
    the job's ``cfg.summaries_topic``); returns at once. It triggers every
    ``cfg.health_trigger_seconds``; with --once (``cfg.available_now``) it runs without
    timers beside the detect query, and the job drains it (``detections.job.run``)."""
    if cfg.runs_until_drained():
        # Started alone, available-now: it takes the topic's end when it starts, and the
        # detect query writes the summaries as it goes, so wait for that query first.
        for query in spark.streams.active:
            if query.name == "sigstream-detect":
                query.awaitTermination()
    ensure_indices(cfg.es_hosts, cfg.findings_index, sensors_index, cfg.es_options)
    topic = summaries_topic or cfg.summaries_topic
    # Subscribable before the detect query wrote its first summary (the same call the
    # detect query makes for its derived topics).
    DerivedPublisher(cfg.producer_config()).ensure_topics([topic], cfg.internal_partitions)
    reader = kafka_source(spark, cfg).option("subscribe", topic)
    # No maxOffsetsPerTrigger (the detect query's cap is not applied): a batch reads all
    # that has arrived, so a sensor with summaries waiting in Kafka is never timed out as
    # silent because a capped batch did not reach them yet. A summary stands for a whole
    # task's slice of a sensor, so even a large backlog is a cheap batch.
    timers = not cfg.available_now
    # The grouping config comes from the job: executors never read their own settings.
    updates = health_updates(summary_rows(reader.load()), health, buckets, timers, cfg.grouping)
    publisher = DerivedPublisher(cfg.producer_config())  # the DLQ records
    publisher.ensure_topics([cfg.dlq_topic], cfg.internal_partitions)

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        rows = batch.collect()
        stats = HealthBatch(batch_id)
        stats.state_seconds = time.monotonic() - started
        stats.findings.update(r["kind"] for r in rows if r["target"] == "finding")
        rejected = [dlq_record(r) for r in rows if r["target"] == "rejected"]
        if rejected:  # before the batch ends: its offsets commit only once they are in Kafka
            stats.rejected = publisher.publish(cfg.dlq_topic, rejected)
            log.warning(
                "health batch %d: %d sensor-summaries records that are not summaries sent to %s",
                batch_id,
                stats.rejected,
                cfg.dlq_topic,
            )
        stats.created, stats.sensors = write_batch(
            rows, cfg.es_hosts, cfg.findings_index, sensors_index, cfg.es_options
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
    if cfg.runs_until_drained():
        writer = writer.trigger(availableNow=True)
    else:  # drained by --once: the job waits for a trigger that finds nothing new
        every = cfg.trigger_seconds if cfg.drained_by_job else cfg.health_trigger_seconds
        writer = writer.trigger(processingTime=f"{every} seconds")
    with query_conf(spark, {"spark.sql.shuffle.partitions": str(cfg.state_partitions)}):
        return writer.start()


def dlq_record(row: Any) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The DLQ record of a "rejected" output row: original key and value, reason headers."""
    return (
        _bytes(row["raw_key"]),
        _bytes(row["raw_value"]),
        dlq_headers(str(row["kind"]), str(row["doc_id"]), DLQ_STAGE),
    )
