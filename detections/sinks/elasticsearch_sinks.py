"""The detection pass's Elasticsearch sinks (``detections.sinks.base``): findings (with
the index's suppression rules applied) and, optionally, every valid event (triage
context). The Python worker keeps one client per hosts and a short cache of suppression
rules across tasks (Spark reuses workers)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from detections.sinks.base import (
    VALUE_COLUMN,
    Document,
    Flushed,
    RetriableSinkError,
    Sink,
    TaskOutput,
)
from detections.sinks.elasticsearch import active_suppressions, connect, write_documents
from detections.sinks.events import index_events
from detections.sinks.outage import is_outage
from schemas.generate import event_columns

T = TypeVar("T")
_clients: dict[tuple[str, ...], tuple[str, Any]] = {}


def worker_client(hosts: tuple[str, ...], options: Mapping[str, Any] | None) -> Any:
    """The Python worker's Elasticsearch client for ``hosts``, kept across tasks (Spark
    reuses workers): its pooled connections spare every task a connect and handshake.
    Other options (rotated credentials) replace it."""
    key = repr(sorted((options or {}).items()))
    cached = _clients.get(hosts)
    if cached is not None and cached[0] == key:
        return cached[1]
    if cached is not None:
        cached[1].close()
    # The job's options only: an executor never reads its own settings.
    client = connect(hosts, from_settings=False, **(options or {}))
    _clients[hosts] = (key, client)
    return client


#: How long a worker reuses an index's suppression rules: a new suppression silences
#: matches within this many seconds, and a batch saves a search per task.
SUPPRESSIONS_TTL_S = 5.0
_suppressions: dict[tuple[tuple[str, ...], str], tuple[float, list[Any]]] = {}


def cached_suppressions(es: Any, hosts: tuple[str, ...], index: str) -> list[Any]:
    """The suppression rules of ``index``, read at most every ``SUPPRESSIONS_TTL_S``
    seconds per Python worker (Spark reuses workers across micro-batches)."""
    now = time.monotonic()
    cached = _suppressions.get((hosts, index))
    if cached is not None and now - cached[0] < SUPPRESSIONS_TTL_S:
        return cached[1]
    rules = active_suppressions(es, index)
    _suppressions[(hosts, index)] = (now, rules)
    return rules


def retriable(write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``write(*args, **kwargs)``, with Elasticsearch's "not now" errors as
    :class:`RetriableSinkError`."""
    try:
        return write(*args, **kwargs)
    except Exception as error:
        if is_outage(error):
            raise RetriableSinkError(str(error)) from error
        raise


@dataclass(frozen=True)
class FindingsIndex:
    """Findings, bulk-created by id into their index (active or shadow)."""

    hosts: tuple[str, ...]
    options: Mapping[str, Any] | None = None

    def open(self) -> Sink:
        return FindingsSink(self)


@dataclass
class FindingsSink(Sink):
    spec: FindingsIndex
    pending: dict[str, list[Document]] = field(default_factory=dict)

    def buffer(self, output: TaskOutput) -> None:
        for index, documents in output.findings.items():
            self.pending.setdefault(index, []).extend(documents)

    def flush(self) -> Flushed:
        flushed = Flushed()
        for index in list(self.pending):
            es = worker_client(self.spec.hosts, self.spec.options)
            suppressions = retriable(cached_suppressions, es, self.spec.hosts, index)
            written = retriable(
                write_documents, es, index, self.pending[index], suppressions=suppressions
            )
            del self.pending[index]  # written: a repeated flush does not write it again
            flushed.created += written.created
            flushed.duplicates += written.duplicates
        return flushed


@dataclass(frozen=True)
class EventsIndex:
    """Every valid event, as its sensor sent it, into the events index."""

    hosts: tuple[str, ...]
    index: str
    options: Mapping[str, Any] | None = None

    def open(self) -> Sink:
        return EventsSink(self)


@dataclass
class EventsSink(Sink):
    spec: EventsIndex
    pending: list[dict[str, Any]] = field(default_factory=list)

    def buffer(self, output: TaskOutput) -> None:
        if output.events.num_rows:
            self.pending += event_documents(output.events)

    def flush(self) -> Flushed:
        if not self.pending:
            return Flushed()
        es = worker_client(self.spec.hosts, self.spec.options)
        retriable(index_events, es, self.spec.index, self.pending)
        self.pending = []
        return Flushed()  # events are context, not counted as findings


def event_documents(events: Any) -> list[dict[str, Any]]:
    """The batch's events as their sensors sent them, limited to the schema's fields (the
    events index maps those strictly; a sensor's stray top-level key stays in the raw
    record and the finding's copy, and cannot fail the batch)."""
    known = event_columns()
    return [
        {k: v for k, v in json.loads(raw).items() if k in known}
        for raw in events.column(VALUE_COLUMN).to_pylist()
    ]
