"""The detect job's per-micro-batch query, built once and applied to every batch.

Each micro-batch runs the same query over new Kafka records: parse with the generated
schema, the reject reason, the engine's input columns, then the engine in ``mapInArrow``.
Building that query with PySpark's DataFrame API costs about a thousand Py4J round trips
(a column object per field, a Java list element per column, resolving every column of the
100-field event for ``mapInArrow``): about 0.3 s of driver time per batch on two cores,
a large share of a small batch's latency. Here the column lists are built once as JVM
objects, and each batch applies them in four Py4J calls; Spark still analyses and plans
the query per batch, in the JVM, which is fast.

This leans on classic PySpark internals (``DataFrame._jdf``, the JVM ``Column`` of a
``Column``). Those are stable across Spark 3.x and 4.x classic sessions; Spark Connect has
no JVM in the client and would use the plain DataFrame API instead.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyspark.rdd import PythonEvalType
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.classic.column import _to_seq
from pyspark.sql.classic.dataframe import DataFrame as ClassicDataFrame
from pyspark.sql.pandas.functions import pandas_udf
from pyspark.sql.types import StructType

from detections.parse import KAFKA_COLUMNS, event_fields, parsed_event, reject_reason
from detections.worker import REASON_COLUMN, VALUE_COLUMN

ArrowFunction = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


class BatchQuery:
    """Kafka records -> (reject reason, raw value, the engine's input columns) -> a
    ``mapInArrow`` function. ``names`` are event fields, ``computed`` extra columns over
    them (the engine's keyword text)."""

    def __init__(
        self, spark: SparkSession, names: Sequence[str], computed: Mapping[str, Column]
    ) -> None:
        self.spark = spark
        context = spark.sparkContext
        self.inputs = [REASON_COLUMN, VALUE_COLUMN, *names]
        self._stages = [
            _seq(context, [*map(F.col, KAFKA_COLUMNS), parsed_event().alias("e")]),
            _seq(
                context,
                [
                    reject_reason(F.col("e")).alias(REASON_COLUMN),
                    F.col(VALUE_COLUMN),
                    *event_fields(),  # all: the computed columns read fields of their own
                ],
            ),
            _seq(context, [*map(F.col, self.inputs), *computed.values()]),
        ]
        self.input_names = [*self.inputs, *computed]
        self._function: tuple[Hashable, Any] | None = None

    def records(self, batch: DataFrame) -> DataFrame:
        """The batch's records as the engine reads them."""
        jdf = batch._jdf  # type: ignore[attr-defined]
        for stage in self._stages:
            jdf = jdf.select(stage)
        return ClassicDataFrame(jdf, self.spark)

    def map_in_arrow(
        self, batch: DataFrame, key: Hashable, make: Callable[[], ArrowFunction], schema: StructType
    ) -> DataFrame:
        """``records(batch).mapInArrow(make(), schema)``, with the Python function (and
        its pickled closure) rebuilt only when ``key`` changes: between deployments it
        is the same for every batch."""
        if self._function is None or self._function[0] != key:
            udf = pandas_udf(  # type: ignore[call-overload]
                make(), returnType=schema, functionType=PythonEvalType.SQL_MAP_ARROW_ITER_UDF
            )
            self._function = (key, udf(*map(F.col, self.input_names))._jc)
        jdf = self.records(batch)._jdf  # type: ignore[attr-defined]
        return ClassicDataFrame(jdf.mapInArrow(self._function[1], False, None), self.spark)


def _seq(context: Any, columns: Sequence[Column]) -> Any:
    return _to_seq(context, [c._jc for c in columns])  # type: ignore[attr-defined]
