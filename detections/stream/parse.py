"""Parse Kafka records with the generated schema and say why a record is not an event.

Runs inside the streaming job: every record either becomes a typed event row or gets a
``reject_reason`` and goes to the dead-letter topic. Nothing is dropped silently.

Two passes. The JVM parses every record (``from_json``) and rejects what its parser sees
(not JSON, missing required fields, unknown event type, schema version). But ``from_json``
is lenient where the contract is not: it replaces invalid UTF-8 and lone surrogate
escapes (``\\ud800``) with ``?`` / U+FFFD, turns integers beyond 64 bits, ``NaN`` and
wrong types into nulls or into their JSON text (``"CommandLine": ["a"]`` becomes the
string ``["a"]``), and takes records of any size. So the worker checks each record the JVM
accepted (and refines the JVM's generic "malformed JSON") with :func:`record_problem`: the
event contract of the gateway (``schemas.events``) and its size and depth limits, for
producers that write to Kafka directly. A record it refuses is left out of matching and
indexing and goes to the dead-letter topic with its reason, on its own.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from schemas.events import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    MODEL_BY_TYPE,
    SCHEMA_VERSION,
    Envelope,
    Logsource,
    own_logsource,
    parse_event,
)
from schemas.generate import spark_event_schema

REQUIRED_FIELDS = ("event_type", "sensor_id", "host", "event_id", "event_time")


#: The gateway's limits on one event (``ingest.gateway.parse.Limits``), for records that
#: reach Kafka without it.
MAX_RECORD_BYTES = 256 * 1024
MAX_DEPTH = 16
#: The JVM's reason for a record its JSON parser could not read (refined by the worker).
MALFORMED = "malformed JSON or not an event object"
_INT64 = (-(2**63), 2**63 - 1)
#: 19 digits in a row: maybe an integer past 64 bits (any 18-digit one is in range).
_LONG_NUMBER = re.compile(rb"\d{19}")
_REASON_CHARS = 500


def record_problem(raw: bytes | str | None) -> str | None:
    """Why one raw Kafka record is not a valid event (None: it is). Never raises: any
    failure of the checks themselves is a reason too."""
    if raw is None:
        return "empty record"
    try:
        if isinstance(raw, str):  # a string column: text already (surrogates kept)
            raw = raw.encode("utf-8", "surrogatepass")
        return _problem(raw)
    except Exception as exc:  # a record must never fail its batch
        return f"unreadable record: {type(exc).__name__}: {exc}"[:_REASON_CHARS]


def _problem(raw: bytes) -> str | None:
    if len(raw) > MAX_RECORD_BYTES:
        return f"record of {len(raw):,} bytes is over the {MAX_RECORD_BYTES:,}-byte limit"
    # Fast path (about 5 µs): pydantic parses and validates in one pass, refusing invalid
    # UTF-8, lone surrogates, trailing data and deep nesting itself. What it lets through
    # that the contract does not want (integers past 64 bits, NaN / Infinity coerced to a
    # string field) goes the slow way, which also says why a refused record is bad.
    try:
        EVENT_ADAPTER.validate_json(raw)
    except ValidationError:
        pass
    else:
        if b"NaN" not in raw and b"Infinity" not in raw and not _LONG_NUMBER.search(raw):
            return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except _NonNumeric as exc:
        return f"malformed JSON: {exc.args[0]} is not a JSON number"
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} at column {exc.colno}"
    except ValueError as exc:  # an integer past Python's digit limit (4,300)
        if "digits" in str(exc):
            return "integer of more than 4,300 digits is out of the 64-bit range"
        return f"malformed JSON: {exc}"[:_REASON_CHARS]
    except RecursionError:
        return f"nesting deeper than {MAX_DEPTH}"
    if not isinstance(obj, dict):
        return f"{MALFORMED} (a JSON {type(obj).__name__})"
    value_problem = _walk(obj)
    if value_problem is not None:
        return value_problem
    try:
        parse_event(obj)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()[:3]
        )
        return f"invalid event: {details}"[:_REASON_CHARS]
    return None


class _NonNumeric(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NonNumeric(name)


def _walk(obj: Any) -> str | None:
    """Depth, integer range, finite numbers and encodable strings of a parsed record."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nesting deeper than {MAX_DEPTH}"
        if isinstance(node, dict):
            for key, value in node.items():
                if not _encodable(key):
                    return f"lone UTF-16 surrogate escape in the key {_show(key)}"
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            if not _encodable(node):
                return f"lone UTF-16 surrogate escape (\\ud800-\\udfff) in the string {_show(node)}"
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not _INT64[0] <= node <= _INT64[1]:
                return f"integer of {len(str(abs(node))):,} digits is out of the 64-bit range"
        elif isinstance(node, float) and not math.isfinite(node):
            return "number out of the range of a 64-bit float"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(text: str) -> str:
    return ascii(text[:40]) + ("..." if len(text) > 40 else "")


def reject_reason(e: Column) -> Column:
    """NULL for a valid event, else a human-readable reason (first problem found)."""
    reason = F.when(F.col("value").isNull(), F.lit("empty record"))
    reason = reason.when(
        F.coalesce(*[e[f].cast("string") for f in REQUIRED_FIELDS]).isNull(), F.lit(MALFORMED)
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


#: The Kafka source's columns the job keeps next to the parsed event (``timestamp``: the
#: receive time of records written without the gateway, for sensor health's summaries).
KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp")


def parsed_event() -> Column:
    """The record's JSON parsed with the generated schema (null fields where it does not fit)."""
    return F.from_json(F.col("value").cast("string"), spark_event_schema(), {"mode": "PERMISSIVE"})


def parse_records(records: DataFrame) -> DataFrame:
    """Kafka rows (key, value, topic, partition, offset, ...) -> parsed struct + reason."""
    kafka = [c for c in KAFKA_COLUMNS if c != "timestamp" or c in records.columns]
    return records.select(*kafka, parsed_event().alias("e")).withColumn(
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
    """The record's logsource with the defaults pydantic gives it at the gateway: an event
    type's own logsource when the record has none (an ``auditd`` record is
    ``linux``/``auditd``, a heartbeat ``sigstream``/``heartbeat``), its own product when
    the logsource names none, else Logsource's defaults."""
    own = _own_logsources()
    event_type = F.col("e.event_type")
    own_product: Column | None = None
    for name, logsource in own.items():
        test, value = event_type == name, F.lit(logsource.product)
        own_product = F.when(test, value) if own_product is None else own_product.when(test, value)
    parts = []
    for name, info in Logsource.model_fields.items():
        value = F.col(f"e.logsource.{name}")
        if name == "product" and own_product is not None:
            value = F.coalesce(value, own_product)
        if isinstance(info.default, str):
            value = F.coalesce(value, F.lit(info.default))
        parts.append(value.alias(name))
    result = F.struct(*parts)
    for name, logsource in own.items():
        given = logsource.model_dump()
        whole = F.struct(*[F.lit(given[k]).cast("string").alias(k) for k in given])
        result = F.when(F.col("e.logsource").isNull() & (event_type == name), whole).otherwise(
            result
        )
    return result


def _own_logsources() -> dict[str, Logsource]:
    """Event types whose model has a logsource of its own (not Logsource()), by name."""
    own = {t: own_logsource(MODEL_BY_TYPE[t]) for t in EVENT_TYPES}
    return {t: ls for t, ls in sorted(own.items()) if ls != Logsource()}


def valid_events(parsed: DataFrame) -> DataFrame:
    """The valid events, envelope defaults applied."""
    return parsed.where(F.col("reject_reason").isNull()).select(*event_fields())


def flat_records(records: DataFrame) -> DataFrame:
    """Kafka records -> one flat row each: the Kafka columns, ``reject_reason`` (null for a
    valid event) and every event field with the envelope defaults applied.

    The detect job applies this to the stream itself, so Spark analyses the parse once
    when the query starts instead of in every micro-batch."""
    kafka = [c for c in KAFKA_COLUMNS if c != "timestamp" or c in records.columns]
    return parse_records(records).select(*kafka, "reject_reason", *event_fields())


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


#: Reason prefixes (``record_problem`` and the JVM's ``reject_reason``) -> a reason code:
#: the bounded label the job's metrics count dead letters by (the full text stays in the
#: record's DLQ header). Order matters: MALFORMED starts like "malformed JSON".
_REASON_CODES: tuple[tuple[str, str], ...] = (
    (MALFORMED, "not_an_event_object"),
    ("empty record", "empty_record"),
    ("record of ", "too_large"),
    ("invalid UTF-8", "invalid_utf8"),
    ("malformed JSON", "malformed_json"),
    ("integer of ", "number_out_of_range"),
    ("number out of the range", "number_out_of_range"),
    ("nesting deeper", "too_deep"),
    ("lone UTF-16", "lone_surrogate"),
    ("invalid event", "invalid_event"),
    ("unsupported schema_version", "schema_version"),
    ("missing or invalid required field", "missing_required_field"),
    ("unknown event_type", "unknown_event_type"),
    ("unreadable record", "unreadable"),
)


def reason_code(reason: str | None) -> str:
    """The reason code of a dead letter's reason text (``other`` for anything unknown)."""
    if not reason:
        return "empty_record"
    for prefix, code in _REASON_CODES:
        if reason.startswith(prefix):
            return code
    return "other"
