"""End-to-end latency: an event sent to Kafka -> its finding searchable in Elasticsearch.

The real detection job runs in this process (``detections.job.start``, processing-time
trigger, the production code path: Kafka source, parse, routing, rules, findings bulk-
created from the executors). First a capacity phase measures what the whole job sustains:
a backlog of ``--capacity-events`` sent at once, processed in as few micro-batches as the
job takes, capacity = events / seconds of batch time. Then events are sent at a steady
rate, half that capacity unless ``--rate``; the sender keeps each event's send time by
event id, and a poller searches the findings index every ``--poll`` seconds for new
findings' ``event.id`` (doc values only, so polling barely loads Elasticsearch). Latency =
time the poller first saw the finding - send time, so it includes the producer's linger,
the wait for the next trigger, the micro-batch, the bulk write and the refresh.

The job's first micro-batch pays Spark's analysis and code generation for the whole rule
set; a warm-up phase absorbs it before the clock starts. Everything is sent to a fresh
topic and a fresh findings index (deleted at the end), never the production ones.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE_DIR,
    CpuMeter,
    machine_info,
    print_kv,
    print_table,
    progress,
    save_result,
)
from bench.dataset import base_events_path
from bench.ingest import delete_topics, ensure_services
from sigstream.settings import Settings, get_settings

LOOKBACK_S = 5  # how far before the newest finding's ingested time each poll looks
WARMUP_RATE = 1_000.0  # events/s before anything is measured
#: Seconds of warm-up. The Spark driver is a new JVM in every run: until the JIT has
#: compiled its hot paths (the generated projection, the JSON parser, the Arrow writer) the
#: job runs at about half its capacity (2,900-4,500 events/s after a 2 s warm-up,
#: 6,400-10,000 after 60-120 s). A freshly started Elasticsearch stays slower for longer
#: than this; bench/README.md has the figures.
WARMUP_S = 120.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Poller(threading.Thread):
    """Search the findings index every ``interval`` s; record when each finding appears."""

    def __init__(self, settings: Settings, index: str, interval: float) -> None:
        super().__init__(daemon=True)
        from detections.sinks.elasticsearch import connect

        self.es = connect(settings.es_hosts)
        self.index = index
        self.interval = interval
        self.seen: dict[str, tuple[float, str]] = {}  # finding id -> (seen, event id)
        self.newest = ""  # event.ingested of the newest finding seen
        self.stopping = threading.Event()
        self.errors = 0

    def poll(self) -> None:
        # Ids and times from doc values only: fetching each finding's _source ten times a
        # second loaded Elasticsearch (and this machine) enough to distort what we measure.
        query: dict[str, Any] = {"match_all": {}}
        if self.newest:
            # A task stamps its findings' ingested time when it starts, its bulk write
            # lands up to a batch later: look back beyond a batch (a finding written
            # later still is counted by ``missed``, never silently left out).
            query = {"range": {"event.ingested": {"gte": f"{self.newest}||-{LOOKBACK_S}s"}}}
        response = self.es.search(
            index=self.index,
            query=query,
            size=10_000,
            source=False,
            docvalue_fields=[
                "event.id",
                {"field": "event.ingested", "format": "strict_date_optional_time"},
            ],
            ignore_unavailable=True,
        )
        now = time.time()
        for hit in response["hits"]["hits"]:
            if hit["_id"] in self.seen:
                continue
            fields = hit.get("fields", {})
            self.seen[hit["_id"]] = (now, (fields.get("event.id") or [""])[0])
            self.newest = max(self.newest, (fields.get("event.ingested") or [""])[0])

    def missed(self) -> int:
        """Findings in the index the live polls never saw (so no latency for them)."""
        self.es.indices.refresh(index=self.index)
        return int(self.es.count(index=self.index)["count"]) - len(self.seen)

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception:  # a slow or refused search must not end the benchmark
                self.errors += 1
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))


def print_trigger_breakdown(progresses: list[dict[str, Any]]) -> None:
    """Where each trigger's time went, per Spark's own progress reports (durationMs):
    ``addBatch`` is our foreachBatch; the rest is the engine's bookkeeping around it."""
    keys = sorted({k for p in progresses for k in p.get("durationMs", {})})
    means = {
        k: statistics.mean(p.get("durationMs", {}).get(k, 0) for p in progresses) for k in keys
    }
    print(
        f"\nper trigger, mean of {len(progresses)} (Spark durationMs): "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(means.items(), key=lambda kv: -kv[1]))
    )


def event_pool(
    settings: Settings, count: int, seed: int, match_share: float, fleet_copies: int = 1
) -> tuple[list[dict[str, Any]], int]:
    """Events to send, as dicts to stamp: a seeded sample of the OTRF mix, with a share of
    SigmaHQ regression events mixed in. The OTRF mix alone yields few findings (well under
    1% of events with all rules), too few for a p99; each regression event was written to
    trigger its rule, so they make findings frequent without changing the background.

    The OTRF recordings come from 24 machines, one of them sending 29% of the events;
    Kafka partitions by sensor, so one partition (one Spark task) would carry most of
    each batch. With ``fleet_copies`` > 1 each background event comes from one of that many
    copies of its machine (``bench.dataset.amplify``, as the engine benchmark's events),
    a fleet of 24 x ``fleet_copies`` sensors as a real deployment has."""
    from bench.dataset import amplify
    from ingest.producer import encode_event
    from ingest.sources import iter_items

    rng = random.Random(seed)
    lines = base_events_path(settings).read_bytes().splitlines()
    background = [
        json.loads(lines[i]) for i in rng.sample(range(len(lines)), min(count, len(lines)))
    ]
    regression = settings.shared_data / "sigma-regression"
    markers = []
    if match_share > 0 and regression.is_dir():
        markers = [
            json.loads(encode_event(item.event))
            for item in iter_items([regression])
            if item.event is not None
        ]
    pool = []
    for i in range(count):
        if markers and rng.random() < match_share:
            pool.append(rng.choice(markers))
        else:
            event = background[i % len(background)]
            pool.append(amplify(event, rng.randrange(fleet_copies), rng))
    return pool, len(markers)


def encode_phase(
    pool: list[dict[str, Any]], start: int, count: int, run_id: str
) -> list[tuple[str, str, bytes]]:
    """(key, event id, JSON) of events ``start`` .. ``start + count`` with fresh event ids,
    encoded before the phase's clock starts: encoding is the sensors' work, and on a
    2-core machine doing it while sending would take CPU from the job being measured."""
    messages = []
    for i in range(start, start + count):
        base = pool[i % len(pool)]
        event = dict(base)
        event["event_id"] = f"{base['event_id']}-{run_id}-{i}"  # fresh finding ids
        messages.append((str(event["sensor_id"]), event["event_id"], json.dumps(event).encode()))
    return messages


def send_phase(
    producer: Any,
    messages: list[tuple[str, str, bytes]],
    rate: float,
    sent_at: dict[str, float] | None = None,
) -> int:
    """Send ``messages`` (``encode_phase``) at ``rate``/s (0: at once), keeping each one's
    send time in ``sent_at`` (by event id) when given; returns how many were sent."""
    from ingest.replay import RateLimiter

    limiter = RateLimiter(rate)
    for key, event_id, payload in messages:
        limiter.wait()
        if sent_at is not None:
            sent_at[event_id] = time.time()
        producer.send_raw(key, payload)
    producer.flush()
    return len(messages)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="End-to-end latency from Kafka send to searchable finding, with the real "
        "streaming job running in-process; prints p50/p95/p99.",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="events/s (default: half the job's capacity, measured first in the same run)",
    )
    parser.add_argument(
        "--capacity-events",
        type=int,
        default=50_000,
        help="backlog the capacity phase sends at once to measure the job's events/s",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds of sending")
    parser.add_argument(
        "--rules",
        default="all",
        help="'all' planned SigmaHQ Windows rules, or a size the engine benchmark sampled",
    )
    parser.add_argument(
        "--trigger",
        type=float,
        default=0.5,
        help="micro-batch trigger interval, s (default 0.5, the job's default)",
    )
    parser.add_argument("--poll", type=float, default=0.1, help="Elasticsearch poll interval, s")
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_S,
        help=f"seconds of events at {WARMUP_RATE:,.0f}/s before anything is measured (default "
        f"{WARMUP_S:g}: the job's new JVM runs at half speed until its hot paths are "
        "compiled, see bench/README.md)",
    )
    parser.add_argument(
        "--match-share",
        type=float,
        default=0.01,
        help="share of SigmaHQ regression events (each triggers a rule) among the OTRF mix "
        "(default 0.01: with the OTRF events' own matches about 2%% of events raise a "
        "finding, far above a real fleet's alert rate, yet thousands for the percentiles)",
    )
    parser.add_argument(
        "--fleet-copies",
        type=int,
        default=50,
        help="copies of each OTRF machine the events are spread over (default 50: a fleet "
        "of 1,200 sensors; 1 sends from the 24 recorded machines as they are)",
    )
    parser.add_argument("--seed", type=int, default=4, help="event sampling seed")
    parser.add_argument("--driver-memory", default="4g", help="Spark driver memory")
    parser.add_argument(
        "--max-wait", type=float, default=300.0, help="give up waiting for the job after s"
    )
    args = parser.parse_args(argv)

    from detections.job import BatchStats, JobConfig, JobTotals, start
    from detections.plan import load_plan
    from detections.sinks.elasticsearch import connect
    from detections.spark import build_session
    from infra.kafka import ensure_topics
    from ingest.producer import EventProducer
    from sigstream.cli import default_rule_paths

    settings = get_settings()
    info = machine_info(settings)
    ensure_services(settings, ["kafka", "elasticsearch"])

    if args.rules == "all":
        rule_paths = default_rule_paths(settings)
    else:
        folder = CACHE_DIR / f"rules-{args.rules}-s{args.seed}"
        if not folder.is_dir():
            raise SystemExit(f"{folder} not found: run the engine benchmark with that size first")
        rule_paths = [folder]
    progress("compiling rules …")
    plan = load_plan(rule_paths)
    progress(f"{len(plan.rules)} rules planned")

    run_id = uuid.uuid4().hex[:8]
    topic = f"sigstream-bench-latency-{run_id}"
    index = f"sigstream-bench-latency-{run_id}"
    checkpoint = CACHE_DIR / f"latency-checkpoint-{run_id}"
    ensure_topics(settings, [topic, f"{topic}.dlq"], settings.topic_partitions)
    cfg = JobConfig(
        kafka_bootstrap=settings.kafka_bootstrap,
        events_topic=topic,
        dlq_topic=f"{topic}.dlq",
        es_hosts=tuple(settings.es_hosts),
        findings_index=index,
        checkpoint_dir=checkpoint,
        trigger_seconds=args.trigger,
    )
    capacity_events = 0 if args.rate else args.capacity_events
    # Enough distinct events for the largest send phase at up to 50k events/s.
    warmup_events = int(WARMUP_RATE * args.warmup)
    pool_size = warmup_events + capacity_events + int((args.rate or 50_000) * args.duration)
    pool, n_markers = event_pool(
        settings, pool_size, args.seed, args.match_share, args.fleet_copies
    )
    batches: list[BatchStats] = []
    totals = JobTotals()

    progress("starting Spark and the detection job …")
    spark = build_session(
        settings.model_copy(update={"spark_driver_memory": args.driver_memory}),
        app_name="sigstream-bench-latency",
        extra_conf={"spark.ui.showConsoleProgress": "false"},
    )
    es = connect(settings.es_hosts)
    poller = Poller(settings, index, args.poll)
    producer = EventProducer(settings.kafka_bootstrap, topic, f"{topic}.dlq")
    query = None
    missed = 0
    progresses: list[dict[str, Any]] = []  # Spark's progress reports of the measured batches
    sent_at: dict[str, float] = {}  # event id -> send time, for the measured events
    cpu = CpuMeter()  # who used the cores while the measured events were sent and processed
    try:
        started = time.monotonic()
        query = start(spark, plan, cfg, totals, on_batch=batches.append)
        progress(f"job started in {time.monotonic() - started:.1f}s; warming up …")
        progress(f"warm-up: {args.warmup:g}s at {WARMUP_RATE:,.0f} events/s …")
        send_phase(producer, encode_phase(pool, 0, warmup_events, run_id), WARMUP_RATE)
        deadline = time.monotonic() + args.max_wait
        while totals.events < warmup_events and time.monotonic() < deadline:
            time.sleep(0.5)
        warm_batches = len(batches)
        progress(
            f"warm-up done: {totals.events:,} events in {warm_batches} batches "
            f"(first batch {batches[0].seconds:.1f}s)"
            if batches
            else "warm-up did not finish in time"
        )
        sent = warmup_events
        if args.rate:
            rate, why = args.rate, "--rate"
        else:
            progress(f"capacity: sending a backlog of {capacity_events:,} events at once …")
            before = len(batches)
            sent += send_phase(producer, encode_phase(pool, sent, capacity_events, run_id), 0)
            while totals.events < sent and time.monotonic() < deadline + args.max_wait:
                time.sleep(0.2)
            busy = batches[before:]
            capacity = sum(b.events for b in busy) / max(sum(b.seconds for b in busy), 1e-9)
            rate = capacity / 2
            why = (
                f"half the job's capacity of {capacity:,.0f} events/s, measured over "
                f"{sum(b.events for b in busy):,} events in {len(busy)} batches"
            )
            progress(f"capacity {capacity:,.0f} events/s; measuring at {rate:,.0f}/s")
        measured = int(rate * args.duration)
        warm_batches = len(batches)  # the measured phase's batches start here
        first_measured = batches[-1].batch_id + 1 if batches else 0
        messages = encode_phase(pool, sent, measured, run_id)
        poller.start()
        progress(f"sending {measured:,} events at {rate:,.0f}/s for {args.duration:.0f}s …")
        cpu.start()
        send_phase(producer, messages, rate, sent_at)
        expected = sent + measured
        deadline = time.monotonic() + args.max_wait
        while totals.events < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        cpu.stop()
        time.sleep(max(3.0, 3 * args.poll))  # the last bulk write, one refresh, a poll
        poller.stopping.set()
        poller.join()
        missed = poller.missed()
        progresses = [p for p in query.recentProgress if p["batchId"] >= first_measured]
    finally:
        if query is not None:
            query.stop()
        producer.close()
        spark.stop()

    latencies = [
        seen - sent_at[event_id] for seen, event_id in poller.seen.values() if event_id in sent_at
    ]
    steady = batches[warm_batches:]
    try:
        from detections.sinks.elasticsearch import drop_findings_index

        drop_findings_index(es, index)
    except Exception as exc:
        progress(f"could not delete the bench index: {exc}")
    delete_topics(settings, [topic, f"{topic}.dlq"])
    shutil.rmtree(checkpoint, ignore_errors=True)

    print_kv("Machine", info)
    print(
        f"\nLatency: {len(plan.rules)} rules, {measured:,} events at {rate:,.0f}/s ({why}), "
        f"{args.match_share:.0%} of them SigmaHQ regression events ({n_markers} distinct), "
        f"from {len({e['sensor_id'] for e in pool}):,} sensors, "
        f"trigger {args.trigger:g}s, ES refresh 1s, poll {args.poll:g}s; "
        f"{totals.events - (expected - measured):,} measured events processed in "
        f"{len(steady)} batches (mean {statistics.mean([b.seconds for b in steady] or [0]):.2f}s, "
        f"max {max([b.seconds for b in steady] or [0]):.2f}s per batch)\n"
    )
    if not latencies:
        print("no findings seen for the measured events (see the job's log above)")
        return
    row = [
        f"{len(latencies):,}",
        *(f"{percentile(latencies, q):.2f}" for q in (0.5, 0.95, 0.99)),
        f"{max(latencies):.2f}",
        f"{statistics.mean(latencies):.2f}",
    ]
    print_table(["findings", "p50 s", "p95 s", "p99 s", "max s", "mean s"], [row])
    if poller.errors:
        print(f"({poller.errors} failed polls)")
    if missed:
        print(f"WARNING: {missed} findings were never seen by the live polls (no latency)")
    busy = sum(b.seconds for b in steady)
    if busy and steady:
        job_rate = sum(b.events for b in steady) / busy
        verdict = (
            "kept up"
            if job_rate >= rate
            else "did NOT keep up: latency includes a growing backlog; try a lower --rate"
        )
        print(f"\nthe job processed {job_rate:,.0f} events per second of batch time: {verdict}")
        print(
            f"batch time: {sum(b.prepare_seconds for b in steady):.1f}s preparing on the "
            f"driver, {sum(b.run_seconds for b in steady):.1f}s in Spark jobs; "
            f"summed over tasks: rule engine "
            f"{sum(b.match_seconds for b in steady):.1f}s, writing findings "
            f"{sum(b.write_seconds for b in steady):.1f}s, of {busy:.1f}s of batches"
        )
    if progresses:
        print_trigger_breakdown(progresses)
    if cpu.cores:
        print(f"cores used while the measured events were sent and processed: {cpu.summary()}")
    save_result(
        "latency",
        {
            "args": vars(args),
            "machine": info,
            "rate": rate,
            "rules": len(plan.rules),
            "findings": len(latencies),
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies),
            "batches": [b.__dict__ for b in steady],
            "cores": cpu.cores,
            "machine_busy": cpu.machine_busy,
        },
    )


if __name__ == "__main__":
    Path(CACHE_DIR).mkdir(parents=True, exist_ok=True)
    main()
