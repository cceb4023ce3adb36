"""The normalizing stage's streaming query: raw topics -> events topic + DLQ, on Spark.

A shipper writing straight to Kafka (Winlogbeat's Kafka output, NXLog ``om_kafka``,
rsyslog ``omkafka``, Vector, Fluent Bit) writes to ``telemetry.raw.<format>``. This
query subscribes to every topic matching the raw-topic pattern, reads each record's
value, key and headers (the ``sigstream.tenant`` header is picked in the JVM), runs
``detections.normalize.records.normalize_record`` over it in the Python workers
(``mapInArrow``), and writes what comes out with Spark's Kafka sink, each row to its own
topic: the schema event to the events topic (key = sensor id, the gateway's headers), a
reject to the DLQ (original key and bytes, reason/origin/stage headers). One query, one
read of the raw topics, no driver round trip.

It is stateless: with no new raw record a trigger runs no Spark job (only the source's
offset check). Delivery is at least once, like every Kafka sink: after a crash the
batch is read again and written again, with the same event ids (derived from each
record's origin), which the detection pass's deterministic finding ids collapse.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from detections.normalize.records import DEFAULT_LIMITS, RawLimits, normalize_record
from detections.stream.derived import DerivedPublisher
from detections.stream.job import JobConfig, kafka_source
from ingest.gateway.sink import TENANT_HEADER

log = logging.getLogger("sigstream.normalize")

QUERY_NAME = "sigstream-normalize"
HEADER = T.StructType(
    [T.StructField("key", T.StringType()), T.StructField("value", T.BinaryType())]
)
#: What the Kafka sink writes: each row to its own topic.
OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("topic", T.StringType(), False),
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("headers", T.ArrayType(HEADER)),
    ]
)
_ARROW_OUTPUT = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
    ]
)


def matching_topics(cfg: JobConfig, pattern: str) -> list[str]:
    """The topics matching ``pattern`` now (Kafka matches the whole name, as
    ``re.fullmatch``; a pattern Python cannot read counts as matching something)."""
    from confluent_kafka.admin import AdminClient

    try:
        regex = re.compile(pattern)
    except re.error:
        return [pattern]
    admin = AdminClient(cfg.producer_config())
    return sorted(t for t in admin.list_topics(timeout=30).topics if regex.fullmatch(t))


def checkpoint_for(job_checkpoint: Path) -> Path:
    """Beside the detect query's checkpoint, never inside it."""
    return job_checkpoint.parent / f"{job_checkpoint.name}-normalize"


def raw_rows(records: DataFrame) -> DataFrame:
    """Kafka rows -> the columns the workers read; the tenant header (the last one, if a
    relay added its own) is picked here, in the JVM."""
    tenants = F.filter(F.col("headers"), lambda h: h["key"] == F.lit(TENANT_HEADER))
    return records.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "timestamp",
        F.try_element_at(tenants, F.lit(-1))["value"].cast("string").alias("tenant"),
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def batch_processor(
    default_tenant: str, events_topic: str, dlq_topic: str, limits: RawLimits
) -> Any:
    """The ``mapInArrow`` function (closes over plain data only)."""

    def process(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = batch.to_pydict()
            out: dict[str, list[Any]] = {name: [] for name in _ARROW_OUTPUT.names}
            for key, value, topic, partition, offset, timestamp, tenant in zip(
                columns["key"],
                columns["value"],
                columns["topic"],
                columns["partition"],
                columns["offset"],
                columns["timestamp"],
                columns["tenant"],
                strict=True,
            ):
                result = normalize_record(
                    value,
                    key,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    tenant=tenant,
                    default_tenant=default_tenant,
                    events_topic=events_topic,
                    dlq_topic=dlq_topic,
                    received_time=_utc(timestamp),
                    limits=limits,
                )
                out["topic"].append(result.topic)
                out["key"].append(result.key)
                out["value"].append(result.value)
                out["headers"].append([{"key": k, "value": v} for k, v in result.headers])
            yield pa.RecordBatch.from_pydict(out, schema=_ARROW_OUTPUT)

    return process


def start(
    spark: SparkSession,
    cfg: JobConfig,
    pattern: str,
    default_tenant: str,
    limits: RawLimits = DEFAULT_LIMITS,
    checkpoint: Path | None = None,
) -> StreamingQuery | None:
    """Start the query over the topics matching ``pattern`` (returns at once). With
    --once it reads what the raw topics hold when it starts and ends by itself; the job
    waits for it before the detection pass starts (``detections.stream.job.run``); then,
    when no topic matches yet, it is not started at all (None: a query that would read
    nothing costs seconds of start-up)."""
    if cfg.runs_until_drained() and not matching_topics(cfg, pattern):
        log.info("no topic matches %s: nothing to normalize", pattern)
        return None
    DerivedPublisher(cfg.producer_config()).ensure_topics(
        [cfg.events_topic, cfg.dlq_topic], cfg.internal_partitions
    )
    raw = kafka_source(spark, cfg, pattern=pattern).option("includeHeaders", "true").load()
    process = batch_processor(default_tenant, cfg.events_topic, cfg.dlq_topic, limits)
    rows = raw_rows(raw).mapInArrow(process, OUTPUT_SCHEMA)
    writer = (
        rows.writeStream.queryName(QUERY_NAME)
        .format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka_bootstrap)
        .option("kafka.compression.type", "lz4")
        .options(**cfg.kafka_options)
        .option("checkpointLocation", str(checkpoint or checkpoint_for(cfg.checkpoint_dir)))
    )
    if cfg.runs_until_drained():
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    return writer.start()
