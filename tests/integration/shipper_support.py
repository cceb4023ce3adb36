"""Real shippers into the gateway's bulk API: the input file, the gateway, the counts.

The input is real Windows telemetry (OTRF recordings, NXLog ``im_msvistalog`` JSON lines)
plus a few malformed lines whose DLQ reasons are known. What must come out is computed
without the gateway: every record's event id from ``layouts.normalize`` (the same stable
id whatever path carries it), and the findings of the default rule set over the events
``sigstream replay`` makes of the same file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from common.settings import get_settings
from ingest.adapters import layouts
from ingest.gateway.app import GatewayOptions
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import Limits
from ingest.gateway.server import GatewayServer, TlsFiles, free_port, kafka_app
from ingest.gateway.tls import generate_self_signed
from ingest.producer import describe_reject
from tests.conftest import SHARED_DATA

#: Recordings used (a few thousand records, with findings of several rules).
RECORDINGS = (
    "lateral_movement/host/covenant_psremoting_command.zip",
    "defense_evasion/host/cmd_mshta_javascript_getobject_sct.zip",
)
TENANT = "acme"

#: Malformed lines slipped into the file, and the DLQ reason each must get.
MALFORMED: tuple[tuple[bytes, str], ...] = (
    (b'{"Hostname": "WS01", "EventID": 4688, "Channel": "Secur', "invalid_json"),
    (b'{"foo": "bar", "answer": 42}', "unknown_layout"),
    (b'["not", "an", "object"]', "not_an_object"),
    (
        b'{"Hostname": "WS01", "EventID": "four", "Channel": "Security", '
        b'"TimeCreated": "2020-11-02T04:12:58.211Z", "RecordNumber": 1}',
        "adapter_invalid",
    ),
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_program(path: str | None, what: str) -> str:
    """The program's path; a missing shipper skips the test, or fails it in CI (where
    .ci/run installs it, so missing means the install broke)."""
    if path and (os.path.isfile(path) or shutil.which(path)):
        return path if os.path.isfile(path) else str(shutil.which(path))
    message = f"{what} is not installed (see .ci/run for how CI installs it)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Corpus:
    path: Path
    lines: list[bytes]
    expected_ids: set[str]
    expected_reasons: Counter[str]
    malformed: int

    @property
    def records(self) -> int:
        return len(self.lines)


def build_corpus(dest: Path, malformed: tuple[tuple[bytes, str], ...] = MALFORMED) -> Corpus:
    """The recordings' lines (``malformed`` ones spread through them) in one NDJSON file."""
    lines: list[bytes] = []
    for name in RECORDINGS:
        path = SHARED_DATA / "otrf" / name
        if not path.is_file():
            pytest.skip(f"shared corpus not found at {path} (clone with ../shared beside the repo)")
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.endswith(".json") and not member.startswith("__MACOSX/"):
                    lines += [ln for ln in archive.read(member).splitlines() if ln.strip()]
    step = max(1, len(lines) // (len(malformed) + 1))
    for i, (bad, _) in enumerate(malformed):
        lines.insert((i + 1) * step + i, bad)
    dest.write_bytes(b"".join(ln + b"\n" for ln in lines))
    ids: set[str] = set()
    bad_lines = {bad for bad, _ in malformed}
    for raw in lines:
        if raw in bad_lines:
            continue
        event = layouts.normalize(json.loads(raw), raw, tenant_id=TENANT, sensor_id=None)
        ids.add(event.event_id)
    return Corpus(dest, lines, ids, Counter(reason for _, reason in malformed), len(malformed))


@dataclass
class Gateway:
    server: GatewayServer
    ca: Path
    token: str
    events_topic: str
    dlq_topic: str
    run: Path
    options: GatewayOptions | None = None
    processes: list[Any] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1].rstrip("/"))


#: A tight event rate (parametrize ``gateway`` indirectly with it): batches of 500 at
#: 1,000 events/s, so a shipper sending faster is answered 429 + Retry-After and must
#: retry to deliver everything.
TIGHT = GatewayOptions(limits=Limits(max_events=500), events_per_second=1_000.0, burst_events=500.0)


@pytest.fixture
def gateway(
    services: Any, tmp_path: Path, unique: str, request: pytest.FixtureRequest
) -> Iterator[Gateway]:
    """A TLS gateway on real Kafka and a relay credential (a collector forwarding many
    hosts: each record's host becomes its sensor). Options: ``request.param``."""
    options = getattr(request, "param", None)
    s = get_settings()
    tls = TlsFiles(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    generate_self_signed(tls.cert, tls.key, ["127.0.0.1"])
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll(TENANT, "otrf-collector", relay=True)
    events, dlq = f"test.{unique}.ship.events", f"test.{unique}.ship.dlq"
    server = GatewayServer(
        lambda: kafka_app(store.path, s.kafka_bootstrap, events, dlq, options),
        "127.0.0.1",
        free_port(),
        tls,
    )
    run = tmp_path / "run"
    run.mkdir()
    with server:
        gw = Gateway(server, tls.cert, token, events, dlq, run, options)
        try:
            yield gw
        finally:
            for proc in gw.processes:  # only the shipper processes this test started
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except Exception:
                        proc.kill()


def _consumer() -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": get_settings().kafka_bootstrap,
            "group.id": "sigstream-shipper-test",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def end_offsets(topic: str) -> int:
    """Records in a topic (sum of end offsets; 0 while it does not exist)."""
    consumer = _consumer()
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def wait_for(gw: Gateway, events: int, dlq: int, timeout_s: float | None = None) -> tuple[int, int]:
    """Wait until the topics hold ``events`` and ``dlq`` records (or the time is up), then
    a little longer to catch any extra record; returns the counts seen."""
    timeout_s = timeout_s or float(os.environ.get("SIGSTREAM_SHIP_WAIT_S", "120"))
    deadline = time.monotonic() + timeout_s
    seen = (0, 0)
    while time.monotonic() < deadline:
        for proc in gw.processes:
            if proc.poll() is not None:
                raise AssertionError(f"shipper exited with {proc.returncode}")
        seen = (end_offsets(gw.events_topic), end_offsets(gw.dlq_topic))
        if seen[0] >= events and seen[1] >= dlq:
            time.sleep(3)  # anything duplicated would land now
            return end_offsets(gw.events_topic), end_offsets(gw.dlq_topic)
        time.sleep(1)
    return seen


def read_all(topic: str) -> list[tuple[bytes, dict[str, str]]]:
    """(value, decoded headers) of every record of a topic."""
    consumer = _consumer()
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return out
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.assign(parts)
        pending = {p.partition for p in parts}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                pending.discard(msg.partition())
                continue
            out.append((msg.value() or b"", describe_reject(msg.headers() or [])))
        return out
    finally:
        consumer.close()


def record_key(event: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a finding's event across paths whose event ids differ."""
    extra = event.get("extra") or {}
    number = event.get("RecordNumber") or extra.get("RecordNumber")
    return (event.get("host"), str(event.get("event_time")), event.get("EventID"), number)


def findings(events: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """(rule id, host, event time, event code, record number) of every match of the
    default rule set: the engine the streaming job runs, over a list of events."""
    from detections.compiler.plan import load_plan
    from detections.content.defaults import default_rule_paths
    from detections.engine.apply import match_events, rule_ids

    plan = _plan(load_plan, default_rule_paths)
    ids = rule_ids(plan)
    return Counter((ids[r], *record_key(events[e])) for e, r in match_events(plan, events))


_PLANS: dict[str, Any] = {}


def _plan(load_plan: Any, default_rule_paths: Any) -> Any:
    if "default" not in _PLANS:
        _PLANS["default"] = load_plan(default_rule_paths(get_settings()))
    return _PLANS["default"]


def replay_findings(corpus: Corpus) -> Counter[tuple[Any, ...]]:
    """The findings of the events ``sigstream replay`` makes of the same file, each record
    once: the recordings hold byte-identical duplicate lines (the same Windows record
    twice), which the gateway writes once (same record origin, same event id) and replay
    twice."""
    from ingest.sources import read_items

    events: dict[str, dict[str, Any]] = {}
    for item in read_items(corpus.path):
        if item.event is not None:
            obj = json.loads(item.raw)
            origin = layouts.record_origin(layouts.detect_layout(obj), obj, item.raw)
            events.setdefault(origin, item.event.model_dump(mode="json"))
    return findings(list(events.values()))


@dataclass
class Delivered:
    events: int
    dlq: int
    ids: Counter[str]
    reasons: Counter[str]
    findings: Counter[tuple[Any, ...]]


def delivered(gw: Gateway) -> Delivered:
    """What the gateway wrote, read back from Kafka."""
    values = [json.loads(v) for v, _ in read_all(gw.events_topic)]
    rejects = read_all(gw.dlq_topic)
    return Delivered(
        events=len(values),
        dlq=len(rejects),
        ids=Counter(v["event_id"] for v in values),
        reasons=Counter(h.get("reason", "?") for _, h in rejects),
        findings=findings(values),
    )


def check(corpus: Corpus, got: Delivered, label: str, *, same_bytes: bool = True) -> str:
    """Assert the exact counts and findings; returns a one-line summary for the log.

    ``same_bytes`` False: the shipper re-serialized some documents (rsyslog's resubmitted
    records), so those without a record id got an id from other bytes; counts, uniqueness
    and findings are still exact."""
    assert got.events == len(corpus.expected_ids), (label, got.events, len(corpus.expected_ids))
    if same_bytes:
        assert set(got.ids) == corpus.expected_ids, label
    assert max(got.ids.values()) == 1, f"{label}: an event was written twice"
    assert got.reasons == corpus.expected_reasons, (label, got.reasons)
    expected = replay_findings(corpus)
    assert got.findings == expected, (label, got.findings - expected, expected - got.findings)
    summary = (
        f"{label}: {corpus.records} lines in ({corpus.records - corpus.malformed} records, "
        f"{len(corpus.expected_ids)} distinct), {got.events} events in Kafka, "
        f"{got.dlq} in the DLQ {dict(got.reasons)}, {sum(got.findings.values())} findings "
        f"= replay's {sum(expected.values())}"
    )
    print(summary)
    return summary
