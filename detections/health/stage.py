"""Sensor health as a streaming stage (``detections.stream.stage.StreamingStage``): the
query of ``detections.health.query`` over the per-sensor summaries the detection pass
publishes, with its own configuration given by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from detections.health import query
from detections.health.state import HealthConfig
from detections.stream.job import JobConfig


def health_config(settings: Any) -> HealthConfig:
    """The health thresholds of ``settings`` (``SIGSTREAM_HEALTH_*``)."""
    return HealthConfig(
        default_interval_s=settings.health_interval_s,
        silence_multiplier=settings.health_silence_multiplier,
        skew_threshold_s=settings.health_skew_threshold_s,
        gap_grace_s=settings.health_gap_grace_s,
    )


@dataclass(frozen=True)
class SensorHealthStage:
    health: HealthConfig
    sensors_index: str
    name: str = "sensor-health"

    @classmethod
    def of(cls, settings: Any) -> SensorHealthStage:
        return cls(health_config(settings), settings.sensors_index)

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None:
        return query.start(spark, cfg, self.health, self.sensors_index)
