"""Ingest throughput: events/s from the ingest client into Kafka, by Kafka client.

Three clients: the project's ``ingest.producer.EventProducer`` (confluent-kafka, i.e.
librdkafka, since this benchmark showed it is the fastest), kafka-python without the
``crc32c`` extension (record-batch checksums computed in pure Python; the client the
project used first) and kafka-python with the ``crc32c`` C extension.

Events are encoded before the clock starts (the wire form of amplified OTRF events), so the
numbers are the Kafka client's, not pydantic's. All clients get the same producer settings
as ``EventProducer`` (acks=all, idempotence on, linger 20 ms, 512 KiB batches, LZ4 unless
``--compression``), send to a fresh topic with the project's partition count, and are timed
from the first send to the end of ``flush()`` (every event acknowledged by the broker).

Each client is connected and knows the topic's partition leaders before its clock starts,
as a sensor's long-lived client does: measured per round, connecting and waiting for a
fresh topic's metadata took 0.3-0.5 s, a third of a 100,000-event round at 100k events/s.
Rounds are 300,000 events (about 2 s) so one slow second moves the median less; the
kafka-python variants, 10-50x slower, send at most ``--kafka-python-events`` per round.

The topic's end offsets are checked afterwards so a client that silently dropped events
cannot win. Rounds alternate between the clients to spread out the noise of a busy
machine; the median and the best round are reported.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import machine_info, print_kv, print_table, progress, save_result
from bench.dataset import base_events_path
from common.settings import Settings, get_settings
from ingest.producer import COMPRESSION

Events = list[tuple[bytes, bytes]]

#: The kafka-python variants: capped at --kafka-python-events per round.
SLOW = ("kafka-python", "kafka-python+crc32c")


@dataclass
class Round:
    client: str
    events: int
    seconds: float
    cpu_seconds: float
    delivered: int
    failed: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def load_events(settings: Settings, count: int, seed: int) -> Events:
    """(key, value) pairs: a seeded sample of the OTRF events in their wire form."""
    lines = base_events_path(settings).read_bytes().splitlines()
    rng = random.Random(seed)
    picked = [lines[i] for i in sorted(rng.sample(range(len(lines)), min(count, len(lines))))]
    while len(picked) < count:  # more than the corpus: repeat it
        picked.extend(picked[: count - len(picked)])
    return [(json.loads(line)["sensor_id"].encode(), line) for line in picked]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def use_native_crc32c(native: bool) -> bool:
    """Point kafka-python's CRC32C (the checksum of every v2 record batch) at the ``crc32c``
    C extension or at its pure-Python fallback; False if the extension is not installed.

    Why: kafka-python silently falls back to pure Python when ``crc32c`` is missing, and
    that checksum is most of its CPU time per event; the project installs kafka-python
    without the ``crc32c`` extra, so both variants are measured.
    """
    from kafka.record import util

    if native and util.crc32c_c is None:
        return False
    util.calc_crc32c.__defaults__ = (util.crc32c_c if native else util.crc32c_py,)
    return True


def kafka_python_round(
    settings: Settings, topic: str, events: Events, compression: str | None
) -> tuple[float, float, int]:
    """kafka-python as pip installs it (checksums in pure Python)."""
    return _kafka_python(settings, topic, events, compression, native_crc=False)


def kafka_python_crc_round(
    settings: Settings, topic: str, events: Events, compression: str | None
) -> tuple[float, float, int]:
    """The same, with the ``crc32c`` C extension (``pip install 'kafka-python[crc32c]'``)."""
    return _kafka_python(settings, topic, events, compression, native_crc=True)


def _kafka_python(
    settings: Settings, topic: str, events: Events, compression: str | None, native_crc: bool
) -> tuple[float, float, int]:
    from kafka import KafkaProducer

    use_native_crc32c(native_crc)
    failed = 0

    def on_error(_exc: BaseException) -> None:
        nonlocal failed
        failed += 1

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        retries=10,
        compression_type=None if compression == "none" else compression,
    )
    producer.partitions_for(topic)  # connected, leaders known: before the clock
    send = producer.send
    cpu0, t0 = _cpu(), time.monotonic()
    for key, value in events:
        send(topic, key=key, value=value).add_errback(on_error)
    producer.flush(timeout=600)
    seconds, cpu = time.monotonic() - t0, _cpu() - cpu0
    producer.close()
    return seconds, cpu, failed


def event_producer_round(
    settings: Settings, topic: str, events: Events, compression: str | None
) -> tuple[float, float, int]:
    """The project's client, ``EventProducer`` (confluent-kafka), as replay uses it."""
    from ingest.producer import EventProducer

    producer = EventProducer(
        settings.kafka_bootstrap, topic, f"{topic}.dlq", **{"compression.type": compression}
    )
    producer.wait_ready(30)  # connected, leaders known: before the clock
    produce = producer._produce  # send_raw minus the key .encode()
    cpu0, t0 = _cpu(), time.monotonic()
    for key, value in events:
        produce(topic, value, key=key)
    producer.flush(600)
    seconds, cpu = time.monotonic() - t0, _cpu() - cpu0
    return seconds, cpu, producer.counts.failed


def end_offsets(settings: Settings, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def delete_topics(settings: Settings, topics: list[str]) -> None:
    from infra import kafka

    try:
        kafka.delete_topics(settings, topics)
    except Exception as exc:  # cleanup must not hide the numbers
        progress(f"could not delete bench topics: {exc}")


def ensure_services(settings: Settings, names: list[str]) -> None:
    """Use the running services; start them (and leave them running) when they are down."""
    from infra import services

    current = services.status(settings)
    down = [n for n in names if not current[n].up]
    if down:
        progress(f"starting {', '.join(down)} (left running; `sigstream infra down` stops them)")
        services.up(down, settings=settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Events/s from the ingest client into Kafka: the project's EventProducer "
        "(confluent-kafka) vs kafka-python with the same settings, pre-encoded events.",
    )
    parser.add_argument("--events", type=int, default=300_000, help="events per round")
    parser.add_argument(
        "--kafka-python-events",
        type=int,
        default=100_000,
        help="at most this many per round for the (much slower) kafka-python variants",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per client (alternating)")
    parser.add_argument(
        "--compression",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        default=COMPRESSION,
        help=f"producer compression, the same for every client (default: {COMPRESSION}, "
        "EventProducer's)",
    )
    parser.add_argument("--seed", type=int, default=4, help="event sampling seed")
    parser.add_argument(
        "--clients",
        default="EventProducer,kafka-python,kafka-python+crc32c",
        help="comma separated: EventProducer (the project's client: confluent-kafka), "
        "kafka-python (pure-Python checksums), kafka-python+crc32c (with the C checksum)",
    )
    args = parser.parse_args(argv)

    settings = get_settings()
    info = machine_info(settings)
    clients: dict[str, Callable[..., tuple[float, float, int]]] = {
        "kafka-python": kafka_python_round,
        "kafka-python+crc32c": kafka_python_crc_round,
        "EventProducer": event_producer_round,
    }
    wanted = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in clients]
    if unknown:
        parser.error(f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(clients)}")
    if "kafka-python+crc32c" in wanted and not use_native_crc32c(True):
        progress("crc32c: not installed (pip install 'kafka-python[crc32c]'); variant skipped")
        wanted.remove("kafka-python+crc32c")
    import confluent_kafka

    info["confluent-kafka"] = (
        f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
    )
    ensure_services(settings, ["kafka"])
    progress(f"encoding {args.events:,} events (before the clock starts) …")
    events = load_events(settings, args.events, args.seed)
    size = sum(len(v) for _, v in events)
    progress(f"{size / 1e6:,.0f} MB of events, {size / len(events):,.0f} bytes on average")

    from infra.kafka import ensure_topics

    rounds: list[Round] = []
    topics: list[str] = []
    try:
        for number in range(1, args.rounds + 1):
            for client in wanted:
                topic = f"sigstream-bench-ingest-{uuid.uuid4().hex[:8]}"
                ensure_topics(settings, [topic], settings.topic_partitions)
                topics.append(topic)
                batch = events[: args.kafka_python_events] if client in SLOW else events
                progress(f"round {number}: {client}, {len(batch):,} events → {topic} …")
                seconds, cpu, failed = clients[client](settings, topic, batch, args.compression)
                delivered = end_offsets(settings, topic)
                rounds.append(Round(client, len(batch), seconds, cpu, delivered, failed))
                progress(f"  {len(batch) / seconds:,.0f} events/s, {delivered:,} in the topic")
    finally:
        delete_topics(settings, topics)

    print_kv("Machine", info)
    print(
        f"\nIngest: pre-encoded OTRF events ({size / len(events):,.0f} bytes average), "
        f"{settings.topic_partitions} partitions, acks=all, compression {args.compression}, "
        f"{args.rounds} rounds per client\n"
    )
    rows = []
    summary: dict[str, Any] = {}
    for client in wanted:
        mine = [r for r in rounds if r.client == client]
        rates = [r.rate for r in mine]
        median = statistics.median(rates)
        cpu_per_100k = statistics.median(r.cpu_seconds / r.events * 100_000 for r in mine)
        ok = all(r.delivered == r.events and r.failed == 0 for r in mine)
        rows.append(
            [
                client,
                f"{mine[0].events:,}",
                f"{median:,.0f}",
                f"{max(rates):,.0f}",
                f"{median * size / len(events) / 1e6:,.1f}",
                f"{cpu_per_100k:.1f}",
                "yes" if ok else "NO",
            ]
        )
        summary[client] = {"median": median, "best": max(rates), "cpu_per_100k": cpu_per_100k}
    print_table(
        [
            "client",
            "events/round",
            "events/s (median)",
            "events/s (best)",
            "MB/s",
            "CPU s / 100k",
            "all delivered",
        ],
        rows,
    )
    base = summary.get("kafka-python")
    for client, numbers in summary.items():
        if base and client != "kafka-python":
            print(f"{client} / kafka-python: {numbers['median'] / base['median']:.1f}x (medians)")
    save_result("ingest", {"args": vars(args), "machine": info, "summary": summary})


if __name__ == "__main__":
    main()
