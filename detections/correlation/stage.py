"""The correlation stage as a streaming stage (``detections.stream.stage.StreamingStage``):
the query of ``detections.correlation.query`` over the base-rule matches the detection
pass publishes. Run the detection pass with ``feeding(cfg, content)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from detections.correlation.query import (
    CorrelationConfig,
    CorrelationContent,
    CorrelationTotals,
    start_correlations,
)
from detections.stream.job import JobConfig


def correlation_config(settings: Any) -> CorrelationConfig:
    """Per-key lateness, horizon (0: none) and timer bound of ``settings``
    (``SIGSTREAM_CORRELATION_*``)."""
    return CorrelationConfig(
        lateness_s=settings.correlation_lateness_s,
        horizon_s=settings.correlation_horizon_s or None,
        ttl_s=settings.correlation_ttl_s,
        tick_s=settings.correlation_tick_s or None,
    )


@dataclass(frozen=True)
class CorrelationStage:
    content: CorrelationContent
    ccfg: CorrelationConfig | None = None
    totals: CorrelationTotals | None = None
    on_batch: Callable[[dict[str, Any]], None] | None = None
    name: str = "correlation"

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None:
        return start_correlations(spark, cfg, self.content, self.ccfg, self.totals, self.on_batch)
