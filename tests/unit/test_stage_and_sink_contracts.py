"""The two contracts of the detection side (docs/architecture.md): a streaming stage
(``detections/stream/stage.py``) and a sink (``detections/sinks/base.py``). A sink added
through ``Destinations.extra_sinks`` is driven by the worker like the built-in ones: it gets
every batch's output, and a flush that says "not now" is repeated, not failed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from detections.compiler.logsources import Route
from detections.engine.matcher import _CACHE, MatcherSpec
from detections.sinks.base import Flushed, RetriableSinkError, Sink, TaskOutput
from detections.stream.stage import FunctionStage, StreamingStage, as_stage
from detections.stream.worker import REASON_COLUMN, VALUE_COLUMN, Destinations, partition_processor
from schemas.generate import arrow_event_schema
from tests.sigma_cases import rule_ir

ANY_ROUTE = Route(product=None, event_types=None, service=None)
EVENT = {"event_type": "process_creation", "sensor_id": "ws01", "host": "WS01"}


@dataclass
class Shipped:
    value: Any


def _batch(images: list[str]) -> pa.RecordBatch:
    rows = [{"event_type": "process_creation", "extra": {}, "Image": i} for i in images]
    table = pa.Table.from_pylist(rows, schema=arrow_event_schema())
    table = table.append_column(REASON_COLUMN, pa.nulls(len(rows), pa.string()))
    when = "2026-11-20T10:00:00Z"
    raw = [
        json.dumps(EVENT | {"Image": img, "event_id": f"e{n}", "event_time": when})
        for n, img in enumerate(images)
    ]
    table = table.append_column(VALUE_COLUMN, pa.array(raw))
    return table.combine_chunks().to_batches()[0]


@dataclass
class CountingSink(Sink):
    """Counts events; the first flush of every batch says "not now"."""

    seen: ClassVar[list[int]] = []
    flushes: ClassVar[list[str]] = []
    pending: list[int] = field(default_factory=list)

    def buffer(self, output: TaskOutput) -> None:
        self.pending.append(output.events.num_rows)

    def flush(self) -> Flushed:
        if len(self.flushes) % 2 == 0:
            self.flushes.append("retry")
            raise RetriableSinkError("not now")
        self.flushes.append("ok")
        CountingSink.seen += self.pending
        self.pending = []
        return Flushed()


@dataclass(frozen=True)
class CountingSpec:
    def open(self) -> Sink:
        return CountingSink()


def test_an_added_sink_gets_every_batch_and_a_retriable_flush_is_repeated() -> None:
    CountingSink.seen.clear()
    CountingSink.flushes.clear()
    never = rule_ir("sel:\n  Image|endswith: '\\never.exe'\ncondition: sel")
    spec = MatcherSpec.of([(0, ANY_ROUTE, never)])
    try:
        process = partition_processor(
            Shipped((spec, {})),
            (),
            ("http://unused:9200",),
            Destinations("unused", extra_sinks=(CountingSpec(),)),
            None,
            5.0,
        )
        (stats,) = list(process(iter([_batch(["a.exe", "b.exe"]), _batch(["c.exe"])])))
    finally:
        _CACHE.clear()
    assert stats.to_pylist()[0]["events"] == 3
    assert CountingSink.seen == [2, 1]
    assert CountingSink.flushes == ["retry", "ok", "retry", "ok"]


def test_stages_and_plain_functions_start_the_same_way() -> None:
    started: list[str] = []

    def health(spark: Any, cfg: Any) -> Any:
        started.append(f"function {spark} {cfg}")
        return None

    @dataclass(frozen=True)
    class Named:
        name: str = "named"

        def start(self, spark: Any, cfg: Any) -> Any:
            started.append(f"{self.name} {spark} {cfg}")
            return "query"

    assert isinstance(Named(), StreamingStage)
    assert as_stage(Named()) == Named()
    wrapped = as_stage(health)
    assert isinstance(wrapped, FunctionStage) and wrapped.name == "health"
    assert wrapped.start("s", "c") is None and as_stage(Named()).start("s", "c") == "query"
    assert started == ["function s c", "named s c"]
