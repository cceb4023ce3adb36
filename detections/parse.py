"""Parse Kafka records with the generated schema and say why a record is not an event.

Runs inside the streaming job: every record either becomes a typed event row or gets a
``reject_reason`` and goes to the dead-letter topic. Nothing is dropped silently.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.events import EVENT_TYPES, SCHEMA_VERSION, Envelope, Logsource
from schemas.generate import spark_event_schema

REQUIRED_FIELDS = ("event_type", "sensor_id", "host", "event_id", "event_time")


def reject_reason(e: Column) -> Column:
    """NULL for a valid event, else a human-readable reason (first problem found)."""
    reason = F.when(F.col("value").isNull(), F.lit("empty record"))
    reason = reason.when(
        F.coalesce(*[e[f].cast("string") for f in REQUIRED_FIELDS]).isNull(),
        F.lit("malformed JSON or not an event object"),
    )
    reason = reason.when(
        e["schema_version"].isNotNull() & (e["schema_version"] != SCHEMA_VERSION),
        F.concat(
            F.lit("unsupported schema_version "),
            F.coalesce(e["schema_version"].cast("string"), F.lit("(missing)")),
        ),
    )
    for field in REQUIRED_FIELDS:
        reason = reason.when(e[field].isNull(), F.lit(f"missing or invalid required field {field}"))
    reason = reason.when(
        ~e["event_type"].isin(*EVENT_TYPES), F.concat(F.lit("unknown event_type "), e["event_type"])
    )
    return reason


#: The Kafka source's columns the job keeps next to the parsed event.
KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset")


def parsed_event() -> Column:
    """The record's JSON parsed with the generated schema (null fields where it does not fit)."""
    return F.from_json(F.col("value").cast("string"), spark_event_schema(), {"mode": "PERMISSIVE"})


def parse_records(records: DataFrame) -> DataFrame:
    """Kafka rows (key, value, topic, partition, offset, ...) -> parsed struct + reason."""
    return records.select(*KAFKA_COLUMNS, parsed_event().alias("e")).withColumn(
        "reject_reason", reject_reason(F.col("e"))
    )


def event_fields() -> list[Column]:
    """The parsed struct's fields as top-level columns, with the
    envelope's pydantic defaults applied, so an event that omits a field with a default
    means the same in the job as at the ingest edge."""
    schema = spark_event_schema()
    columns = []
    for name in schema.fieldNames():
        value = F.col(f"e.{name}")
        info = Envelope.model_fields.get(name)
        if name == "logsource":
            value = _logsource_with_defaults()
        elif info is not None and isinstance(info.default, str | int):
            value = F.coalesce(value, F.lit(info.default).cast(schema[name].dataType))
        columns.append(value.alias(name))
    return columns


def _logsource_with_defaults() -> Column:
    parts = []
    for name, info in Logsource.model_fields.items():
        value = F.col(f"e.logsource.{name}")
        if isinstance(info.default, str):
            value = F.coalesce(value, F.lit(info.default))
        parts.append(value.alias(name))
    return F.struct(*parts)


def valid_events(parsed: DataFrame) -> DataFrame:
    """The valid events, envelope defaults applied."""
    return parsed.where(F.col("reject_reason").isNull()).select(*event_fields())


def flat_records(records: DataFrame) -> DataFrame:
    """Kafka records -> one flat row each: the Kafka columns, ``reject_reason`` (null for a
    valid event) and every event field with the envelope defaults applied.

    The detect job applies this to the stream itself, so Spark analyses the parse once
    when the query starts instead of in every micro-batch."""
    return parse_records(records).select(*KAFKA_COLUMNS, "reject_reason", *event_fields())


def flat_valid_events(flat: DataFrame) -> DataFrame:
    """The valid events of :func:`flat_records` output, as :func:`valid_events` gives them."""
    names = spark_event_schema().fieldNames()
    return flat.where(F.col("reject_reason").isNull()).select(*names)


def rejected_records(parsed: DataFrame, stage: str = "detect") -> DataFrame:
    """Rejects in the Kafka sink's shape: original key/value plus reason headers (of
    :func:`parse_records` or :func:`flat_records` output)."""
    origin = F.concat_ws(
        ":", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string")
    )
    headers = F.array(
        F.struct(
            F.lit("sigstream.reason").alias("key"),
            F.encode(F.col("reject_reason"), "UTF-8").alias("value"),
        ),
        F.struct(F.lit("sigstream.origin").alias("key"), F.encode(origin, "UTF-8").alias("value")),
        F.struct(
            F.lit("sigstream.stage").alias("key"), F.encode(F.lit(stage), "UTF-8").alias("value")
        ),
    )
    return parsed.where(F.col("reject_reason").isNotNull()).select(
        "key", "value", headers.alias("headers")
    )
