"""The job's prebuilt per-batch query gives what the DataFrame API would, batch after batch."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from detections.compiler.plan import plan_rules
from detections.compiler.sigma_to_ir import compile_yaml
from detections.engine.apply import engine_inputs
from detections.stream.batch_query import BatchQuery
from detections.stream.parse import flat_records
from schemas.generate import spark_event_schema

pytestmark = pytest.mark.integration

KEYWORD_RULE = """
title: keyword search
id: 6f1a2b3c-0000-4000-8000-000000000001
logsource: {category: process_creation, product: windows}
detection:
  keywords: ['mimikatz']
  condition: keywords
level: high
"""


def _records(spark: SparkSession, lines: list[str]):  # type: ignore[no-untyped-def]
    rows = [(None, line.encode(), "t", 0, i) for i, line in enumerate(lines)]
    return spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long"
    )


def _summary(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    rows = [r for b in batches for r in b.to_pylist()]
    yield pa.RecordBatch.from_pylist(
        [{"rows": len(rows), "rejected": sum(r["reject_reason"] is not None for r in rows)}],
        schema=pa.schema([("rows", pa.int64()), ("rejected", pa.int64())]),
    )


def test_prebuilt_query_matches_the_dataframe_api_across_batches(spark: SparkSession) -> None:
    plan = plan_rules(*compile_yaml(KEYWORD_RULE))
    assert len(plan.rules) == 1
    names, computed = engine_inputs(plan, spark_event_schema().fieldNames())
    assert computed, "the keyword rule needs a computed keyword-text column"
    query = BatchQuery(spark, names, computed)
    good = (
        '{"event_type": "process_creation", "sensor_id": "s1", "host": "h1", "event_id": "e%d",'
        ' "event_time": "2026-01-01T00:00:00Z", "CommandLine": "run mimikatz %d"}'
    )
    for batch_no in range(3):  # the same JVM column lists, applied to three batches
        lines = [good % (i, i) for i in range(batch_no + 2)] + ["{not json", '{"event_type": 1}']
        df = _records(spark, lines)
        expected = flat_records(df).select(*query.inputs, *computed.values()).collect()
        got = query.records(flat_records(df)).collect()
        assert got == expected
        assert sum(r["reject_reason"] is not None for r in got) == 2
        summary = query.map_in_arrow(
            flat_records(df), "key", lambda: _summary, "rows long, rejected long"
        )
        totals = summary.collect()
        assert sum(r["rows"] for r in totals) == len(lines)
        assert sum(r["rejected"] for r in totals) == 2
