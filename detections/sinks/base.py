"""The contract of a sink of the detection pass: buffer, then flush.

One Spark task of the detect job (``detections.stream.worker``) hands each Arrow batch's
output (its valid events and the finding documents per index) to every sink with
``buffer`` (no I/O), then calls ``flush``: the only I/O, repeated by the worker through an
outage for up to the job's patience when it raises :class:`RetriableSinkError`. A sink keeps
what it has not written yet, so a repeated flush writes only that; every write is
replay-safe (deterministic ids, create-only), so a repeat never duplicates. Clients are
built on the executor when first needed, never in a constructor: the driver ships a
picklable :class:`SinkSpec` and each task ``open``s its own sink.

Adding a sink means adding a ``SinkSpec`` and a ``Sink`` class and listing the spec in
``Destinations.extra_sinks``; the worker drives every sink the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

#: The column of a task's Arrow batches holding each record's JSON as the sensor sent it.
VALUE_COLUMN = "value"
#: A finding document: (deterministic id, body).
Document = tuple[str, dict[str, Any]]


class RetriableSinkError(RuntimeError):
    """Not now: the store is unreachable, overloaded or recovering. The worker repeats
    ``flush`` with backoff for up to the job's patience (``detections.sinks.outage``)."""


@dataclass(frozen=True)
class TaskOutput:
    """What one Arrow batch of a task produced: its valid events (the parsed columns and
    the raw ``value``) and the finding documents, by destination index."""

    events: pa.RecordBatch
    findings: Mapping[str, list[Document]]


@dataclass
class Flushed:
    """What a flush wrote: new documents, and documents that were already there."""

    created: int = 0
    duplicates: int = 0


class Sink(ABC):
    """Buffer the part of each batch this sink writes; flush it in one write."""

    @abstractmethod
    def buffer(self, output: TaskOutput) -> None:
        """Keep what this sink writes of ``output`` (no I/O)."""

    @abstractmethod
    def flush(self) -> Flushed:
        """Write what is buffered; raise :class:`RetriableSinkError` for "not now"
        (the buffer is kept, so the worker can call ``flush`` again)."""


class SinkSpec(Protocol):
    """The picklable description of a sink, built on the driver and shipped to tasks."""

    def open(self) -> Sink: ...
