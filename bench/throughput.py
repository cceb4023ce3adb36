"""Throughput of the job as a user runs it: one Kafka backlog, ``sigstream detect --once``.

Issue 18 point 4. One backlog of OTRF events is put in a fresh Kafka topic once; then, on
that same backlog and each from fresh checkpoints, fresh derived topics and a fresh
findings index, the real CLI runs as a subprocess (``sigstream detect --once``, all
default rules) in each mode:

* ``detect``: detection only (``--no-correlations --no-sensor-health --no-field-drift``);
* ``drift``: detection + field drift (``--no-correlations --no-sensor-health``): what
  observing fields in the detection pass and the drift stage cost (docs/field-drift.md);
* ``default``: the default job (correlations and sensor health on);
* ``correlations`` / ``health``: one stateful stage on (optional, ``--modes``), to see
  what each one costs.

Per run it reports the command's wall seconds (what a user waits: Python start, rule
compilation, Spark start, the queries, shutdown) and events/s over it, the streaming part
alone (first trigger start to last trigger end, from Spark's own progress reports in the
run's event log), the ratio default / detect, and where the time went: the detect
query's per-batch prepare / run / rule engine / findings write seconds (the job's log,
``detections.stream.job.BatchStats``), each streaming query's batches, input rows and Spark
``durationMs``, and the cores each part of the stack used (sampled from ``/proc``: the
job's driver, Spark JVM and Python workers, this stack's Kafka and Elasticsearch, and
everything else on the machine, which on a shared box is the noise).

With rsigma installed (``bench.rsigma.binary``) it then runs ``rsigma engine daemon
--input stdin --batch-size 512`` over the same events (flattened as ``bench.dataset``
does, stdin from a file, detections to a file, same rule files, Sigstream's routing as a
pipeline) and prints the end-to-end gap: Sigstream's default job from a Kafka backlog to
findings searchable in Elasticsearch vs rsigma from a file to a file.

Benchmarks print numbers and never assert timings. Everything the benchmark creates
(topics, indices, checkpoints) is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE_DIR,
    _machine_busy,
    machine_info,
    print_kv,
    print_table,
    proc_table,
    progress,
    save_result,
)
from common.settings import PROJECT_ROOT, Settings, get_settings

#: CLI flags per mode; every mode runs ``sigstream detect --once`` with the default rules.
MODES: dict[str, list[str]] = {
    "detect": ["--no-correlations", "--no-sensor-health", "--no-field-drift"],
    "drift": ["--no-correlations", "--no-sensor-health"],
    "default": [],
    "correlations": ["--no-sensor-health"],
    "health": ["--no-correlations"],
}
MODE_TITLES = {
    "detect": "detection only (--no-correlations --no-sensor-health --no-field-drift)",
    "drift": "detection + field drift (--no-correlations --no-sensor-health)",
    "default": "default job (correlations + sensor health + field drift)",
    "correlations": "detection + correlations (--no-sensor-health)",
    "health": "detection + sensor health (--no-correlations)",
}
#: Settings naming indices the job writes: each run gets its own.
INDEX_SETTINGS = (
    "findings_index",
    "sensors_index",
    "events_index",
    "shadow_findings_index",
    "drift_index",
)

#: One line of the detect job's log per micro-batch (``detections.stream.job.make_batch_handler``).
#: It says "M rule matches -> F findings"; older logs said "M findings" for
#: the matches (no ``findings`` number then).
BATCH_LINE = re.compile(
    r"sigstream\.detect: batch (?P<batch>\d+): (?P<events>\d+) events, (?P<rejected>\d+) "
    r"rejected to DLQ, (?P<matches>\d+) (?:rule matches -> (?P<findings>\d+) )?findings "
    r"\((?P<created>\d+) new, (?P<known>\d+) "
    r"known\) in (?P<seconds>[\d.]+)s \(prepare (?P<prepare>[\d.]+)s, run (?P<run>[\d.]+)s; "
    r"tasks: (?P<match>[\d.]+)s matching, (?P<write>[\d.]+)s writing findings"
    r"(?:, (?P<observe>[\d.]+)s observing fields)?\)"
)


# --- pure helpers (tests/unit/test_bench_helpers.py) -------------------------------------------


def parse_batch_lines(text: str) -> list[dict[str, float]]:
    """The detect query's per-batch numbers from the job's log (one dict per batch)."""
    out = []
    for m in BATCH_LINE.finditer(text):
        out.append({k: float(v) for k, v in m.groupdict().items() if v is not None})
    return out


def progress_events(lines: Any) -> list[dict[str, Any]]:
    """Spark's streaming progress reports (``QueryProgressEvent``) from an event log."""
    out = []
    for line in lines:
        if "QueryProgressEvent" not in line:
            continue
        event = json.loads(line)
        if event.get("Event", "").endswith("QueryProgressEvent"):
            out.append(event["progress"])
    return out


def event_log_marks(lines: Any) -> dict[str, float]:
    """Epoch seconds of the application's start (``spark``) and of each streaming query's
    start (by query name) in an event log."""
    marks: dict[str, float] = {}
    for line in lines:
        if "ApplicationStart" in line or "QueryStartedEvent" in line:
            event = json.loads(line)
            kind = event.get("Event", "")
            if kind == "SparkListenerApplicationStart":
                marks["spark"] = event["Timestamp"] / 1000
            elif kind.endswith("QueryStartedEvent") and event.get("name"):
                marks.setdefault(event["name"], _epoch(event["timestamp"]))
    return marks


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class QuerySummary:
    """One streaming query's batches as Spark reported them."""

    name: str
    batches: int = 0
    input_rows: int = 0
    first_start: float = 0.0  # epoch s of the first trigger's start
    last_end: float = 0.0  # epoch s of the last trigger's end
    busy_s: float = 0.0  # sum of triggerExecution
    duration_ms: dict[str, float] = field(default_factory=dict)  # summed per phase
    state_rows: int = 0  # the largest total of state rows any batch reported

    @property
    def span_s(self) -> float:
        return max(0.0, self.last_end - self.first_start)


def summarize_queries(progresses: list[dict[str, Any]]) -> dict[str, QuerySummary]:
    """Per query name: batches, rows read, the first trigger start to the last trigger
    end, and Spark's ``durationMs`` summed over the batches."""
    out: dict[str, QuerySummary] = {}
    for p in progresses:
        name = p.get("name") or p.get("id", "?")
        q = out.setdefault(name, QuerySummary(name))
        start = _epoch(p["timestamp"])
        took = p.get("durationMs", {})
        q.batches += 1
        q.input_rows += sum(int(s.get("numInputRows") or 0) for s in p.get("sources", []))
        q.first_start = start if not q.first_start else min(q.first_start, start)
        q.last_end = max(q.last_end, start + took.get("triggerExecution", 0) / 1000)
        q.busy_s += took.get("triggerExecution", 0) / 1000
        for key, value in took.items():
            q.duration_ms[key] = q.duration_ms.get(key, 0.0) + float(value)
        rows = sum(int(s.get("numRowsTotal") or 0) for s in p.get("stateOperators", []))
        q.state_rows = max(q.state_rows, rows)
    return out


def findings_split(by_category: dict[str, int]) -> tuple[int, int, int]:
    """(rule findings, correlation findings, sensor-health findings) of a run: the job
    files correlation findings under ``event.category`` ``correlation`` and health
    findings under ``host``; every other category is a rule's (the event type)."""
    correlation = by_category.get("correlation", 0)
    health = by_category.get("host", 0)
    total = by_category.get("total", sum(v for k, v in by_category.items() if k != "total"))
    return total - correlation - health, correlation, health


def throughput_ratio(detect_wall_s: float, default_wall_s: float) -> float:
    """The default job's throughput as a share of detection-only's, same backlog:
    (events / default s) / (events / detect s)."""
    return detect_wall_s / default_wall_s if default_wall_s > 0 else 0.0


def derived_overrides(settings: Settings, prefix: str) -> dict[str, str]:
    """SIGSTREAM_* variables giving one run its own topics (every derived ``*_topic``
    setting but the events and DLQ topics, which the caller sets) and indices."""
    env = {}
    for name in type(settings).model_fields:
        if name.endswith("_topic") and name not in ("events_topic", "dlq_topic"):
            env[f"SIGSTREAM_{name.upper()}"] = f"{prefix}.{name.removesuffix('_topic')}"
    for name in INDEX_SETTINGS:
        if name in type(settings).model_fields:
            env[f"SIGSTREAM_{name.upper()}"] = f"{prefix}-{name.removesuffix('_index')}"
    env["SIGSTREAM_FINDINGS_INDEX"] = prefix
    return env


def job_env(settings: Settings, name: str, topic: str, folder: Path) -> dict[str, str]:
    """The environment of one `sigstream detect` subprocess: its own derived topics and
    indices (``derived_overrides``), events topic, status file, and a Spark event log in a
    fresh ``folder/eventlog`` (where the runs' progress reports are read from)."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "eventlog").mkdir(parents=True)
    spark_conf = {
        **settings.spark_conf,
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": (folder / "eventlog").as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }
    return {
        **os.environ,
        **derived_overrides(settings, name),
        "SIGSTREAM_EVENTS_TOPIC": topic,
        "SIGSTREAM_DLQ_TOPIC": f"{topic}.dlq",
        "SIGSTREAM_SPARK_CONF": json.dumps(spark_conf),
        # its status file, not the one of a job running from this checkout
        "SIGSTREAM_RUN_DIR": str(folder / "run"),
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "PYTHONUNBUFFERED": "1",
    }


# --- CPU of each part of the stack, sampled -------------------------------------------------


class CpuSampler(threading.Thread):
    """Cores used by the job (a subprocess tree), this stack's services and the rest of
    the machine while a run lasts. Sampled every ``interval`` s, so a process that ends
    keeps the CPU it had at its last sample (the job's JVM exits before the run does)."""

    def __init__(self, root: int, services: dict[int, str], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root, self.services, self.interval = root, services, interval
        self.stopping = threading.Event()
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[float, str]] = {}
        self._began = time.time()
        self._busy0 = _machine_busy()
        self.cores: dict[str, float] = {}
        self.machine_busy = 0.0
        self._baseline = {pid: cpu for pid, (_, cpu, _) in proc_table().items()}

    def _role(self, pid: int, table: dict[int, tuple[int, float, str]]) -> str:
        if pid in self.services:
            return self.services[pid]
        command = table[pid][2]
        seen, cursor = 0, pid
        while cursor in table and seen < 64:  # is it in the job's process tree?
            if cursor == self.root:
                if "pyspark.daemon" in command or "pyspark.worker" in command:
                    return "job: Python workers"
                if "org.apache.spark.deploy.SparkSubmit" in command:
                    return "job: Spark JVM"
                return "job: driver (Python)"
            cursor, seen = table[cursor][0], seen + 1
        return "other processes (not this run)"

    def sample(self) -> None:
        table = proc_table()
        for pid, (_, cpu, _) in table.items():
            self._first.setdefault(pid, self._baseline.get(pid, 0.0))
            role, before = self._role(pid, table), self._last.get(pid, (0.0, ""))[1]
            # A process keeps the most specific role it was seen with (a forked JVM reads
            # as the driver before its exec; a worker outliving its JVM loses its parent).
            if (
                before.startswith("job:")
                and not role.startswith("job: Spark")
                and (role == "job: driver (Python)" or not role.startswith("job:"))
            ):
                role = before
            self._last[pid] = (cpu, role)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self.stopping.set()
        wall = max(time.time() - self._began, 1e-9)
        busy, total = _machine_busy()
        self.machine_busy = (busy - self._busy0[0]) / max(total - self._busy0[1], 1e-9)
        self.cores = {}
        for pid, (cpu, role) in self._last.items():
            used = cpu - self._first.get(pid, 0.0)
            if used > 0:
                self.cores[role] = self.cores.get(role, 0.0) + used / wall

    def summary(self) -> str:
        parts = ", ".join(
            f"{r} {c:.2f}" for r, c in sorted(self.cores.items(), key=lambda x: -x[1])
        )
        return f"{parts}; machine {min(self.machine_busy, 1.0):.0%} busy ({os.cpu_count()} cores)"


# --- the backlog --------------------------------------------------------------------------------


def backlog_lines(settings: Settings, events: int | None) -> list[bytes]:
    """The OTRF recordings as wire JSON lines (``bench.dataset.base_events_path``): all of
    them, or the first ``events`` in recording order. Not a sample: a sample would leave
    holes in every sensor's sequence numbers, which sensor health rightly reports as
    thousands of gaps (measured: 17,936 gap findings from a 20,000-event sample)."""
    from bench.dataset import base_events_path

    lines = base_events_path(settings).read_bytes().splitlines()
    return lines if events is None else lines[:events]


def send_backlog(settings: Settings, topic: str, lines: list[bytes]) -> float:
    """Produce ``lines`` to ``topic`` keyed by sensor (as sensors do); seconds taken."""
    from confluent_kafka import Consumer, TopicPartition

    from ingest.producer import EventProducer

    keys = [str(json.loads(line)["sensor_id"]) for line in lines]
    producer = EventProducer(settings.kafka_bootstrap, topic, f"{topic}.dlq")
    started = time.monotonic()
    producer.wait_ready()
    for key, line in zip(keys, lines, strict=True):
        producer.send_raw(key, line)
    producer.flush()
    seconds = time.monotonic() - started
    producer.close()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-tp"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        total = 0
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            total += high - low
    finally:
        consumer.close()
    if total != len(lines):
        raise SystemExit(f"backlog topic {topic} holds {total:,} records, sent {len(lines):,}")
    return seconds


# --- one run of the CLI -----------------------------------------------------------------------


@dataclass
class ModeRun:
    mode: str
    round: int
    events: int
    wall_s: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    started_at: float = 0.0  # epoch s, just before the subprocess started
    queries: dict[str, QuerySummary] = field(default_factory=dict)
    batches: list[dict[str, float]] = field(default_factory=list)
    findings: dict[str, int] = field(default_factory=dict)  # event.category -> count
    processed_line: str = ""
    cores: dict[str, float] = field(default_factory=dict)
    cpu_summary: str = ""
    marks: dict[str, float] = field(default_factory=dict)  # event_log_marks
    log: str = ""
    error_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def stream_s(self) -> float:
        """First trigger start (any query) to last trigger end (any query)."""
        if not self.queries:
            return 0.0
        first = min(q.first_start for q in self.queries.values())
        last = max(q.last_end for q in self.queries.values())
        return max(0.0, last - first)

    @property
    def startup_s(self) -> float:
        if not self.queries:
            return 0.0
        return min(q.first_start for q in self.queries.values()) - self.started_at

    @property
    def job_cpu_s(self) -> float:
        """CPU seconds of the job's processes (driver, Spark JVM, Python workers): less
        sensitive than wall time to what else runs on a shared machine."""
        return sum(c for role, c in self.cores.items() if role.startswith("job:")) * self.wall_s

    def startup_parts(self) -> tuple[float, float, float]:
        """(command start -> Spark started: Python, rule compilation; Spark started ->
        detect query started: the JVM, correlation content, indices and topics; detect
        query started -> its first trigger)."""
        spark = self.marks.get("spark", self.started_at)
        detect = self.marks.get("sigstream-detect", spark)
        first = self.started_at + self.startup_s
        return spark - self.started_at, detect - spark, first - detect

    @property
    def teardown_s(self) -> float:
        return self.wall_s - self.startup_s - self.stream_s if self.queries else 0.0


def _service_pids(settings: Settings) -> dict[int, str]:
    from infra import services

    out = {}
    for name, status in services.status(settings).items():
        if status.pid:
            out[status.pid] = f"this stack's {name}"
    return out


def _echo(line: str) -> bool:
    """Job log lines worth showing as progress."""
    keys = (" INFO sigstream", " ERROR ", " WARNING sigstream", "Traceback", "Error", "processed ")
    return any(k in line for k in keys) and "WARN MicroBatchExecution" not in line


def run_mode(
    settings: Settings,
    mode: str,
    round_no: int,
    topic: str,
    events: int,
    work: Path,
    prefix: str,
    timeout_s: float,
    extra_args: list[str],
) -> ModeRun:
    """``sigstream detect --once`` in ``mode`` as a subprocess over ``topic``."""
    name = f"{prefix}-{mode}{round_no}"
    folder = work / f"{mode}{round_no}"
    env = job_env(settings, name, topic, folder)
    cmd = [
        sys.executable,
        "-c",
        "from sigstream.cli import app; app()",
        "detect",
        "--once",
        "--checkpoint",
        str(folder / "checkpoint" / "detect"),
        *MODES[mode],
        *extra_args,
    ]
    result = ModeRun(mode, round_no, events)
    log_path = folder / "job.log"
    progress(f"[{mode} #{round_no}] {' '.join(['sigstream', *cmd[3:]])}")
    services = _service_pids(settings)
    result.started_at = time.time()
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops exactly this run
    )
    sampler = CpuSampler(proc.pid, services)
    sampler.start()
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as out:
            for line in proc.stdout:
                out.write(line)
                lines.append(line)
                if _echo(line):
                    progress(f"[{mode} #{round_no}] {line.rstrip()[:220]}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        progress(f"[{mode} #{round_no}] TIMEOUT after {timeout_s:.0f}s: stopping the run")
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    result.wall_s = time.monotonic() - started
    sampler.stop()
    reader.join(timeout=10)
    result.returncode = proc.returncode
    result.cores, result.cpu_summary = sampler.cores, sampler.summary()
    text = "".join(lines)
    result.log = str(log_path)
    result.batches = parse_batch_lines(text)
    result.processed_line = next(
        (ln.strip() for ln in reversed(lines) if ln.startswith("processed ")), ""
    )
    if not result.ok:
        result.error_tail = "".join(lines[-40:])
    progresses = []
    for path in (folder / "eventlog").iterdir():
        event_lines = path.read_text().splitlines()
        progresses += progress_events(event_lines)
        result.marks.update(event_log_marks(event_lines))
    result.queries = summarize_queries(progresses)
    result.findings = findings_by_category(settings, name)
    progress(
        f"[{mode} #{round_no}] exit {proc.returncode}, {result.wall_s:.1f}s wall "
        f"({events / result.wall_s:,.0f} events/s), streaming {result.stream_s:.1f}s; "
        f"findings {result.findings}"
    )
    return result


def findings_by_category(settings: Settings, index: str) -> dict[str, int]:
    """Findings searchable in the run's index after a refresh, by ``event.category``."""
    from detections.sinks.elasticsearch import connect

    es = connect(settings.es_hosts)
    try:
        if not es.indices.exists(index=index):
            return {}
        es.indices.refresh(index=index)
        response = es.search(
            index=index,
            size=0,
            track_total_hits=True,
            aggs={"c": {"terms": {"field": "event.category", "size": 50, "missing": "none"}}},
        )
        buckets = response["aggregations"]["c"]["buckets"]
        out = {str(b["key"]): int(b["doc_count"]) for b in buckets}
        out["total"] = int(response["hits"]["total"]["value"])
        return out
    finally:
        es.close()


# --- rsigma's daemon on the same events ------------------------------------------------------


@dataclass
class DaemonRun:
    events: int
    wall_s: float
    cpu_s: float
    load_s: float  # process start -> "Event source started"
    stream_s: float  # "Event source started" -> "Streaming pipeline complete"
    matches: int
    rules_loaded: str


def _daemon_log(stderr: str) -> dict[str, float]:
    """Epoch seconds of the daemon's milestones, from its JSON log on stderr."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = str((entry.get("fields") or {}).get("message", ""))
        if message and message not in out and entry.get("timestamp"):
            out[message] = _epoch(entry["timestamp"][:26] + "+00:00")
        if message == "Rules loaded":
            fields = entry["fields"]
            out["_rules"] = float(fields.get("detection_rules", 0))
    return out


def run_rsigma_daemon(
    exe: str, lines: list[bytes], work: Path, settings: Settings, batch_size: int, port: int
) -> DaemonRun:
    """``rsigma engine daemon --input stdin --batch-size N`` over the backlog's events,
    flattened for rsigma, with the rule files Sigstream planned and its routing."""
    from bench import rsigma
    from bench.dataset import flat_event
    from bench.engine import _logsources
    from detections.compiler.plan import load_plan
    from detections.content.defaults import default_rule_paths

    work.mkdir(parents=True, exist_ok=True)
    events = work / "events.rsigma.ndjson"
    with events.open("w") as out:
        for line in lines:
            out.write(json.dumps(flat_event(json.loads(line)), separators=(",", ":")) + "\n")
    paths = default_rule_paths(settings)
    plan = load_plan(paths)
    files = sorted({Path(p.rule.path) for p in plan.rules if p.rule.path})
    root = Path(os.path.commonpath([str(p) for p in paths]))
    rules = rsigma.write_rule_folder(files, root, work / "rules")
    categories, services = _logsources(files)
    pipeline = rsigma.routing_pipeline(categories, services, work / "routing.yml")
    output = work / "detections.ndjson"
    output.unlink(missing_ok=True)
    cmd = [
        exe, "engine", "daemon", "--rules", str(rules), "--pipeline", str(pipeline),
        "--input", "stdin", "--batch-size", str(batch_size), "--output", output.as_uri(),
        "--api-addr", f"127.0.0.1:{port}", "--logsource-routing", "--logsource-field-map",
        f"product={rsigma.TAG_PRODUCT},service={rsigma.TAG_SERVICE},"
        f"category={rsigma.TAG_CATEGORY}",
    ]  # fmt: skip
    progress(f"rsigma daemon over {len(lines):,} events ({len(files)} rule files) …")
    err_path = work / "daemon.stderr"
    with events.open("rb") as stdin, err_path.open("wb") as err:
        began = time.time()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    stderr = err_path.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"rsigma daemon failed: {stderr[-2000:]}")
    marks = _daemon_log(stderr)
    source = marks.get("Event source started", began)
    done = marks.get("Streaming pipeline complete", began + wall)
    with output.open("rb") as handle:
        matches = sum(1 for line in handle if line.strip())
    return DaemonRun(
        events=len(lines),
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        load_s=max(0.0, source - began),
        stream_s=max(1e-9, done - source),
        matches=matches,
        rules_loaded=f"{marks.get('_rules', 0):.0f} detection rules",
    )


# --- report -----------------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def report_runs(runs: list[ModeRun]) -> None:
    print("\nThroughput: `sigstream detect --once`, all default rules, same backlog\n")
    rows = []
    for r in runs:
        detect = r.queries.get("sigstream-detect")
        rows.append(
            [
                f"{r.mode} #{r.round}",
                "ok" if r.ok else ("TIMEOUT" if r.timed_out else f"exit {r.returncode}"),
                _f(r.wall_s),
                f"{r.events / r.wall_s:,.0f}" if r.wall_s else "n/a",
                _f(r.startup_s),
                _f(detect.span_s) if detect else "n/a",
                _f(r.stream_s),
                f"{r.events / r.stream_s:,.0f}" if r.stream_s else "n/a",
                _f(r.teardown_s),
                _f(r.job_cpu_s, 0),
                " / ".join(f"{n:,}" for n in findings_split(r.findings)),
            ]
        )
    print_table(
        [
            "mode",
            "exit",
            "wall s",
            "events/s (wall)",
            "startup s",
            "detect query s",
            "streaming s",
            "events/s (streaming)",
            "shutdown s",
            "job CPU-s",
            "findings: rules / correlations / health",
        ],
        rows,
    )
    print(
        "\nwall: the whole command; startup: command start -> first trigger (Python, rule "
        "compilation, Spark); streaming: first trigger start -> last trigger end of any "
        "query; shutdown: the rest (Spark stop, exit); job CPU-s: CPU seconds of the job's "
        "driver, Spark JVM and Python workers (sampled from /proc)."
    )
    print("\nStartup, split (Spark's event log: application start, detect query start)\n")
    print_table(
        ["run", "before Spark s (Python, rules)", "Spark start -> detect query s",
         "detect query -> first trigger s"],
        [[f"{r.mode} #{r.round}", *(_f(x) for x in r.startup_parts())] for r in runs],
    )  # fmt: skip
    by_mode: dict[str, list[ModeRun]] = {}
    for r in runs:
        if r.ok:
            by_mode.setdefault(r.mode, []).append(r)
    if "detect" in by_mode:
        base = by_mode["detect"]
        base_wall = statistics.median(r.wall_s for r in base)
        base_stream = statistics.median(r.stream_s for r in base)
        base_cpu = statistics.median(r.job_cpu_s for r in base)
        for mode, group in by_mode.items():
            if mode == "detect":
                continue
            wall = statistics.median(r.wall_s for r in group)
            stream = statistics.median(r.stream_s for r in group)
            cpu = statistics.median(r.job_cpu_s for r in group)
            print(
                f"\n{mode} / detect throughput (medians of {len(group)} and {len(base)} runs): "
                f"**{throughput_ratio(base_wall, wall):.2f}x** by wall time "
                f"(detect {base_wall:.1f}s, {mode} {wall:.1f}s), "
                f"{throughput_ratio(base_stream, stream):.2f}x by streaming time "
                f"(detect {base_stream:.1f}s, {mode} {stream:.1f}s), "
                f"{throughput_ratio(base_cpu, cpu):.2f}x by the job's CPU seconds "
                f"(detect {base_cpu:.0f}, {mode} {cpu:.0f}); issue 18's target >= 0.90x"
            )
            pairs = [(d, m) for d in base for m in group if d.round == m.round]
            if pairs:
                print(
                    "  per round (same round back to back): "
                    + ", ".join(
                        f"#{d.round} {throughput_ratio(d.wall_s, m.wall_s):.2f}x" for d, m in pairs
                    )
                )
    print("\nWhere the time went, per run and streaming query (Spark durationMs, summed)\n")
    rows = []
    for r in runs:
        for q in sorted(r.queries.values(), key=lambda q: q.first_start):
            top = sorted(q.duration_ms.items(), key=lambda kv: -kv[1])
            phases = ", ".join(
                f"{k} {v / 1000:.1f}" for k, v in top if k != "triggerExecution" and v >= 50
            )
            rows.append(
                [
                    f"{r.mode} #{r.round}",
                    q.name,
                    str(q.batches),
                    f"{q.input_rows:,}",
                    _f(q.first_start - r.started_at),
                    _f(q.span_s),
                    _f(q.busy_s),
                    phases,
                    f"{q.state_rows:,}" if q.state_rows else "",
                ]
            )
    print_table(
        [
            "run",
            "query",
            "batches",
            "rows read",
            "starts at s",
            "span s",
            "busy s",
            "phases s (addBatch = our foreachBatch)",
            "state rows",
        ],
        rows,
    )
    print("\nThe detect query's batches (the job's log: detections.stream.job.BatchStats)\n")
    rows = []
    for r in runs:
        b = r.batches
        if not b:
            continue
        rows.append(
            [
                f"{r.mode} #{r.round}",
                str(len(b)),
                f"{sum(x['events'] for x in b):,.0f}",
                _f(sum(x["seconds"] for x in b)),
                _f(sum(x["prepare"] for x in b)),
                _f(sum(x["run"] for x in b)),
                _f(sum(x["match"] for x in b)),
                _f(sum(x["write"] for x in b)),
                _f(sum(x.get("observe", 0.0) for x in b)),
                f"{sum(x['matches'] for x in b):,.0f}",
            ]
        )
    print_table(
        [
            "run",
            "batches",
            "events",
            "batch s",
            "prepare s",
            "Spark job s",
            "rule engine s (tasks)",
            "findings write s (tasks)",
            "observing fields s (tasks)",
            "findings",
        ],
        rows,
    )
    print(
        "\n(rule engine and write seconds are summed over the tasks of a batch, which "
        "run two at a time on local[2]; the rest of the Spark job is the Kafka read, the "
        "JSON parse and the Arrow transfer)"
    )
    print("\nCores used while each run lasted (sampled from /proc every second)\n")
    for r in runs:
        print(f"  {r.mode} #{r.round}: {r.cpu_summary}")
    for r in runs:
        if not r.ok:
            print(f"\n{r.mode} #{r.round} FAILED (log {r.log}); last lines:\n{r.error_tail}")


def report_capacity(default: ModeRun | None, daemon: DaemonRun | None) -> None:
    if default is None or daemon is None:
        return
    print("\nEnd-to-end capacity beside rsigma's daemon (same events, same 2 cores)\n")
    sig_wall = default.events / default.wall_s
    sig_stream = default.events / max(default.stream_s, 1e-9)
    rs_wall = daemon.events / daemon.wall_s
    rs_stream = daemon.events / daemon.stream_s
    print_table(
        ["", "events", "wall s", "events/s (wall)", "processing s", "events/s (processing)",
         "detections / findings"],
        [
            [
                "Sigstream default job: Kafka backlog -> findings searchable in ES",
                f"{default.events:,}",
                _f(default.wall_s),
                f"{sig_wall:,.0f}",
                _f(default.stream_s),
                f"{sig_stream:,.0f}",
                f"{findings_split(default.findings)[0]:,} rule findings",
            ],
            [
                "rsigma engine daemon --input stdin --batch-size 512: file -> file",
                f"{daemon.events:,}",
                _f(daemon.wall_s),
                f"{rs_wall:,.0f}",
                _f(daemon.stream_s),
                f"{rs_stream:,.0f}",
                f"{daemon.matches:,}",
            ],
        ],
    )  # fmt: skip
    print(
        f"\ngap: rsigma's daemon is {rs_wall / sig_wall:.1f}x Sigstream's default job by wall "
        f"time, {rs_stream / sig_stream:.1f}x by processing time (Sigstream: streaming "
        f"time; rsigma: 'Event source started' -> 'Streaming pipeline complete'; its rule "
        f"load took {daemon.load_s:.1f}s). rsigma used {daemon.cpu_s:.1f} CPU-s "
        f"({daemon.cpu_s / daemon.wall_s:.2f} cores); {daemon.rules_loaded}."
    )
    print("Sigstream's time, by part of the default job:")
    detect = default.queries.get("sigstream-detect")
    batches = default.batches
    parts = [("startup (Python, rules, Spark)", default.startup_s)]
    if detect:
        parts.append(("detect query (Kafka read, parse, rules, findings writes)", detect.span_s))
    for name, q in default.queries.items():
        if name != "sigstream-detect":
            parts.append((f"{name} query", q.span_s))
    parts.append(("shutdown", default.teardown_s))
    for label, seconds in parts:
        print(f"  {label:<60} {seconds:7.1f}s")
    if batches:
        engine = sum(x["match"] for x in batches)
        write = sum(x["write"] for x in batches)
        run = sum(x["run"] for x in batches)
        print(
            f"  inside the detect query's Spark jobs ({run:.1f}s wall): rule engine {engine:.1f} "
            f"task-s, findings writes {write:.1f} task-s; the rest of the tasks' time is the "
            "Kafka read, JSON parse and Arrow transfer"
        )
    print(f"  cores while it ran: {default.cpu_summary}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Throughput of `sigstream detect --once` on one Kafka backlog of OTRF "
        "events: detection only vs the default job (correlations + sensor health), the "
        "ratio, where the time goes, and the default job beside rsigma's daemon.",
    )
    parser.add_argument(
        "--events",
        type=int,
        help="backlog size: the first N OTRF events in recording order (default: all of "
        "../shared/data/otrf, 357,337)",
    )
    parser.add_argument(
        "--modes",
        default="detect,default",
        help=f"comma-separated, run in this order each round (of {', '.join(MODES)}; "
        "default detect,default)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of all modes, back to back (default 1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="stop a run after this many s"
    )
    parser.add_argument(
        "--rsigma-batch-size", type=int, default=512, help="rsigma daemon --batch-size"
    )
    parser.add_argument("--no-rsigma", action="store_true", help="skip rsigma's daemon")
    parser.add_argument(
        "--rsigma-port", type=int, default=49390, help="rsigma daemon's API port (loopback)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the topics, indices and run folders"
    )
    parser.add_argument(
        "job_args",
        nargs="*",
        help="extra `sigstream detect` options after --, e.g. -- --trigger 1",
    )
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")

    from bench.ingest import ensure_services
    from bench.rsigma import binary
    from infra.kafka import ensure_topics

    settings = get_settings()
    info = machine_info(settings)
    ensure_services(settings, ["kafka", "elasticsearch"])
    run_id = uuid.uuid4().hex[:8]
    prefix = f"sigstream-bench-tp-{run_id}"
    topic = prefix
    work = CACHE_DIR / f"throughput-{run_id}"
    lines = backlog_lines(settings, args.events)
    progress(f"backlog: {len(lines):,} OTRF events -> Kafka topic {topic} (once) …")
    ensure_topics(settings, [topic, f"{topic}.dlq"], settings.topic_partitions)
    seconds = send_backlog(settings, topic, lines)
    progress(f"backlog in Kafka in {seconds:.1f}s ({settings.topic_partitions} partitions)")

    runs: list[ModeRun] = []
    daemon = None
    try:
        for round_no in range(1, args.rounds + 1):
            for mode in modes:
                runs.append(
                    run_mode(
                        settings,
                        mode,
                        round_no,
                        topic,
                        len(lines),
                        work,
                        prefix,
                        args.timeout,
                        args.job_args,
                    )
                )
        exe = None if args.no_rsigma else binary()
        if exe:
            daemon = run_rsigma_daemon(
                exe, lines, work / "rsigma", settings, args.rsigma_batch_size, args.rsigma_port
            )
            progress(f"rsigma daemon: {daemon.wall_s:.1f}s wall, {daemon.matches:,} detections")
    finally:
        if not args.keep:
            cleanup(settings, prefix, topic, work)

    print_kv("Machine", info)
    print(
        f"\nbacklog: {len(lines):,} OTRF events in {topic} ({settings.topic_partitions} "
        f"partitions), modes run back to back in the order {', '.join(modes)}, "
        f"{args.rounds} round(s); each run from fresh checkpoints, derived topics and indices"
    )
    report_runs(runs)
    default = next((r for r in runs if r.mode == "default" and r.ok), None)
    report_capacity(default, daemon)
    if daemon is None and not args.no_rsigma:
        print("\nrsigma: not installed (cargo install rsigma, or RSIGMA=/path/to/rsigma)")
    path = save_result(
        "throughput",
        {
            "args": vars(args),
            "machine": info,
            "events": len(lines),
            "runs": [
                {
                    "mode": r.mode,
                    "round": r.round,
                    "ok": r.ok,
                    "returncode": r.returncode,
                    "wall_s": r.wall_s,
                    "startup_s": r.startup_s,
                    "stream_s": r.stream_s,
                    "findings": r.findings,
                    "queries": {k: v.__dict__ for k, v in r.queries.items()},
                    "batches": r.batches,
                    "cores": r.cores,
                }
                for r in runs
            ],
            "rsigma_daemon": daemon.__dict__ if daemon else None,
        },
    )
    print(f"\n(results saved to {path})")


def cleanup(settings: Settings, prefix: str, topic: str, work: Path) -> None:
    """Delete the backlog and every derived topic, index and template of this benchmark."""
    from bench.ingest import delete_topics
    from detections.sinks.elasticsearch import connect

    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
        delete_topics(settings, sorted(set(names) | {topic, f"{topic}.dlq"}))
    except Exception as exc:
        progress(f"could not delete the bench topics: {exc}")
    es = connect(settings.es_hosts)
    try:
        indices = es.indices.get(index=f"{prefix}*", expand_wildcards="all")
        for name in indices:
            es.options(ignore_status=404).indices.delete(index=name)
        templates = es.options(ignore_status=404).indices.get_index_template(name=f"{prefix}*")
        for t in templates.get("index_templates", []):
            es.options(ignore_status=404).indices.delete_index_template(name=t["name"])
    except Exception as exc:
        progress(f"could not delete the bench indices: {exc}")
    finally:
        es.close()
    # Keep each run's job log and event log (small); drop checkpoints and rsigma's copies.
    for path in [*work.glob("*/checkpoint"), *work.glob("*/run"), work / "rsigma"]:
        shutil.rmtree(path, ignore_errors=True)
    if work.is_dir():
        progress(f"job logs and Spark event logs kept in {work}")


if __name__ == "__main__":
    main()
