"""Where accepted events and rejects go: Kafka, through an idempotent producer.

``KafkaSink.deliver`` is blocking; the app runs it on a worker thread and only answers a
batch after Kafka acknowledged every record of it (``acks=all``), so a 200 means "durable
in Kafka". A record Kafka refuses on its own goes to the DLQ (``kafka_refused``) and is
answered as a reject; a Kafka-wide failure raises ``SinkUnavailable`` (the app answers 503
+ Retry-After and the client re-sends the whole batch later; the ids already acknowledged
are then answered as duplicates, see ``dedupe``).

The client is librdkafka (confluent-kafka), like ``ingest.producer.EventProducer``. The
producer is idempotent (``enable.idempotence``: broker-side de-duplication of the
producer's own retries, order kept with up to 5 requests in flight). It is created lazily,
shared by all batches, never purged for one batch's trouble (librdkafka reconnects by
itself after an outage) and replaced only when librdkafka reports it fatally broken.
Security options (SASL/TLS) come in as librdkafka properties from
``common.client_options.confluent_kafka_config``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ingest.gateway.parse import Accepted, Identity, Reject
from ingest.producer import dlq_headers, encode_event, producer_config
from schemas.events import Envelope

log = logging.getLogger(__name__)

TENANT_HEADER = "sigstream.tenant"
EVENT_ID_HEADER = "sigstream.event_id"
SENSOR_HEADER = "sigstream.sensor"


class SinkUnavailable(RuntimeError):
    """Kafka did not take the batch; the sender should retry later."""


#: Errors that belong to one record (its size or content), never to Kafka as a whole: the
#: record is refused on its own and the rest of the batch is unaffected.
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError._INVALID_ARG,
        KafkaError._BAD_MSG,
    }
)


@dataclass
class Delivery:
    """What the sink did with one batch: events Kafka refused one by one (already in the
    DLQ with reason ``kafka_refused``), the rest are acknowledged."""

    refused: list[Reject] = field(default_factory=list)


class Sink(Protocol):
    def deliver(
        self,
        events: Sequence[Accepted | Envelope],
        rejects: Sequence[Reject],
        identity: Identity,
        batch: str,
    ) -> Delivery | None: ...

    def close(self) -> None: ...


def _as_accepted(item: Accepted | Envelope) -> Accepted:
    if isinstance(item, Accepted):
        return item
    return Accepted(0, encode_event(item), item.tenant_id, item.sensor_id, item.event_id)


def _code(exc: BaseException) -> Any:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err.code() if isinstance(err, KafkaError) else None


class _Waiter:
    """Delivery reports of one batch only (several batches share the producer)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.sent = 0
        self.reported = 0
        self.errors: dict[int, KafkaError] = {}  # record index -> error
        self.closed = False

    def callback(self, index: int) -> Any:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            with self.lock:
                self.reported += 1
                if error is not None:
                    self.errors[index] = error
                if self.closed and self.reported >= self.sent:
                    self.done.set()

        return delivered

    def close(self, sent: int) -> None:
        with self.lock:
            self.sent, self.closed = sent, True
            if self.reported >= sent:
                self.done.set()


class KafkaSink:
    """Events to ``events_topic`` keyed by sensor id; rejects to ``dlq_topic`` with reasons.

    One producer serves every batch and every tenant. It is never purged because of a
    record: a record Kafka refuses on its own (``RECORD_ERRORS``, e.g. too large) goes to
    the DLQ with its reason and the batch still succeeds; a Kafka-wide failure (timeout,
    broker down) fails only the batches whose records it hit (503, re-sent). The producer
    is replaced only when librdkafka reports it fatally broken."""

    def __init__(
        self,
        bootstrap: str,
        events_topic: str,
        dlq_topic: str,
        *,
        timeout_s: float = 30.0,
        client_config: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        """``client_config``: librdkafka security properties (see common.client_options);
        ``overrides``: any other librdkafka property."""
        self.bootstrap = bootstrap
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.timeout_s = timeout_s
        self.config: dict[str, Any] = producer_config(
            bootstrap,
            client_config,
            **{
                "max.in.flight.requests.per.connection": 5,
                "linger.ms": 5,
                "socket.timeout.ms": 10_000,
                "message.timeout.ms": int(timeout_s * 1000),
                "error_cb": self._on_error,
                **overrides,
            },
        )
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._fatal = False
        #: How many times a producer was thrown away (tests assert it stays 0 for records).
        self.replaced = 0

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("Kafka producer fatally broken, replacing it: %s", error)
            self._fatal = True

    def _get(self) -> Producer:
        with self._lock:
            if self._fatal and self._producer is not None:
                self._producer, self._fatal = None, False
                self.replaced += 1
            if self._producer is None:
                self._producer = Producer(self.config)
            return self._producer

    def deliver(
        self,
        events: Sequence[Accepted | Envelope],
        rejects: Sequence[Reject],
        identity: Identity,
        batch: str,
    ) -> Delivery:
        """Write one batch and wait for its own acknowledgements (not other batches')."""
        result = Delivery()
        try:
            producer = self._get()
            records = [_as_accepted(e) for e in events]
            waiter = _Waiter()
            sent = 0
            refused_now: list[tuple[int, str]] = []
            for i, ev in enumerate(records):
                headers = [
                    (TENANT_HEADER, ev.tenant_id.encode()),
                    (EVENT_ID_HEADER, ev.event_id.encode()),
                ]
                problem = self._produce(
                    producer,
                    self.events_topic,
                    ev.value,
                    waiter.callback(i),
                    key=ev.sensor_id.encode(),
                    headers=headers,
                )
                if problem is None:
                    sent += 1
                else:
                    refused_now.append((i, problem))
            all_rejects = list(rejects)
            for r in all_rejects:
                if self._produce_reject(producer, r, identity, batch, waiter, sent) is None:
                    sent += 1
            waiter.close(sent)
            self._wait(producer, waiter)
            failed = {i: e for i, e in waiter.errors.items() if i < len(records)}
            transient = [e for e in waiter.errors.values() if e.code() not in RECORD_ERRORS]
            if transient:
                raise SinkUnavailable(f"{len(transient)} of {sent} records failed: {transient[0]}")
            per_record = [(i, f"Kafka refused the event: {e.str()}") for i, e in failed.items()]
            refused = [
                Reject(records[i].line, records[i].value, "kafka_refused", why)
                for i, why in sorted(refused_now + per_record)
            ]
            if refused:  # the refused events themselves, as DLQ records with their reason
                waiter2 = _Waiter()
                n = 0
                for r in refused:
                    if self._produce_reject(producer, r, identity, batch, waiter2, n) is None:
                        n += 1
                waiter2.close(n)
                self._wait(producer, waiter2)
                if any(e.code() not in RECORD_ERRORS for e in waiter2.errors.values()):
                    raise SinkUnavailable("the DLQ did not take the refused events")
            result.refused = refused
            return result
        except SinkUnavailable:
            raise
        except Exception as exc:  # a failure of the client, not of one record
            raise SinkUnavailable(f"Kafka did not acknowledge the batch: {exc!r}") from exc

    def _produce_reject(
        self, producer: Producer, r: Reject, identity: Identity, batch: str, waiter: _Waiter, n: int
    ) -> str | None:
        headers = [
            *dlq_headers(r.reason, f"gateway:{identity.sensor_id}:{batch}#{r.line}", "gateway"),
            (TENANT_HEADER, identity.tenant_id.encode()),
            (SENSOR_HEADER, identity.sensor_id.encode()),
        ]
        problem = self._produce(
            producer, self.dlq_topic, r.raw, waiter.callback(1_000_000_000 + n), headers=headers
        )
        if problem is not None:  # cannot happen for lines under max_event_bytes; keep a stub
            stub = r.raw[:1024]
            headers.append(("sigstream.truncated", str(len(r.raw)).encode()))
            problem = self._produce(
                producer, self.dlq_topic, stub, waiter.callback(1_000_000_000 + n), headers=headers
            )
            if problem is not None:
                raise SinkUnavailable(f"the DLQ refused a reject: {problem}")
        return None

    def _wait(self, producer: Producer, waiter: _Waiter) -> None:
        """Serve delivery reports until this batch's are all in (librdkafka reports every
        record by ``message.timeout.ms``); other threads' polls serve ours too."""
        deadline = time.monotonic() + self.timeout_s + 10
        while not waiter.done.is_set():
            if time.monotonic() > deadline:
                raise SinkUnavailable("no acknowledgement from Kafka in time")
            producer.poll(0.05)

    def _produce(
        self, producer: Producer, topic: str, value: bytes, callback: Any, **kw: Any
    ) -> str | None:
        """None when queued, else why this record is refused on its own (raises for
        anything that is not about the record)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                producer.produce(topic, value, on_delivery=callback, **kw)
                return None
            except BufferError:  # local queue full: let deliveries drain, then retry
                if time.monotonic() > deadline:
                    raise
                producer.poll(0.05)
            except KafkaException as exc:
                if _code(exc) in RECORD_ERRORS:
                    return str(exc.args[0].str())
                raise

    def ready(self) -> bool:
        """Kafka reachable and the topic has partitions. Never drops the shared producer
        (that would fail other tenants' batches in flight)."""
        try:
            meta = self._get().list_topics(self.events_topic, timeout=5)
            topic = meta.topics.get(self.events_topic)
            return topic is not None and topic.error is None and bool(topic.partitions)
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(5)


def recent_ids(
    bootstrap: str,
    topic: str,
    per_partition: int,
    timeout_s: float = 20.0,
    client_config: Mapping[str, Any] | None = None,
) -> list[tuple[str, str, str]]:
    """(tenant, sensor, event id) of the last ``per_partition`` records of each partition,
    oldest first, read from the headers the gateway writes and the record key (the sensor
    id, as ``deliver`` writes it): the same key as the live window. Empty when the topic
    does not exist.

    Needs Read on the topic: under the secure profile's ACLs the gateway has none, so the
    app starts with an empty window (it logs why)."""
    config: dict[str, Any] = {
        **(client_config or {}),
        "bootstrap.servers": bootstrap,
        "group.id": "sigstream-gateway-seed",  # required by librdkafka; never joined
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    consumer = Consumer(config)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            if (
                info is not None
                and info.error is not None
                and info.error.code()
                not in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError._UNKNOWN_TOPIC,
                )
            ):
                raise RuntimeError(f"cannot read {topic}: {info.error}")
            return []
        assigned: list[TopicPartition] = []
        pending: set[int] = set()
        for p in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                assigned.append(TopicPartition(topic, p, max(low, high - per_partition)))
                pending.add(p)
        if not assigned:
            return []
        consumer.assign(assigned)
        per_part: dict[int, list[tuple[str, str, str]]] = {p: [] for p in pending}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error, partition = msg.error(), msg.partition() or 0
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                    continue
                raise RuntimeError(f"cannot read {topic}: {error}")
            raw = msg.headers() or []
            pairs = raw.items() if isinstance(raw, dict) else raw
            h = {k: v for k, v in pairs if isinstance(v, bytes)}
            key = msg.key()
            if TENANT_HEADER in h and EVENT_ID_HEADER in h and isinstance(key, bytes):
                per_part[partition].append(
                    (
                        h[TENANT_HEADER].decode(errors="replace"),
                        key.decode(errors="replace"),
                        h[EVENT_ID_HEADER].decode(errors="replace"),
                    )
                )
        return [pair for p in sorted(per_part) for pair in per_part[p]]
    finally:
        consumer.close()
