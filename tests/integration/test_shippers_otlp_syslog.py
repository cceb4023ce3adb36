"""Real shippers into the gateway's OTLP/HTTP and syslog endpoints, real Kafka behind it.

Each shipper tails a file of real events (an OTRF recording: NXLog JSON lines) with a few
malformed lines added, and the test proves, exactly: every good record is one event in
the events topic, every malformed one is in the DLQ with its reason, and the events give
the same findings as ``sigstream replay`` of the same file (SigmaHQ's Windows rules
evaluated with the project's engine in batch, compared on rule id, host, event time and
record number; the events themselves compared on content).

Shippers: the OpenTelemetry Python SDK's OTLP/HTTP log exporter (protobuf, gzip), a
hand-built OTLP JSON request (httpx), the OpenTelemetry Collector (filelog ->
otlphttp) when a binary is at ``SIGSTREAM_OTELCOL`` (building it takes ~6 minutes, so CI
does not), Debian's syslog-ng (``syslog()`` destination, TLS, RFC 5424 octet-counted) and
rsyslog (imfile -> omfwd over gtls), each run as our own process with its own config.
Under ``CI=true`` a missing syslog shipper fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import get_settings
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import Limits
from ingest.gateway.pipeline import GatewayOptions
from ingest.gateway.server import GatewayServer, TlsFiles, free_port, kafka_app
from ingest.gateway.syslog_server import SyslogOptions
from ingest.gateway.tls import generate_self_signed
from ingest.producer import describe_reject
from ingest.sources import iter_items
from schemas.events import parse_event
from tests.conftest import shared_path
from tests.integration.test_gateway_kafka import read_topic

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
RSYSLOG_ROOT = Path(os.environ.get("SIGSTREAM_RSYSLOG_ROOT", "/opt/rsyslog-private"))
#: The malformed lines added to each recording, with the reason the gateway must give.
MALFORMED = [
    # Plain text is a Linux log entry on syslog (a linux_log event); broken JSON is refused.
    (b"{this line is not JSON", "not_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'{"foo": "bar", "baz": 1}', "unknown_layout"),
    (b'{"Channel": "Security", "EventID": "abc", "Hostname": "h1"}', "adapter_invalid"),
]
#: requests prefers these to a session's own CA file (requests #3829).
SESSION_CA_VARS = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}
#: Fields that differ by construction between the two paths (ids, clocks, tenant).
VOLATILE = {"event_id", "seq", "received_time", "sent_time", "tenant_id"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need(tool: str, found: bool, hint: str) -> None:
    if found:
        return
    message = f"{tool} not installed ({hint})"
    if in_ci():
        pytest.fail(message + ": .ci/run installs it")
    pytest.skip(message)


# -- the recording and the reference (replay) ---------------------------------------------


@dataclass
class Recording:
    path: Path
    records: int  # good lines in the file
    expected_reasons: Counter[str]
    #: The file's events as ``sigstream replay`` reads them, one per distinct Windows
    #: record: some OTRF recordings hold the same record (same record number and content)
    #: twice, and the gateway stores a record once (de-duplication on its stable id).
    reference: list[dict[str, Any]]

    @property
    def good(self) -> int:
        return len(self.reference)


def recording(folder: Path, *otrf: str) -> Recording:
    """The OTRF zip's JSON lines as a plain file, a malformed line every ~200 records."""
    with zipfile.ZipFile(shared_path("otrf", *otrf)) as archive:
        [name] = [n for n in archive.namelist() if not n.startswith("__MACOSX")]
        lines = [ln for ln in archive.read(name).splitlines() if ln.strip()]
    out = []
    bad = iter(MALFORMED)
    for i, line in enumerate(lines):
        if i % 200 == 100:
            extra = next(bad, None)
            if extra:
                out.append(extra[0])
        out.append(line)
    out.extend(line for line, _ in bad)
    path = folder / "recording.json"
    path.write_bytes(b"\n".join(out) + b"\n")
    items = [i for i in iter_items([path]) if i.event]
    assert len(items) == len(lines)  # replay takes every good line, rejects the rest
    distinct = {record_key(i.raw): i.event.model_dump(mode="json") for i in items if i.event}
    reasons = Counter(reason for _, reason in MALFORMED)
    return Recording(path, len(lines), reasons, list(distinct.values()))


def record_key(raw: bytes) -> tuple[str, ...]:
    """A Windows record's identity in an NXLog line: host, channel, record number."""
    obj = json.loads(raw)
    if obj.get("RecordNumber") is None:
        return ("raw", raw.decode())
    return (str(obj.get("Hostname")), str(obj.get("Channel")), str(obj["RecordNumber"]))


def canonical(event: dict[str, Any]) -> str:
    doc = parse_event(event).model_dump(mode="json", exclude_none=True)
    return json.dumps({k: v for k, v in doc.items() if k not in VOLATILE}, sort_keys=True)


def findings(plan: Any, events: list[dict[str, Any]]) -> Counter[tuple[str, ...]]:
    from detections.engine.apply import match_events, rule_ids

    ids = rule_ids(plan)
    out: Counter[tuple[str, ...]] = Counter()
    for position, rule in match_events(plan, events):
        e = events[position]
        extra = e.get("extra") or {}
        record = str(extra.get("RecordNumber") or e.get("RecordNumber") or "")
        out[(ids[rule], str(e.get("host")), str(e.get("event_time")), record)] += 1
    return out


@pytest.fixture(scope="module")
def plan() -> Any:
    from detections.compiler.plan import load_plan

    return load_plan([shared_path("sigma", "rules", "windows")])


# -- the gateway ---------------------------------------------------------------------------


@dataclass
class Gateway:
    server: GatewayServer
    token: str
    ca: Path
    syslog_port: int
    events_topic: str
    dlq_topic: str

    @property
    def logs_url(self) -> str:
        return f"{self.server.url}/v1/logs"


@pytest.fixture
def gateway(services: Any, tmp_path: Path, unique: str) -> Iterator[Gateway]:
    yield from run_gateway(tmp_path, unique, GatewayOptions())


@pytest.fixture
def slow_gateway(services: Any, tmp_path: Path, unique: str) -> Iterator[Gateway]:
    """200 events/s per credential, bursts of 300: a shipper is held back with 429s."""
    limits = Limits(max_events=300)
    yield from run_gateway(
        tmp_path, unique, GatewayOptions(limits=limits, events_per_second=200, burst_events=300)
    )


def run_gateway(tmp_path: Path, unique: str, options: GatewayOptions) -> Iterator[Gateway]:
    s = get_settings()
    tls = TlsFiles(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    generate_self_signed(tls.cert, tls.key, ["127.0.0.1", "localhost"])
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "wec01", relay=True)  # forwards for many hosts
    events, dlq = f"test.{unique}.ship.events", f"test.{unique}.ship.dlq"
    syslog_port = free_port()
    syslog = SyslogOptions(syslog_port, "127.0.0.1", tls.cert, tls.key)
    server = GatewayServer(
        lambda: kafka_app(store.path, s.kafka_bootstrap, events, dlq, options, syslog=syslog),
        "127.0.0.1",
        free_port(),
        tls,
    )
    with server:
        yield Gateway(server, token, tls.cert, syslog_port, events, dlq)


def wait_for_counts(
    gw: Gateway, events: int, rejects: int, timeout_s: float = 180, shipper: Shipper | None = None
) -> None:
    """Until the topics hold at least the expected counts (then the test checks exactly)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if shipper is not None and shipper.proc.poll() is not None:
            raise AssertionError(f"the shipper exited with {shipper.proc.returncode}")
        got = (len(read_topic(gw.events_topic)), len(read_topic(gw.dlq_topic)))
        if got[0] >= events and got[1] >= rejects:
            time.sleep(2)  # anything extra would arrive now
            return
        assert time.monotonic() < deadline, f"got {got}, expected ({events}, {rejects})"
        time.sleep(1)


def check_end_to_end(gw: Gateway, rec: Recording, plan: Any) -> dict[str, int]:
    """Exact counts, DLQ reasons, same events and same findings as replay of the file."""
    stored = [json.loads(r.value) for r in read_topic(gw.events_topic)]
    dlq = read_topic(gw.dlq_topic)
    reasons = Counter(describe_reject(r.headers)["reason"] for r in dlq)
    assert len(stored) == rec.good, (len(stored), rec.good, reasons)
    assert reasons == rec.expected_reasons
    assert {e["tenant_id"] for e in stored} == {"acme"}
    assert len({e["event_id"] for e in stored}) == rec.good  # no duplicates

    assert Counter(canonical(e) for e in stored) == Counter(canonical(e) for e in rec.reference)
    ours, theirs = findings(plan, stored), findings(plan, rec.reference)
    assert ours == theirs
    assert sum(ours.values()) > 0  # the comparison is not vacuous
    return {
        "lines": rec.records + len(MALFORMED),
        "records": rec.records,
        "distinct": rec.good,
        "events": len(stored),
        "dlq": len(dlq),
        "findings": sum(ours.values()),
    }


@dataclass
class Shipper:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start(cmd: list[str], folder: Path, name: str, **kw: Any) -> Shipper:
    log = folder / f"{name}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, **kw)
    return Shipper(proc, log)


def report(name: str, counts: dict[str, int], started: float) -> None:
    print(f"\n[{name}] {counts} in {time.monotonic() - started:.1f} s")


# -- OTLP ----------------------------------------------------------------------------------


def test_otel_sdk_exporter_protobuf(gateway: Gateway, tmp_path: Path, plan: Any) -> None:
    rec = recording(tmp_path, "defense_evasion", "host", "cmd_mshta_javascript_getobject_sct.zip")
    started = time.monotonic()
    tail = start(
        [
            sys.executable,
            str(HERE / "shippers" / "otlp_sdk_tail.py"),
            str(rec.path),
            gateway.logs_url,
            gateway.token,
            str(gateway.ca),
        ],
        tmp_path,
        "otlp-sdk",
        # requests lets these override the exporter's certificate_file (requests #3829)
        env={k: v for k, v in os.environ.items() if k not in SESSION_CA_VARS},
    )
    try:
        assert tail.proc.wait(300) == 0, tail.output()
        assert "Failed to export" not in tail.output(), tail.output()
    finally:
        tail.stop()
    wait_for_counts(gateway, rec.good, len(MALFORMED), timeout_s=30)
    report("otel-sdk", check_end_to_end(gateway, rec, plan), started)


def test_otlp_json_encoding(gateway: Gateway, tmp_path: Path, plan: Any) -> None:
    rec = recording(tmp_path, "credential_access", "host", "empire_shell_rubeus_asktgt_ptt.zip")
    started = time.monotonic()
    lines = [ln for ln in rec.path.read_text().splitlines() if ln]
    rejected = 0
    with httpx.Client(verify=str(gateway.ca), timeout=60) as http:
        for i in range(0, len(lines), 400):
            body = {
                "resourceLogs": [
                    {
                        "resource": {
                            "attributes": [{"key": "host.name", "value": {"stringValue": "wec01"}}]
                        },
                        "scopeLogs": [
                            {
                                "scope": {"name": "sigstream-test"},
                                "logRecords": [
                                    {
                                        "timeUnixNano": str(time.time_ns()),
                                        "severityNumber": 9,
                                        "traceId": "5b8efff798038103d269b633813fc60c",
                                        "spanId": "eee19b7ec3c1b174",
                                        "body": {"stringValue": line},
                                    }
                                    for line in lines[i : i + 400]
                                ],
                            }
                        ],
                    }
                ]
            }
            resp = http.post(
                gateway.logs_url,
                json=body,
                headers={"Authorization": f"Bearer {gateway.token}"},
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"] == "application/json"
            partial = resp.json().get("partialSuccess") or {}
            rejected += int(partial.get("rejectedLogRecords", 0))
    assert rejected == len(MALFORMED)
    wait_for_counts(gateway, rec.good, len(MALFORMED))
    report("otlp-json", check_end_to_end(gateway, rec, plan), started)


def otelcol_binary() -> Path | None:
    value = os.environ.get("SIGSTREAM_OTELCOL")
    return Path(value) if value and Path(value).is_file() else None


def test_opentelemetry_collector(gateway: Gateway, tmp_path: Path, plan: Any) -> None:
    binary = otelcol_binary()
    if binary is None:
        pytest.skip(
            "no OpenTelemetry Collector binary at SIGSTREAM_OTELCOL (build one with the "
            "builder: docs/shippers.md; ~6 min, so CI uses the SDK test instead)"
        )
    rec = recording(tmp_path, "credential_access", "host", "cmd_sam_copy_esentutl.zip")
    config = tmp_path / "otelcol.yaml"
    config.write_text(
        f"""
receivers:
  filelog:
    include: [{rec.path}]
    start_at: beginning
    max_log_size: 262144
    storage: null
exporters:
  otlphttp:
    endpoint: {gateway.server.url}
    encoding: proto
    compression: gzip
    headers:
      Authorization: "Bearer {gateway.token}"
    tls:
      ca_file: {gateway.ca}
    retry_on_failure:
      enabled: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [filelog]
      exporters: [otlphttp]
"""
    )
    started = time.monotonic()
    col = start([str(binary), "--config", str(config)], tmp_path, "otelcol")
    try:
        wait_for_counts(gateway, rec.good, len(MALFORMED), shipper=col)
    except AssertionError:
        pytest.fail(col.output())
    finally:
        col.stop()
    report("otelcol", check_end_to_end(gateway, rec, plan), started)


# -- syslog --------------------------------------------------------------------------------


def run_syslog_ng(gateway: Gateway, tmp_path: Path, plan: Any, name: str) -> None:
    binary = shutil.which("syslog-ng")
    need("syslog-ng", binary is not None, "apt-get install syslog-ng-core")
    rec = recording(tmp_path, "credential_access", "host", "cmd_sam_copy_esentutl.zip")
    run = tmp_path / "syslog-ng"
    run.mkdir()
    config = run / "syslog-ng.conf"
    config.write_text(
        f"""@version: 3.38
options {{ log-msg-size(262144); stats-freq(0); }};
source s_file {{
  file("{rec.path}" flags(no-parse) follow-freq(0.2) log-msg-size(262144));
}};
rewrite r_token {{ set("{gateway.token}" value(".SDATA.sigstream@32473.token")); }};
destination d_gateway {{
  syslog("127.0.0.1" port({gateway.syslog_port}) transport(tls)
    tls(ca-file("{gateway.ca}") peer-verify(required-trusted))
    disk-buffer(reliable(yes) disk-buf-size(104857600) dir("{run}")));
}};
log {{ source(s_file); rewrite(r_token); destination(d_gateway); }};
"""
    )
    started = time.monotonic()
    ng = start(
        [
            binary or "syslog-ng",
            "--foreground",
            "--no-caps",
            "--stderr",
            f"--cfgfile={config}",
            f"--persist-file={run / 'persist'}",
            f"--pidfile={run / 'pid'}",
            f"--control={run / 'ctl'}",
        ],
        tmp_path,
        "syslog-ng",
    )
    try:
        wait_for_counts(gateway, rec.good, len(MALFORMED), shipper=ng)
    except AssertionError as exc:
        pytest.fail(f"{exc}\n{ng.output()}")
    finally:
        ng.stop()
    report(name, check_end_to_end(gateway, rec, plan), started)


def test_syslog_ng_tls(gateway: Gateway, tmp_path: Path, plan: Any) -> None:
    run_syslog_ng(gateway, tmp_path, plan, "syslog-ng")


def test_syslog_ng_held_back_by_the_rate_limit(
    slow_gateway: Gateway, tmp_path: Path, plan: Any
) -> None:
    """Refused batches (429) are retried by the listener, not dropped: TCP backpressure
    holds syslog-ng back, and the counts stay exact."""
    run_syslog_ng(slow_gateway, tmp_path, plan, "syslog-ng, 200 events/s")
    health = httpx.get(f"{slow_gateway.server.url}/healthz", verify=str(slow_gateway.ca)).json()
    assert health["totals"].get("syslog_rate_limited", 0) > 0, health  # it was held back


AUTH_LOG = [
    # (line as a Linux host writes /var/log/auth.log, the Sigma service it must get)
    (
        "Jan  2 10:00:01 web-01 sudo[4242]: alice : TTY=pts/0 ; PWD=/home/alice ; "
        "USER=#-1 ; COMMAND=/usr/bin/id",
        "sudo",
    ),
    (
        "Jan  2 10:00:02 web-01 sshd[515]: Accepted publickey for alice from 10.0.0.5 "
        "port 50000 ssh2",
        "sshd",
    ),
    ("Jan  2 10:00:03 db-02 CRON[77]: (root) CMD (run-parts /etc/cron.hourly)", "cron"),
]


def test_syslog_ng_forwards_a_linux_auth_log_as_linux_log_events(
    gateway: Gateway, tmp_path: Path
) -> None:
    """A Linux host's plain-text log through syslog-ng (RFC 3164 lines parsed by syslog-ng,
    sent as RFC 5424 over TLS): one linux_log event per line with its host, program and
    Sigma service, and SigmaHQ's own sudo rule (CVE-2019-14287) fires on the sudo line."""
    from detections.compiler.plan import load_plan
    from detections.engine.apply import match_events

    binary = shutil.which("syslog-ng")
    need("syslog-ng", binary is not None, "apt-get install syslog-ng-core")
    rule = shared_path(
        "sigma",
        "rules-emerging-threats",
        "2019",
        "Exploits",
        "CVE-2019-14287",
        "lnx_sudo_exploit_cve_2019_14287.yml",
    )
    run = tmp_path / "syslog-ng"
    run.mkdir()
    log_file = tmp_path / "auth.log"
    log_file.write_text("".join(line + "\n" for line, _ in AUTH_LOG))
    config = run / "syslog-ng.conf"
    config.write_text(
        f"""@version: 3.38
options {{ keep-hostname(yes); stats-freq(0); }};
source s_file {{ file("{log_file}" follow-freq(0.2) default-facility(authpriv)); }};
rewrite r_token {{ set("{gateway.token}" value(".SDATA.sigstream@32473.token")); }};
destination d_gateway {{
  syslog("127.0.0.1" port({gateway.syslog_port}) transport(tls)
    tls(ca-file("{gateway.ca}") peer-verify(required-trusted)));
}};
log {{ source(s_file); rewrite(r_token); destination(d_gateway); }};
"""
    )
    ng = start(
        [
            binary or "syslog-ng",
            "--foreground",
            "--no-caps",
            "--stderr",
            f"--cfgfile={config}",
            f"--persist-file={run / 'persist'}",
            f"--pidfile={run / 'pid'}",
            f"--control={run / 'ctl'}",
        ],
        tmp_path,
        "syslog-ng",
    )
    try:
        wait_for_counts(gateway, len(AUTH_LOG), 0, timeout_s=60, shipper=ng)
    except AssertionError as exc:
        pytest.fail(f"{exc}\n{ng.output()}")
    finally:
        ng.stop()
    stored = sorted((json.loads(r.value) for r in read_topic(gateway.events_topic)),
                    key=lambda e: e["event_time"])  # fmt: skip
    assert read_topic(gateway.dlq_topic) == []
    assert [e["event_type"] for e in stored] == ["linux_log"] * len(AUTH_LOG)
    assert [e["logsource"]["service"] for e in stored] == [svc for _, svc in AUTH_LOG]
    assert [(e["host"], e["sensor_id"]) for e in stored] == [
        ("web-01", "web-01"),
        ("web-01", "web-01"),
        ("db-02", "db-02"),
    ]
    assert stored[0]["extra"]["USER"] == "#-1" and stored[0]["program"] == "sudo"
    for event, (line, _) in zip(stored, AUTH_LOG, strict=True):
        assert line.endswith(event["message"]) and event["pid"] in line
    plan = load_plan([rule])
    assert [position for position, _ in match_events(plan, stored)] == [0]


def rsyslogd() -> Path | None:
    for candidate in (RSYSLOG_ROOT / "usr" / "sbin" / "rsyslogd",):
        if candidate.is_file():
            return candidate
    return None


def test_rsyslog_tls(gateway: Gateway, tmp_path: Path, plan: Any) -> None:
    binary = rsyslogd()
    need("rsyslog", binary is not None, f"rsyslog + rsyslog-gnutls, unpacked in {RSYSLOG_ROOT}")
    assert binary is not None
    gtls = binary.parent.parent / "lib" / "x86_64-linux-gnu" / "rsyslog" / "lmnsd_gtls.so"
    need("rsyslog-gnutls", gtls.is_file(), f"unpack rsyslog-gnutls into {RSYSLOG_ROOT}")
    assert binary is not None
    modules = binary.parent.parent / "lib" / "x86_64-linux-gnu" / "rsyslog"
    rec = recording(tmp_path, "defense_evasion", "host", "cmd_mshta_javascript_getobject_sct.zip")
    run = tmp_path / "rsyslog"
    run.mkdir()
    config = run / "rsyslog.conf"
    config.write_text(
        f"""global(workDirectory="{run}" maxMessageSize="256k"
       defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{gateway.ca}")
module(load="imfile" mode="polling" PollingInterval="1")
template(name="sigstream" type="list") {{
  constant(value="<") property(name="pri") constant(value=">1 ")
  property(name="timestamp" dateFormat="rfc3339") constant(value=" ")
  property(name="hostname") constant(value=" ") property(name="app-name")
  constant(value=" - - [sigstream@32473 token=\\"{gateway.token}\\"] ")
  property(name="msg")
}}
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{gateway.syslog_port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="127.0.0.1" TCP_Framing="octet-counted"
         template="sigstream"
         queue.type="LinkedList" queue.filename="fwd" queue.saveOnShutdown="on"
         action.resumeRetryCount="-1")
}}
input(type="imfile" File="{rec.path}" Tag="sigstream" ruleset="forward"
      freshStartTail="off" reopenOnTruncate="on")
"""
    )
    started = time.monotonic()
    rs = start(
        [str(binary), "-n", "-f", str(config), "-i", str(run / "pid"), "-M", str(modules)],
        tmp_path,
        "rsyslog",
    )
    try:
        wait_for_counts(gateway, rec.good, len(MALFORMED), shipper=rs)
    except AssertionError as exc:
        pytest.fail(f"{exc}\n{rs.output()}")
    finally:
        rs.stop()
    report("rsyslog", check_end_to_end(gateway, rec, plan), started)
