"""The normalizing stage as a streaming stage (``detections.stream.stage.StreamingStage``):
the query of ``detections.normalize.query`` over the raw topics. It feeds the detection
pass (``upstream``): with --once the job runs it to the end first (``job.run``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from detections.normalize import query
from detections.normalize.records import RawLimits
from detections.stream.job import JobConfig


@dataclass(frozen=True)
class NormalizeStage:
    pattern: str
    default_tenant: str
    limits: RawLimits = field(default_factory=RawLimits)
    name: str = "normalize"
    #: Writes the events topic the detection pass reads.
    upstream: bool = True

    @classmethod
    def of(cls, settings: Any) -> NormalizeStage:
        """The stage of ``settings`` (``SIGSTREAM_RAW_*``)."""
        return cls(
            settings.raw_topic_pattern,
            settings.raw_default_tenant,
            RawLimits(max_record_bytes=settings.raw_max_record_bytes),
        )

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None:
        return query.start(spark, cfg, self.pattern, self.default_tenant, self.limits)
