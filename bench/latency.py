"""End-to-end latency: an event sent to Kafka -> its finding searchable in Elasticsearch.

The real detection job runs in this process (``detections.stream.job.start``, processing-time
trigger, the production code path: Kafka source, parse, routing, rules, findings bulk-
created from the executors). First a capacity phase measures what the whole job sustains:
a backlog of ``--capacity-events`` sent at once, processed in as few micro-batches as the
job takes, capacity = events / seconds of batch time. Then events are sent at a steady
rate, half that capacity unless ``--rate``; the sender keeps each event's send time by
event id, and a poller searches the findings index every ``--poll`` seconds for new
findings' ``event.id`` (doc values only, so polling barely loads Elasticsearch). Latency =
time the poller first saw the finding - send time, so it includes the producer's linger,
the wait for the next trigger, the micro-batch, the bulk write and the refresh.

The job runs as users run it (``sigstream detect``): the detect query feeds the
correlation stage (base-rule matches to a matches topic, ``detections.correlation``) and
sensor health runs beside it (``--no-correlations`` / ``--no-sensor-health`` turn them off,
as on the CLI). With correlations on, bursts that complete the project's "Burst Of Failed
Logons On One Host" correlation (5 failed logons, Security 4625, on one host within 10
min) are mixed into the steady stream with current event times, each on a host of its
own; the correlation finding's latency is its first sight in Elasticsearch minus the send
of the burst's fifth event (the one that completes it).

The job's first micro-batch pays Spark's analysis and code generation for the whole rule
set; a warm-up phase absorbs it before the clock starts. Everything is sent to a fresh
topic and a fresh findings index (deleted at the end), never the production ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
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
from common.settings import Settings, get_settings

LOOKBACK_S = 5  # how far before the newest finding's ingested time each poll looks
WARMUP_RATE = 1_000.0  # events/s before anything is measured
#: Seconds of warm-up. The Spark driver is a new JVM in every run: until the JIT has
#: compiled its hot paths (the generated projection, the JSON parser, the Arrow writer) the
#: job runs at about half its capacity (2,900-4,500 events/s after a 2 s warm-up,
#: 6,400-10,000 after 60-120 s). A freshly started Elasticsearch stays slower for longer
#: than this; bench/README.md has the figures.
WARMUP_S = 120.0

#: The correlation the bursts complete: the project's own "Burst Of Failed Logons On One
#: Host" (detections/correlation/rules/failed_logons_burst.yml), event_count >= 5 of its
#: base rule ``failed_logon`` (Security EventID 4625) grouped by host within 10 minutes.
BURST_CORRELATION = "5b1f2c40-7a3e-4d2b-9c11-0c0f7a1e9a10"
BURST_SIZE = 5


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
        # correlation findings: host name -> (seen, event id) of the first one on that host
        self.correlations: dict[str, tuple[float, str]] = {}
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
                "event.category",
                "host.name",
                {"field": "event.ingested", "format": "strict_date_optional_time"},
            ],
            ignore_unavailable=True,
        )
        now = time.time()
        for hit in response["hits"]["hits"]:
            if hit["_id"] in self.seen:
                continue
            fields = hit.get("fields", {})
            event_id = (fields.get("event.id") or [""])[0]
            self.seen[hit["_id"]] = (now, event_id)
            if (fields.get("event.category") or [""])[0] == "correlation":
                host = (fields.get("host.name") or [""])[0]
                self.correlations.setdefault(host, (now, event_id))
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


def print_trigger_breakdown(progresses: list[dict[str, Any]], name: str = "") -> None:
    """Where each trigger's time went, per Spark's own progress reports (durationMs):
    ``addBatch`` is our foreachBatch; the rest is the engine's bookkeeping around it."""
    keys = sorted({k for p in progresses for k in p.get("durationMs", {})})
    means = {
        k: statistics.mean(p.get("durationMs", {}).get(k, 0) for p in progresses) for k in keys
    }
    print(
        f"\n{name + ': ' if name else ''}per trigger, mean of {len(progresses)} "
        "(Spark durationMs): "
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


class Fleet:
    """What each sensor has sent so far: its sequence numbers continue from phase to phase
    (a real sensor numbers its events 1, 2, 3 ...; the sampled recordings would leave holes
    that sensor health rightly reports as gaps, thousands of findings no fleet sends)."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}

    def next_seq(self, sensor: str) -> int:
        self.seq[sensor] = self.seq.get(sensor, 0) + 1
        return self.seq[sensor]


def encode_phase(
    pool: list[dict[str, Any]],
    start: int,
    count: int,
    run_id: str,
    rate: float = 0.0,
    fleet: Fleet | None = None,
) -> list[tuple[str, str, bytes]]:
    """(key, event id, JSON) of events ``start`` .. ``start + count`` with fresh event ids,
    encoded before the phase's clock starts: encoding is the sensors' work, and on a
    2-core machine doing it while sending would take CPU from the job being measured.

    With a ``fleet``, events are stamped as a live fleet sends them: each sensor's next
    sequence number, and the time the event is due to be sent (now + its place / ``rate``)
    as its event time (the recordings are years old: every sensor would read as skewed)."""
    messages = []
    now = time.time()
    for i in range(start, start + count):
        base = pool[i % len(pool)]
        event = dict(base)
        event["event_id"] = f"{base['event_id']}-{run_id}-{i}"  # fresh finding ids
        if fleet is not None:
            event["seq"] = fleet.next_seq(str(event["sensor_id"]))
            event["event_time"] = event_time_now(now + ((i - start) / rate if rate else 0.0))
            event.pop("received_time", None)
        messages.append((str(event["sensor_id"]), event["event_id"], json.dumps(event).encode()))
    return messages


def burst_host(run_id: str, burst: int) -> str:
    return f"burst-{run_id}-{burst:05d}.bench.local"


def event_time_now(now: float) -> str:
    """``now`` as a wire event time, whole milliseconds (as sensors stamp events)."""
    ms = int(now * 1000)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def burst_event(
    template: dict[str, Any], run_id: str, burst: int, k: int, now: float
) -> dict[str, Any]:
    """Event ``k`` (0-based) of burst ``burst``: a failed logon (Security 4625) on the
    burst's own host and sensor (sequence numbers 1..5), stamped ``now``."""
    host = burst_host(run_id, burst)
    event = dict(template)
    event["extra"] = dict(template.get("extra") or {})
    event.pop("received_time", None)
    event.update(
        host=host,
        sensor_id=host,
        event_id=f"{host}-{k}",
        seq=k + 1,
        event_time=event_time_now(now),
        EventID=4625,
    )
    return event


def burst_schedule(
    duration: float, every: float, spread: float, size: int = BURST_SIZE
) -> list[tuple[float, int, int]]:
    """(seconds after the phase starts, burst, event index) of every burst event, in send
    order: a burst starts every ``every`` s, its events ``spread`` s apart; only bursts
    whose last event is due within ``duration``."""
    out = []
    burst = 0
    while every > 0 and burst * every + (size - 1) * spread < duration:
        out += [(burst * every + k * spread, burst, k) for k in range(size)]
        burst += 1
    return sorted(out)


@dataclass
class Burst:
    host: str
    first_time: str = ""  # event time of its first event: the correlation window's start
    completed_at: float = 0.0  # when its fifth event (the one completing it) was sent

    def finding_id(self) -> str:
        """The correlation finding id the job must give it (deterministic)."""
        from detections.correlation.feed import epoch_ms
        from detections.correlation.model import correlation_finding_id

        return correlation_finding_id(BURST_CORRELATION, self.host, epoch_ms(self.first_time))


class BurstSender:
    """Sends the burst events due at a point of a send phase (``send_phase``)."""

    def __init__(
        self, template: dict[str, Any], run_id: str, schedule: list[tuple[float, int, int]]
    ) -> None:
        self.template, self.run_id = template, run_id
        self.schedule, self.next = schedule, 0
        self.bursts: dict[str, Burst] = {}

    def send_due(self, producer: Any, elapsed: float) -> None:
        while self.next < len(self.schedule) and self.schedule[self.next][0] <= elapsed:
            _, burst, k = self.schedule[self.next]
            self.next += 1
            now = time.time()
            event = burst_event(self.template, self.run_id, burst, k, now)
            record = self.bursts.setdefault(event["host"], Burst(event["host"]))
            if k == 0:
                record.first_time = event["event_time"]
            if k == BURST_SIZE - 1:
                record.completed_at = now
            producer.send_raw(event["sensor_id"], json.dumps(event).encode())


def failed_logon_template(settings: Settings) -> dict[str, Any]:
    """A recorded Security 4625 event (OTRF) to stamp the bursts from."""
    with base_events_path(settings).open("rb") as handle:
        for line in handle:
            if b'"EventID":4625' in line:
                event: dict[str, Any] = json.loads(line)
                if event.get("event_type") == "windows_event":
                    return event
    raise SystemExit("no Security 4625 event in the OTRF recordings to build bursts from")


def send_phase(
    producer: Any,
    messages: list[tuple[str, str, bytes]],
    rate: float,
    sent_at: dict[str, float] | None = None,
    bursts: BurstSender | None = None,
) -> int:
    """Send ``messages`` (``encode_phase``) at ``rate``/s (0: at once), keeping each one's
    send time in ``sent_at`` (by event id) when given, and the burst events as they fall
    due; returns how many messages were sent."""
    from ingest.replay import RateLimiter

    limiter = RateLimiter(rate)
    started = time.monotonic()
    for key, event_id, payload in messages:
        limiter.wait()
        if bursts is not None:
            bursts.send_due(producer, time.monotonic() - started)
        if sent_at is not None:
            sent_at[event_id] = time.time()
        producer.send_raw(key, payload)
    if bursts is not None:
        # the phase ends at its last message: the rest of the bursts follow it on their clock
        while bursts.next < len(bursts.schedule):
            time.sleep(0.01)
            bursts.send_due(producer, time.monotonic() - started)
    producer.flush()
    return len(messages)


def drained(query: Any, since: float) -> bool:
    """A streaming query has read everything its source had at a trigger that started
    after ``since`` (epoch s; an idle query's last report may predate the data)."""
    last = query.lastProgress
    if not last:
        return False
    started = datetime.fromisoformat(last["timestamp"].replace("Z", "+00:00")).timestamp()
    return started >= since and all(
        json.loads(s.get("endOffset") or "{}") == json.loads(s.get("latestOffset") or "{}")
        for s in last.get("sources", [])
    )


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
    parser.add_argument(
        "--correlations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the correlation stage beside the detect query, as `sigstream detect` does "
        "(default on; the project's correlation rules, fed by the detection pass)",
    )
    parser.add_argument(
        "--sensor-health",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run sensor health beside the detect query, as `sigstream detect` does (default on)",
    )
    parser.add_argument(
        "--burst-every",
        type=float,
        default=0.5,
        help="with correlations: start a burst of 5 failed logons on a new host every S "
        "seconds of the measured phase (default 0.5; 0: none)",
    )
    parser.add_argument(
        "--burst-spread",
        type=float,
        default=0.25,
        help="seconds between the 5 events of a burst (default 0.25: a burst spans "
        "about two micro-batches)",
    )
    parser.add_argument(
        "--recorded-times",
        action="store_true",
        help="send the recordings' own event times and sequence numbers (years old, with "
        "holes after sampling) instead of a live fleet's: sensor health then reports "
        "every sensor as skewed and gapped",
    )
    args = parser.parse_args(argv)

    from detections.compiler.plan import load_plan
    from detections.content.defaults import default_rule_paths
    from detections.sinks.elasticsearch import connect
    from detections.stream.job import BatchStats, JobConfig, JobTotals, start
    from detections.stream.spark_session import build_session
    from infra.kafka import ensure_topics
    from ingest.producer import EventProducer

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
        internal_partitions=settings.topic_partitions,
        health_trigger_seconds=settings.health_trigger_s,  # as the CLI
        state_partitions=settings.state_partitions,
    )
    # Every derived stream of this run on topics of its own (the matches topic, ...).
    derived = {
        f.name: f"{topic}.{f.name.removesuffix('_topic')}"
        for f in dataclasses.fields(JobConfig)
        if f.name.endswith("_topic") and f.name not in ("events_topic", "dlq_topic")
    }
    if not args.sensor_health and "summaries_topic" in derived:
        derived.pop("summaries_topic")  # as the CLI: no summaries without sensor health
        cfg = dataclasses.replace(cfg, summaries_topic=None)  # type: ignore[call-arg]
    cfg = dataclasses.replace(cfg, **derived)  # type: ignore[arg-type]
    stages = Stages(settings, args, index)
    cfg = stages.prepare(cfg, rule_paths if args.rules == "all" else None)
    capacity_events = 0 if args.rate else args.capacity_events
    # Enough distinct events for the largest send phase at up to 50k events/s.
    warmup_events = int(WARMUP_RATE * args.warmup)
    pool_size = warmup_events + capacity_events + int((args.rate or 50_000) * args.duration)
    pool, n_markers = event_pool(
        settings, pool_size, args.seed, args.match_share, args.fleet_copies
    )
    bursts = None
    if stages.correlations is not None and args.burst_every > 0:
        schedule = burst_schedule(args.duration, args.burst_every, args.burst_spread)
        bursts = BurstSender(failed_logon_template(settings), run_id, schedule)
    fleet = None if args.recorded_times else Fleet()
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
    progresses: dict[str, list[dict[str, Any]]] = {}  # per query, the measured batches' reports
    sent_at: dict[str, float] = {}  # event id -> send time, for the measured events
    cpu = CpuMeter()  # who used the cores while the measured events were sent and processed
    capacity_note = ""
    try:
        started = time.monotonic()
        query = start(spark, plan, cfg, totals, on_batch=batches.append)
        stages.start(spark, cfg)
        progress(
            f"job started in {time.monotonic() - started:.1f}s ({stages.describe()}); warming up …"
        )
        progress(f"warm-up: {args.warmup:g}s at {WARMUP_RATE:,.0f} events/s …")
        send_phase(
            producer,
            encode_phase(pool, 0, warmup_events, run_id, WARMUP_RATE, fleet),
            WARMUP_RATE,
        )
        deadline = time.monotonic() + args.max_wait
        while totals.events < warmup_events and time.monotonic() < deadline:
            time.sleep(0.5)
        stages.wait_drained(deadline)
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
            began = time.monotonic()
            sent += send_phase(
                producer, encode_phase(pool, sent, capacity_events, run_id, 0, fleet), 0
            )
            while totals.events < sent and time.monotonic() < deadline + args.max_wait:
                time.sleep(0.2)
            detect_done = time.monotonic() - began
            read_at = stages.wait_drained(deadline + args.max_wait)
            all_done = time.monotonic() - began
            # Sensor health triggers on its own slower schedule (SIGSTREAM_HEALTH_TRIGGER_S, 10 s by
            # default: silence is judged in minutes), so its read time includes waiting
            # for its next trigger, not work: the job's capacity is what the detect query
            # and the stages on the job's trigger sustain. Health's time is printed too.
            paced = {n: t - began for n, t in read_at.items() if n != "sigstream-sensor-health"}
            capacity_done = max([detect_done, *paced.values()])
            health_read = read_at.get("sigstream-sensor-health")
            backlog = batches[before:]
            detect_rate = sum(b.events for b in backlog) / max(
                sum(b.seconds for b in backlog), 1e-9
            )
            capacity = capacity_events / max(capacity_done, 1e-9)
            rate = capacity / 2
            health_note = (
                f", sensor health (own trigger) after {health_read - began:.1f}s"
                if health_read is not None
                else ""
            )
            capacity_note = (
                f"capacity phase: {capacity_events:,} events at once; the detect query took "
                f"{detect_done:.1f}s ({detect_rate:,.0f} events per second of its batch "
                f"time), the detect query and the stages on its trigger had read them after "
                f"{capacity_done:.1f}s{health_note}, every stage after {all_done:.1f}s"
            )
            why = (
                f"half the job's capacity of {capacity:,.0f} events/s: a backlog of "
                f"{capacity_events:,} events through the detect query and the stages on its "
                f"trigger ({stages.describe()}) in {capacity_done:.1f}s"
            )
            progress(f"capacity {capacity:,.0f} events/s; measuring at {rate:,.0f}/s")
        measured = int(rate * args.duration)
        warm_batches = len(batches)  # the measured phase's batches start here
        stages.mark()
        measured_from = time.time()
        messages = encode_phase(pool, sent, measured, run_id, rate, fleet)
        poller.start()
        progress(
            f"sending {measured:,} events at {rate:,.0f}/s for {args.duration:.0f}s"
            + (f", a failed-logon burst every {args.burst_every:g}s …" if bursts else " …")
        )
        cpu.start()
        send_phase(producer, messages, rate, sent_at, bursts)
        expected = sent + measured + (len(bursts.schedule) if bursts else 0)
        deadline = time.monotonic() + args.max_wait
        while totals.events < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        stages.wait_drained(deadline)
        cpu.stop()
        # the last bulk write, one refresh, a poll; and the last bursts' correlation findings
        settle = time.monotonic() + max(3.0, 3 * args.poll)
        wanted = {b.host for b in (bursts.bursts.values() if bursts else []) if b.completed_at}
        while time.monotonic() < settle or (
            time.monotonic() < settle + 30 and not wanted <= set(poller.correlations)
        ):
            time.sleep(0.2)
        poller.stopping.set()
        poller.join()
        missed = poller.missed()
        progresses = stages.progresses(query, measured_from)
    finally:
        stages.stop()
        if query is not None:
            query.stop()
        producer.close()
        spark.stop()

    latencies = [
        seen - sent_at[event_id] for seen, event_id in poller.seen.values() if event_id in sent_at
    ]
    corr_latencies, corr_ids_ok, corr_missing = [], 0, 0
    for burst in bursts.bursts.values() if bursts else []:
        if not burst.completed_at:
            continue
        found = poller.correlations.get(burst.host)
        if found is None:
            corr_missing += 1
            continue
        corr_latencies.append(found[0] - burst.completed_at)
        corr_ids_ok += found[1] == burst.finding_id()
    steady = batches[warm_batches:]
    try:
        from detections.sinks.elasticsearch import drop_findings_index

        drop_findings_index(es, index)
        stages.cleanup(es)
    except Exception as exc:
        progress(f"could not delete the bench index: {exc}")
    delete_topics(settings, [topic, f"{topic}.dlq", *derived.values()])
    for path in (checkpoint, *stages.checkpoints(cfg)):
        shutil.rmtree(path, ignore_errors=True)

    print_kv("Machine", info)
    print(
        f"\nLatency: {len(plan.rules)} rules, the job ({stages.describe()}), "
        f"{measured:,} events at {rate:,.0f}/s ({why}), "
        f"{args.match_share:.0%} of them SigmaHQ regression events ({n_markers} distinct), "
        f"from {len({e['sensor_id'] for e in pool}):,} sensors, "
        f"trigger {args.trigger:g}s, ES refresh 1s, poll {args.poll:g}s; "
        f"{totals.events - (expected - measured):,} measured events processed in "
        f"{len(steady)} batches (mean {statistics.mean([b.seconds for b in steady] or [0]):.2f}s, "
        f"max {max([b.seconds for b in steady] or [0]):.2f}s per batch)\n"
    )
    if capacity_note:
        print(capacity_note + "\n")
    if not latencies:
        print("no findings seen for the measured events (see the job's log above)")
        return
    row = [
        f"{len(latencies):,}",
        *(f"{percentile(latencies, q):.2f}" for q in (0.5, 0.95, 0.99)),
        f"{max(latencies):.2f}",
        f"{statistics.mean(latencies):.2f}",
    ]
    print("Detection findings: event sent -> its finding searchable\n")
    print_table(["findings", "p50 s", "p95 s", "p99 s", "max s", "mean s"], [row])
    if poller.errors:
        print(f"({poller.errors} failed polls)")
    if missed:
        print(f"WARNING: {missed} findings were never seen by the live polls (no latency)")
    if bursts is not None:
        completed = sum(1 for b in bursts.bursts.values() if b.completed_at)
        print(
            f'\nCorrelation findings: the 5th failed logon of a burst sent -> the "Burst Of '
            f'Failed Logons On One Host" finding searchable ({completed} bursts, one every '
            f"{args.burst_every:g}s, events {args.burst_spread:g}s apart, each on its own "
            "host, current event times)\n"
        )
        if corr_latencies:
            print_table(
                ["bursts", "findings seen", "expected ids", "p50 s", "p95 s", "p99 s", "max s",
                 "mean s"],
                [
                    [
                        completed,
                        len(corr_latencies),
                        corr_ids_ok,
                        *(f"{percentile(corr_latencies, q):.2f}" for q in (0.5, 0.95, 0.99)),
                        f"{max(corr_latencies):.2f}",
                        f"{statistics.mean(corr_latencies):.2f}",
                    ]
                ],
            )  # fmt: skip
        if corr_missing:
            print(f"WARNING: {corr_missing} bursts never produced a correlation finding")
    busy = sum(b.seconds for b in steady)
    if busy and steady:
        job_rate = sum(b.events for b in steady) / busy
        verdict = (
            "kept up"
            if job_rate >= rate
            else "did NOT keep up: latency includes a growing backlog; try a lower --rate"
        )
        print(
            f"\nthe detect query processed {job_rate:,.0f} events per second of batch time: "
            f"{verdict}"
        )
        print(
            f"batch time: {sum(b.prepare_seconds for b in steady):.1f}s preparing on the "
            f"driver, {sum(b.run_seconds for b in steady):.1f}s in Spark jobs; "
            f"summed over tasks: rule engine "
            f"{sum(b.match_seconds for b in steady):.1f}s, writing findings "
            f"{sum(b.write_seconds for b in steady):.1f}s, of {busy:.1f}s of batches"
        )
    stages.report()
    for name, reports in progresses.items():
        if reports:
            print_trigger_breakdown(reports, name)
    if cpu.cores:
        print(f"cores used while the measured events were sent and processed: {cpu.summary()}")
    save_result(
        "latency",
        {
            "args": vars(args),
            "machine": info,
            "rate": rate,
            "rules": len(plan.rules),
            "stages": stages.describe(),
            "findings": len(latencies),
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies),
            "correlation": {
                "bursts": len(corr_latencies) + corr_missing,
                "seen": len(corr_latencies),
                "ids_as_expected": corr_ids_ok,
                **(
                    {
                        "p50": percentile(corr_latencies, 0.5),
                        "p95": percentile(corr_latencies, 0.95),
                        "p99": percentile(corr_latencies, 0.99),
                        "max": max(corr_latencies),
                    }
                    if corr_latencies
                    else {}
                ),
            },
            "batches": [b.__dict__ for b in steady],
            "cores": cpu.cores,
            "machine_busy": cpu.machine_busy,
        },
    )


class Stages:
    """The stateful stages `sigstream detect` runs beside the detect query (correlations,
    sensor health), wired as the CLI wires them, on this run's own topics and indices."""

    def __init__(self, settings: Settings, args: argparse.Namespace, index: str) -> None:
        self.settings, self.args, self.index = settings, args, index
        self.sensors_index = f"{index}-sensors"
        self.correlations: Any = None  # CorrelationContent, when on
        self.corr_batches: list[dict[str, Any]] = []
        self.health_batches: list[Any] = []
        self.queries: dict[str, Any] = {}
        self.marks = (0, 0)

    def describe(self) -> str:
        if not (self.args.correlations or self.args.sensor_health):
            return "detection only: --no-correlations --no-sensor-health"
        on = ["detection"]
        if self.args.correlations:
            on.append("correlations")
        if self.args.sensor_health:
            on.append("sensor health")
        return " + ".join(on)

    def prepare(self, cfg: Any, rule_paths: list[Path] | None) -> Any:
        """The detect query's config that feeds the correlation stage (as the CLI's)."""
        if not self.args.correlations:
            return cfg
        from detections.compiler.plan import load_placeholders
        from detections.content.defaults import OWN_CORRELATIONS
        from detections.correlation.query import feeding, load_content

        paths = [*(rule_paths or []), OWN_CORRELATIONS]
        self.correlations = load_content(paths, load_placeholders(self.settings.placeholders_file))
        progress(
            f"{len(self.correlations.specs)} correlations over "
            f"{len(self.correlations.plan.rules)} base rules"
        )
        return feeding(cfg, self.correlations)

    def start(self, spark: Any, cfg: Any) -> None:
        if self.correlations is not None:
            from detections.correlation.stage import CorrelationStage, correlation_config

            ccfg = correlation_config(self.settings)
            query = CorrelationStage(
                self.correlations, ccfg, on_batch=self.corr_batches.append
            ).start(spark, cfg)
            if query is not None:
                self.queries["sigstream-correlate"] = query
        if self.args.sensor_health:
            from detections.health.query import start as start_health
            from detections.health.stage import health_config

            health = health_config(self.settings)
            self.queries["sigstream-sensor-health"] = start_health(
                spark, cfg, health, self.sensors_index, on_batch=self.health_batches.append
            )

    def wait_drained(self, deadline: float) -> dict[str, float]:
        """Until every stage has read what its source held when the detect query had
        processed everything (so every match it publishes is in the matches topic).
        Returns, per stage, the monotonic time it was first seen drained."""
        since = time.time()
        done: dict[str, float] = {}
        while time.monotonic() < deadline:
            for name, query in self.queries.items():
                if query.exception() is not None:
                    raise RuntimeError(f"{query.name} failed: {query.exception()}")
                if name not in done and drained(query, since):
                    done[name] = time.monotonic()
            if len(done) == len(self.queries):
                return done
            time.sleep(0.2)
        progress("WARNING: a stage did not catch up before the deadline")
        return done

    def mark(self) -> None:
        self.marks = (len(self.corr_batches), len(self.health_batches))

    def progresses(self, detect: Any, since: float) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for name, query in {"sigstream-detect": detect, **self.queries}.items():
            out[name] = [
                p
                for p in query.recentProgress
                if datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
                >= since
            ]
        return out

    def report(self) -> None:
        corr = self.corr_batches[self.marks[0] :]
        if corr:
            seconds = [b["seconds"] for b in corr]
            print(
                f"correlation stage, measured phase: {len(corr)} batches (foreachBatch mean "
                f"{statistics.mean(seconds):.2f}s, of which its Spark job (read, shuffle, "
                f"state) {statistics.mean(b.get('spark_seconds', 0.0) for b in corr):.2f}s, "
                f"max {max(seconds):.2f}s), "
                f"{sum(b.get('firings', 0) for b in corr)} firings, "
                f"{sum(b.get('late', 0) for b in corr)} late matches"
            )
        health = self.health_batches[self.marks[1] :]
        if health:
            seconds = [b.seconds for b in health]
            print(
                f"sensor health, measured phase: {len(health)} batches (foreachBatch mean "
                f"{statistics.mean(seconds):.2f}s, max {max(seconds):.2f}s)"
            )

    def stop(self) -> None:
        for query in self.queries.values():
            if query.isActive:
                query.stop()

    def checkpoints(self, cfg: Any) -> list[Path]:
        from detections.correlation.query import CorrelationConfig
        from detections.health.query import checkpoint_for

        return [CorrelationConfig().checkpoint(cfg), checkpoint_for(cfg.checkpoint_dir)]

    def cleanup(self, es: Any) -> None:
        late = f"{self.index}-correlation-late"
        for name in (late, self.sensors_index):
            es.options(ignore_status=404).indices.delete(index=name)
        es.options(ignore_status=404).indices.delete_index_template(name=f"{late}-template")


if __name__ == "__main__":
    Path(CACHE_DIR).mkdir(parents=True, exist_ok=True)
    main()
