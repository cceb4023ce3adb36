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


class _Slot:
    """One producer and the delivery failures of the one batch using it.

    Delivery reports come for failures only (``delivery.report.only.error``): a Python
    callback per delivered record was, with the per-record closures it needed, a fifth of
    the gateway's time at 18k events/s. A batch knows its records are all acknowledged
    when ``flush()`` of *its own* producer returns 0, which is why each batch in flight
    has a producer to itself (``KafkaSink`` keeps a small pool, one per concurrent batch),
    and a failure is matched to its record by its value (an unmatched one fails the batch)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.fatal = False
        self.failures: list[tuple[KafkaError, Message]] = []
        self.producer = Producer(
            {**config, "error_cb": self._on_error, "on_delivery": self._on_delivery}
        )

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("Kafka producer fatally broken, replacing it: %s", error)
            self.fatal = True

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append((error, message))


class KafkaSink:
    """Events to ``events_topic`` keyed by sensor id; rejects to ``dlq_topic`` with reasons.

    A small pool of idempotent producers serves every batch and every tenant, each batch
    using one producer alone while it is delivered (so it waits for its own records only,
    with one ``flush``). A producer is never purged because of a record: a record Kafka
    refuses on its own (``RECORD_ERRORS``, e.g. too large) goes to the DLQ with its reason
    and the batch still succeeds; a Kafka-wide failure (timeout, broker down) fails only
    the batch whose records it hit (503, re-sent). A producer is replaced when librdkafka
    reports it fatally broken, or when its batch timed out with records still queued
    (those could otherwise be reported to the next batch); the old one drains on its own."""

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
                "delivery.report.only.error": True,
                **overrides,
            },
        )
        self._free: list[_Slot] = []
        self._lock = threading.Lock()
        self._closed = False
        #: How many times a producer was thrown away (tests assert it stays 0 for records).
        self.replaced = 0

    def _borrow(self) -> _Slot:
        with self._lock:
            while self._free:
                slot = self._free.pop()
                if not slot.fatal:
                    return slot
                self.replaced += 1
        return _Slot(self.config)

    def _give_back(self, slot: _Slot) -> None:
        with self._lock:
            if slot.fatal:
                self.replaced += 1
            elif not self._closed:
                self._free.append(slot)
                return
        threading.Thread(target=slot.producer.flush, args=(5,), daemon=True).start()

    def _retire(self, slot: _Slot) -> None:
        """Drop a producer whose records are still queued (let it drain on its own)."""
        with self._lock:
            self.replaced += 1
        threading.Thread(target=slot.producer.flush, args=(30,), daemon=True).start()

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
            slot = self._borrow()
        except Exception as exc:
            raise SinkUnavailable(f"no Kafka producer: {exc!r}") from exc
        healthy = False
        try:
            slot.failures = []
            producer = slot.producer
            records = [_as_accepted(e) for e in events]
            refused_now: list[tuple[int, str]] = []
            tenants: dict[str, bytes] = {}
            topic = self.events_topic
            for i, ev in enumerate(records):
                tenant = tenants.get(ev.tenant_id)
                if tenant is None:
                    tenant = tenants[ev.tenant_id] = ev.tenant_id.encode()
                headers = [(TENANT_HEADER, tenant), (EVENT_ID_HEADER, ev.event_id.encode())]
                problem = self._produce(
                    producer, topic, ev.value, key=ev.sensor_id.encode(), headers=headers
                )
                if problem is not None:
                    refused_now.append((i, problem))
            for r in rejects:
                self._produce_reject(producer, r, identity, batch)
            self._flush(slot)
            failures, slot.failures = slot.failures, []
            transient = [e for e, _ in failures if e.code() not in RECORD_ERRORS]
            healthy = True  # every record was reported: the producer is empty and usable
            if transient:
                n = len(records) + len(rejects)
                raise SinkUnavailable(f"{len(transient)} of {n} records failed: {transient[0]}")
            per_record = self._match(records, failures)
            refused = [
                Reject(records[i].line, records[i].value, "kafka_refused", why)
                for i, why in sorted(refused_now + per_record)
            ]
            if refused:  # the refused events themselves, as DLQ records with their reason
                for r in refused:
                    self._produce_reject(producer, r, identity, batch)
                healthy = False
                self._flush(slot)
                again, slot.failures = slot.failures, []
                healthy = True
                if any(e.code() not in RECORD_ERRORS for e, _ in again):
                    raise SinkUnavailable("the DLQ did not take the refused events")
            result.refused = refused
            return result
        except SinkUnavailable:
            raise
        except Exception as exc:  # a failure of the client, not of one record
            raise SinkUnavailable(f"Kafka did not acknowledge the batch: {exc!r}") from exc
        finally:
            if healthy:
                self._give_back(slot)
            else:
                self._retire(slot)

    def _match(
        self, records: Sequence[Accepted], failures: list[tuple[KafkaError, Message]]
    ) -> list[tuple[int, str]]:
        """Record-level failures of this batch's events, as (record index, why), matched by
        the record's value (a delivery report carries the value; headers may be absent). A
        failure that matches none of them raises ``SinkUnavailable``: never answer 200 for
        a record Kafka did not take. A DLQ record refused by the broker itself (not
        possible under ``max_event_bytes``) is logged: it cannot be written anywhere else."""
        if not failures:
            return []
        where: dict[bytes, list[int]] = {}
        for i, ev in enumerate(records):
            where.setdefault(ev.value, []).append(i)
        out: list[tuple[int, str]] = []
        for error, message in failures:
            if message.topic() != self.events_topic:
                log.error("the DLQ refused a record: %s", error.str())
                continue
            value = message.value()
            found = where.get(value) if isinstance(value, bytes) else None
            if not found:
                raise SinkUnavailable(f"an unmatched record failed: {error.str()}")
            out.append((found.pop(0), f"Kafka refused the event: {error.str()}"))
        return out

    def _produce_reject(
        self, producer: Producer, r: Reject, identity: Identity, batch: str
    ) -> None:
        headers = [
            *dlq_headers(r.reason, f"gateway:{identity.sensor_id}:{batch}#{r.line}", "gateway"),
            (TENANT_HEADER, identity.tenant_id.encode()),
            (SENSOR_HEADER, identity.sensor_id.encode()),
        ]
        problem = self._produce(producer, self.dlq_topic, r.raw, headers=headers)
        if problem is not None:  # cannot happen for lines under max_event_bytes; keep a stub
            stub = r.raw[:1024]
            headers.append(("sigstream.truncated", str(len(r.raw)).encode()))
            problem = self._produce(producer, self.dlq_topic, stub, headers=headers)
            if problem is not None:
                raise SinkUnavailable(f"the DLQ refused a reject: {problem}")

    def _flush(self, slot: _Slot) -> None:
        """Wait until every record of this batch is acknowledged or failed (librdkafka
        reports every record by ``message.timeout.ms``); ``flush`` also sends at once,
        without waiting for ``linger.ms``."""
        left = slot.producer.flush(self.timeout_s + 10)
        if left:
            raise SinkUnavailable(f"no acknowledgement from Kafka in time ({left} records)")

    def _produce(self, producer: Producer, topic: str, value: bytes, **kw: Any) -> str | None:
        """None when queued, else why this record is refused on its own (raises for
        anything that is not about the record)."""
        try:
            producer.produce(topic, value, **kw)
            return None
        except BufferError:  # local queue full: let deliveries drain, then retry
            deadline = time.monotonic() + self.timeout_s
            while True:
                producer.poll(0.05)
                try:
                    producer.produce(topic, value, **kw)
                    return None
                except BufferError:
                    if time.monotonic() > deadline:
                        raise
                except KafkaException as exc:
                    if _code(exc) in RECORD_ERRORS:
                        return str(exc.args[0].str())
                    raise
        except KafkaException as exc:
            if _code(exc) in RECORD_ERRORS:
                return str(exc.args[0].str())
            raise

    def ready(self) -> bool:
        """Kafka reachable and the topic has partitions. Never drops a producer (that
        would fail other tenants' batches in flight)."""
        try:
            slot = self._borrow()
        except Exception:
            return False
        try:
            meta = slot.producer.list_topics(self.events_topic, timeout=5)
            topic = meta.topics.get(self.events_topic)
            return topic is not None and topic.error is None and bool(topic.partitions)
        except Exception:
            return False
        finally:
            self._give_back(slot)

    def close(self) -> None:
        with self._lock:
            slots, self._free, self._closed = self._free, [], True
        for slot in slots:
            slot.producer.flush(5)


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
