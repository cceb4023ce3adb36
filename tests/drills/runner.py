"""The fault drills: replay a known corpus at a steady rate into a live detection job, inject
one fault mid-replay, wait until the job has caught up, and compare the findings in
Elasticsearch with an undisturbed baseline run (docs/fault-drills.md).

Every run gets fresh topics, a fresh findings index and a fresh checkpoint. The job is a
separate process (``tests/drills/job.py``) so it can be killed with SIGKILL; the services
are the private stack of ``tests/drills/stack.py``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra import kafka as infra_kafka
from infra.proc import progress
from ingest.producer import EventProducer
from ingest.replay import RateLimiter
from ingest.sources import iter_items
from schemas.events import Envelope
from tests.drills.job import DetectJob, JobSpec
from tests.drills.measure import (
    DrillResult,
    Offsets,
    compare,
    first_commit_after,
    first_commit_reaching,
    reached,
    read_commits,
)
from tests.drills.stack import DrillStack

# OTRF recordings of real attacks (the shared corpus): 30,128 events that raise a few
# hundred findings with the default SigmaHQ rules (see docs/fault-drills.md).
DRILL_FILES = (
    "credential_access/host/psh_lsass_memory_dump_comsvcs.zip",
    "credential_access/host/cmd_sam_copy_esentutl.zip",
    "credential_access/host/empire_mimikatz_logonpasswords.zip",
    "defense_evasion/host/psh_mshta_html_application_execution.zip",
    "execution/host/empire_launcher_vbs.zip",
    "lateral_movement/host/covenant_sharpwmi_create_dcerpc_wmi.zip",
    "lateral_movement/host/schtask_modification.zip",
    "persistence/host/empire_schtasks_creation_standard_user.zip",
    "privilege_escalation/host/empire_uac_shellapi_fodhelper.zip",
)
DRILLS = ("driver-kill", "kafka-restart", "es-outage")
ES_OUTAGE_S = 60.0


@dataclass(frozen=True)
class DrillOptions:
    rate: float = 400.0  # events/s of the paced replay (about 50 s of it)
    fault_after_s: float = 10.0  # seconds into the paced replay
    warmup_events: int = 1000  # sent at once before it, to warm the job up
    es_outage_s: float = ES_OUTAGE_S
    caught_up_timeout_s: float = 420.0
    job_start_timeout_s: float = 240.0
    rules: Sequence[Path] = ()  # empty: drill_rules()
    source: Path | None = None  # run the job from this source tree (JobSpec.source)
    job_flags: tuple[str, ...] | None = None  # None: JobSpec's (the detect query only)

    def rule_paths(self) -> list[Path]:
        """Named explicitly, so a job run from another source tree loads the same rules."""
        return list(self.rules) if self.rules else drill_rules()


def drill_rules() -> list[Path]:
    """All SigmaHQ Windows rules, as the job runs by default."""
    from common.settings import get_settings

    return [get_settings().shared_data / "sigma" / "rules" / "windows"]


def load_events(otrf: Path, files: Sequence[str] = DRILL_FILES) -> list[Envelope]:
    """The corpus as schema events, parsed once and replayed by every run."""
    events = [item.event for item in iter_items([otrf / f for f in files]) if item.event]
    if not events:
        raise RuntimeError(f"no events in {files}")
    return events


@dataclass
class Replay:
    """Sends the events at a steady rate in a background thread (a sensor fleet)."""

    bootstrap: str
    topic: str
    dlq: str
    events: Sequence[Envelope]
    rate: float | None
    started_at: float = 0.0
    finished_at: float | None = None
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Defaults of EventProducer: acks=all + idempotence, and librdkafka retries a
        # message for message.timeout.ms (5 min) while the broker is away.
        with EventProducer(self.bootstrap, self.topic, self.dlq) as producer:
            limiter = RateLimiter(self.rate)
            for event in self.events:
                limiter.wait()
                producer.send_event(event)
                self.sent += 1
            producer.flush(timeout=300.0)
            self.failed = producer.counts.failed
            self.errors = list(producer.counts.errors)
        self.finished_at = time.time()

    def wait(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the replay did not finish in {timeout:.0f}s")


def end_offsets(bootstrap: str, topic: str) -> Offsets:
    """High watermark of each partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"drills-{uuid.uuid4()}"})
    try:
        meta = consumer.list_topics(topic, timeout=30)
        partitions = sorted(meta.topics[topic].partitions)
        out: Offsets = {}
        for p in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            out[p] = int(high)
        return out
    finally:
        consumer.close()


@dataclass(frozen=True)
class Findings:
    ids: Counter[str]  # finding id -> documents with that id
    documents: int  # what _count says
    groups: dict[str, int]  # group id -> count of matches

    @property
    def total(self) -> int:
        return sum(self.ids.values())


def read_findings(es_url: str, index: str) -> Findings:
    """Every finding id (scan, so nothing is capped at 10,000) and every group's count."""
    from elasticsearch import Elasticsearch, helpers

    from detections.sinks.elasticsearch import groups_index

    es = Elasticsearch([es_url], request_timeout=60)
    try:
        es.indices.refresh(index=f"{index}*")
        ids = Counter(h["_id"] for h in helpers.scan(es, index=index, _source=False))
        documents = int(es.count(index=index)["count"])
        groups = {
            h["_id"]: int(h["_source"].get("count", 0))
            for h in helpers.scan(es, index=groups_index(index), _source=["count"])
        }
        return Findings(ids, documents, groups)
    finally:
        es.close()


@dataclass
class Run:
    """One run's names: topics, index and folders are fresh for every run."""

    name: str
    workdir: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def topic(self) -> str:
        return f"drill.{self.suffix}.events"

    @property
    def dlq(self) -> str:
        return f"drill.{self.suffix}.dlq"

    @property
    def index(self) -> str:
        return f"drill-{self.suffix}-findings"

    def job_spec(self, options: DrillOptions, once: bool = False) -> JobSpec:
        rules = tuple(options.rule_paths())
        spec = JobSpec(self.workdir, self.topic, self.dlq, self.index, rules, once, options.source)
        if options.job_flags is not None:
            spec = dataclasses.replace(spec, flags=options.job_flags)
        return spec


def _prepare(stack: DrillStack, name: str, root: Path) -> Run:
    run = Run(name, root / name)
    run.workdir.mkdir(parents=True, exist_ok=True)
    infra_kafka.ensure_topics(stack.settings, [run.topic, run.dlq], 2)
    return run


def run_baseline(
    stack: DrillStack, events: Sequence[Envelope], root: Path, options: DrillOptions
) -> Findings:
    """The undisturbed run: the whole corpus, then the job with ``--once``."""
    run = _prepare(stack, "baseline", root)
    started = time.monotonic()
    replay = Replay(stack.bootstrap, run.topic, run.dlq, events, rate=None)
    replay.start()
    replay.wait(600)
    if replay.failed:
        raise RuntimeError(f"baseline replay lost messages: {replay.errors}")
    job = DetectJob(run.job_spec(options, once=True), stack.env(), supervise=False)
    job.start()
    code = job.wait_exit(options.caught_up_timeout_s + options.job_start_timeout_s)
    if code != 0:
        job.stop()
        raise RuntimeError(f"baseline job exited with {code}:\n{job.log_tail()}")
    findings = read_findings(stack.es_url, run.index)
    progress(
        f"baseline: {replay.sent:,} events -> {len(findings.ids):,} findings, "
        f"{len(findings.groups):,} groups in {time.monotonic() - started:.0f}s"
    )
    return findings


def _wait(predicate: Callable[[], bool], timeout: float, what: str, job: DetectJob) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout:.0f}s\n{job.log_tail()}")
        time.sleep(0.5)


# When the fault ended (epoch seconds) and what happened, for the report.
FaultOutcome = tuple[float, list[str]]


@dataclass
class Fault:
    """What a drill does to the system; returns (fault end, notes)."""

    name: str
    inject: Callable[[DrillStack, DetectJob, DrillOptions], FaultOutcome]


def _kill_driver(stack: DrillStack, job: DetectJob, options: DrillOptions) -> FaultOutcome:
    pid = job.pid
    killed = job.kill9()
    job.start()  # same checkpoint, same topics: exactly a restart by an operator
    return time.time(), [f"kill -9 of the job's process group {pid} ({killed} processes)"]


def _restart_kafka(stack: DrillStack, job: DetectJob, options: DrillOptions) -> FaultOutcome:
    down = stack.stop("kafka")
    up = stack.start("kafka")
    return time.time(), [f"Kafka stopped in {down:.1f}s, back (ready) in {up:.1f}s"]


def _es_outage(stack: DrillStack, job: DetectJob, options: DrillOptions) -> FaultOutcome:
    down = stack.stop("elasticsearch")
    time.sleep(max(0.0, options.es_outage_s - down))
    up = stack.start("elasticsearch")
    return time.time(), [
        f"Elasticsearch stopped in {down:.1f}s, down {options.es_outage_s:.0f}s, "
        f"ready {up:.1f}s after start"
    ]


FAULTS = {
    "driver-kill": Fault("driver-kill", _kill_driver),
    "kafka-restart": Fault("kafka-restart", _restart_kafka),
    "es-outage": Fault("es-outage", _es_outage),
}


def run_drill(
    stack: DrillStack,
    drill: str,
    events: Sequence[Envelope],
    baseline: Findings,
    root: Path,
    options: DrillOptions,
) -> DrillResult:
    """Replay at ``options.rate`` into a running job, inject ``drill`` after
    ``options.fault_after_s``, wait until caught up, compare with the baseline."""
    fault = FAULTS[drill]
    run = _prepare(stack, drill, root)
    job = DetectJob(run.job_spec(options), stack.env())
    head, rest = events[: options.warmup_events], events[options.warmup_events :]
    warmup = Replay(stack.bootstrap, run.topic, run.dlq, head, rate=None)
    replay = Replay(stack.bootstrap, run.topic, run.dlq, rest, rate=options.rate)
    try:
        job.start()
        # The first events at once, so the job is warm (its first micro-batch done, which
        # costs a JVM, the rules and the Python workers) before the paced replay starts.
        warmup.start()
        warmup.wait(120)
        checkpoint = run.workdir / "checkpoint"
        _wait(
            lambda: bool(read_commits(checkpoint, run.topic)),
            options.job_start_timeout_s,
            "a first micro-batch",
            job,
        )
        replay.start()
        progress(f"{drill}: replaying {len(rest):,} events at {options.rate:,.0f}/s")
        time.sleep(options.fault_after_s)
        fault_at = time.time()
        progress(f"{drill}: fault at {fault_at - replay.started_at:.1f}s into the replay")
        fault_end, notes = fault.inject(stack, job, options)
        progress(f"{drill}: fault over after {fault_end - fault_at:.1f}s; {'; '.join(notes)}")
        replay.wait(600)
        for r in (warmup, replay):
            if r.failed:
                notes.append(f"replay: {r.failed} messages not delivered: {r.errors[:3]}")
        end = end_offsets(stack.bootstrap, run.topic)
        _wait(
            lambda: any(reached(c.offsets, end) for c in read_commits(checkpoint, run.topic)),
            options.caught_up_timeout_s,
            "caught up",
            job,
        )
    finally:
        job.stop()
    commits = read_commits(checkpoint, run.topic)
    first = first_commit_after(commits, fault_end)
    done = first_commit_reaching(commits, end)
    findings = read_findings(stack.es_url, run.index)
    if job.unexpected_exits:
        codes = ", ".join(str(e.code) for e in job.unexpected_exits)
        notes.append(
            f"the job exited {len(job.unexpected_exits)}x (codes {codes}) and was restarted "
            "by the drill's supervisor (as systemd Restart=always would)"
        )
    result = DrillResult(
        drill=drill,
        events_sent=warmup.sent + replay.sent,
        comparison=compare(
            baseline.ids, findings.ids, findings.documents, baseline.groups, findings.groups
        ),
        fault_at=fault_at - replay.started_at,
        outage_s=fault_end - fault_at,
        recovery_s=(first.completed_at - fault_end) if first else None,
        caught_up_s=(done.completed_at - fault_end) if done else None,
        supervisor_restarts=len(job.unexpected_exits),
        kafka_records=sum(end.values()),
        notes=notes,
    )
    if warmup.failed or replay.failed:
        result.notes.append("events were lost before Kafka: the comparison is not meaningful")
    return result
