"""The contract of a streaming stage: one Structured Streaming query of the Sigstream
Spark application.

The detection pass (``detections.stream.job.DetectionPass``), the correlation stage
(``detections.correlation.stage.CorrelationStage``) and sensor health
(``detections.health.stage.SensorHealthStage``) all implement it, and
``detections.stream.job.run`` starts them one way: the detection pass first, then each
stage that reads what it publishes. A stage holds its own configuration (built by the CLI
from the settings); the job's shared configuration (topics, Elasticsearch, client options,
checkpoints, trigger) comes in as ``cfg``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # typing only: the job module imports this one
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from detections.stream.job import JobConfig


@runtime_checkable
class StreamingStage(Protocol):
    """A named streaming query: ``start`` returns at once with the running query, or
    None when the stage has nothing to do (no correlation rules, say)."""

    name: str

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None: ...


#: A plain function (session, job config) -> query also serves as a stage (tests, benches).
StageFunction = Callable[["SparkSession", "JobConfig"], "StreamingQuery | None"]


@dataclass(frozen=True)
class FunctionStage:
    """A :class:`StreamingStage` made of a plain function."""

    function: StageFunction
    name: str = "stage"

    def start(self, spark: SparkSession, cfg: JobConfig) -> StreamingQuery | None:
        return self.function(spark, cfg)


def as_stage(stage: StreamingStage | StageFunction) -> StreamingStage:
    if isinstance(stage, StreamingStage):
        return stage
    return FunctionStage(stage, getattr(stage, "__name__", "stage"))
