"""What one Spark task of the detect job does with its slice of a micro-batch.

Runs in a Python worker over Arrow batches of parsed events: count the records the parser
rejected (the driver sends those to the dead-letter topic), run the rule engine on the
rest, turn matches into findings and bulk-create them in Elasticsearch, and report one
row of counts, rule errors and rule costs back to the driver. One pass, one Spark job per
micro-batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import types as T

from detections.matcher import MatcherSpec

#: The row each task reports to the driver.
STATS_SCHEMA = T.StructType(
    [
        T.StructField("events", T.LongType(), False),
        T.StructField("rejected", T.LongType(), False),
        T.StructField("matches", T.LongType(), False),
        T.StructField("created", T.LongType(), False),
        T.StructField("duplicates", T.LongType(), False),
        T.StructField("errors", T.StringType(), False),  # JSON: rule index -> error
        T.StructField("seconds", T.StringType(), False),  # JSON: rule index -> seconds
    ]
)

REASON_COLUMN = "reject_reason"
VALUE_COLUMN = "value"


def partition_processor(
    spec: MatcherSpec,
    skip: Collection[int],
    rule_infos: dict[int, dict[str, Any]],
    es_hosts: tuple[str, ...],
    index: str,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of the detect job (closes over plain data only)."""
    skipped = frozenset(skip)

    def process(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from detections.sinks.elasticsearch import connect, write_documents

        matcher = spec.matcher()
        counts = dict.fromkeys(("events", "rejected", "matches", "created", "duplicates"), 0)
        errors: dict[int, str] = {}
        seconds: dict[int, float] = {}
        es = None
        ingested = datetime.now(UTC)
        try:
            for batch in batches:
                valid = pc.is_null(batch.column(REASON_COLUMN))
                events = batch.filter(valid)
                counts["rejected"] += batch.num_rows - events.num_rows
                counts["events"] += events.num_rows
                if not events.num_rows:
                    continue
                result = matcher.match(events, skipped | errors.keys())
                errors.update(result.errors)
                for rule, spent in result.seconds.items():
                    seconds[rule] = seconds.get(rule, 0.0) + spent
                if not result.rows.size:
                    continue
                counts["matches"] += int(result.rows.size)
                documents = finding_documents(
                    events, result.rows, result.rules, rule_infos, ingested
                )
                if es is None:
                    es = connect(es_hosts)
                written = write_documents(es, index, documents)
                counts["created"] += written.created
                counts["duplicates"] += written.duplicates
        finally:
            if es is not None:
                es.close()
        yield pa.RecordBatch.from_pylist(
            [
                {
                    **counts,
                    "errors": json.dumps({str(k): v for k, v in errors.items()}),
                    "seconds": json.dumps({str(k): round(v, 6) for k, v in seconds.items()}),
                }
            ],
            schema=pa.schema(
                [
                    pa.field(f.name, pa.int64() if f.name in counts else pa.string())
                    for f in STATS_SCHEMA
                ]
            ),
        )

    return process


def finding_documents(
    events: pa.RecordBatch,
    rows: Any,
    rules: Any,
    rule_infos: dict[int, dict[str, Any]],
    ingested: datetime,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, body) of the finding of each (row, rule) match. The finding carries the event
    as its sensor sent it (the record's JSON), so nothing the rule did not read is lost."""
    from detections.findings import build_finding, finding_document
    from schemas.findings import RuleInfo

    infos: dict[int, RuleInfo] = {}
    values = events.column(VALUE_COLUMN).take(pa.array(rows)).to_pylist()
    for value, rule in zip(values, rules.tolist(), strict=True):
        info = infos.get(rule)
        if info is None:
            info = infos[rule] = RuleInfo.model_validate(rule_infos[rule])
        yield finding_document(build_finding(info, json.loads(value), ingested))
