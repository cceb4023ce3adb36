"""The detect job's per-micro-batch query, built once and applied to every batch.

The stream itself is parsed (``detections.stream.parse.flat_records``), so Spark analyses the
parse once when the query starts. What remains per batch depends on the deployed rules:
select the columns the engine reads (plus the joined keyword text), then the engine in
``mapInArrow``. Building that with PySpark's DataFrame API costs hundreds of Py4J round
trips per batch (a column object per field, a Java list element per column, resolving
every input column for ``mapInArrow``). Here the column list and the ``mapInArrow``
function are built once as JVM objects, and each batch applies them in two Py4J calls;
the function (with its pickled closure) is rebuilt only when the content, quarantine or
rule modes change.

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

from detections.stream.worker import ORIGIN_COLUMNS, REASON_COLUMN, VALUE_COLUMN

ArrowFunction = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


class BatchQuery:
    """Flat records (``flat_records``) -> (reject reason, raw value, the engine's input
    columns) -> a ``mapInArrow`` function. ``names`` are event fields, ``computed`` extra
    columns over them (the engine's keyword text), by name."""

    def __init__(
        self, spark: SparkSession, names: Sequence[str], computed: Mapping[str, Column]
    ) -> None:
        self.spark = spark
        self.inputs = [REASON_COLUMN, VALUE_COLUMN, *ORIGIN_COLUMNS, *names]
        self.input_names = [*self.inputs, *computed]
        columns = [*map(F.col, self.inputs), *computed.values()]
        self._select = _to_seq(spark.sparkContext, [c._jc for c in columns])  # type: ignore[attr-defined]
        self._function: tuple[Hashable, Any] | None = None

    def records(self, flat: DataFrame) -> DataFrame:
        """The batch's records as the engine reads them."""
        jdf = flat._jdf.select(self._select)  # type: ignore[attr-defined]
        return ClassicDataFrame(jdf, self.spark)

    def map_in_arrow(
        self, flat: DataFrame, key: Hashable, make: Callable[[], ArrowFunction], schema: StructType
    ) -> DataFrame:
        """``records(flat).mapInArrow(make(), schema)``, with the Python function (and
        its pickled closure) rebuilt only when ``key`` changes: between deployments it
        is the same for every batch."""
        if self._function is None or self._function[0] != key:
            udf = pandas_udf(  # type: ignore[call-overload]
                make(), returnType=schema, functionType=PythonEvalType.SQL_MAP_ARROW_ITER_UDF
            )
            self._function = (key, udf(*map(F.col, self.input_names))._jc)
        jdf = self.records(flat)._jdf  # type: ignore[attr-defined]
        return ClassicDataFrame(jdf.mapInArrow(self._function[1], False, None), self.spark)
