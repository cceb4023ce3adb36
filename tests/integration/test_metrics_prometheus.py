"""A real Prometheus server scrapes a real stack: the gateway (2 worker processes, one
metrics port), the triage API and a streaming detect job, all started as the operator
starts them (``sigstream gateway serve``, ``findings serve``, ``detect``), on real Kafka
and Elasticsearch. Events go through the gateway; the test then asks Prometheus' HTTP API
(``/api/v1/query``) for the series and checks their values against what was sent, and
that the shipped alerting rules load and evaluate.

Needs Debian's ``prometheus`` package (``.ci/run`` installs it): skipped with a clear
message without it, a failure under ``CI=true``. Prometheus runs as this test's own
process (own config, data folder and port), never the system service.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.http_server import free_port
from ingest.gateway.credentials import CredentialStore
from tests.conftest import REPO_ROOT, SUMMARY_LINES
from tests.unit.gateway_helpers import event, ndjson

pytestmark = pytest.mark.integration

CLI = "from sigstream.cli import app; app()"
RULE_ID = "5f0c1a2e-0000-4000-8000-00000000beef"
RULE = f"""
title: Metrics test - cmd.exe started
id: {RULE_ID}
status: test
level: high
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    Image|endswith: '\\cmd.exe'
  condition: selection
"""
EVENTS = 60  # valid events sent through the gateway
BAD_LINES = 3  # lines the gateway refuses (invalid JSON)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus not installed (apt-get install -y -q prometheus; .ci/run does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class Processes:
    """The processes this test started, each in its own session; stopped by pid."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group of the process we started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The value of a one-series answer (None: no series)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait(
        self, expr: str, ok: Callable[[float | None], bool], timeout: float, why: str
    ) -> float | None:
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                last = self.value(expr)
                if ok(last):
                    return last
            time.sleep(1)
        raise AssertionError(f"{why}: {expr} = {last} after {timeout:.0f} s")


def wait_http(url: str, timeout: float, what: str, procs: Processes, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = procs.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}):\n{procs.log(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} not up at {url} after {timeout:.0f} s:\n{procs.log(name)}")


def post(url: str, body: bytes, token: str) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def test_prometheus_scrapes_gateway_api_and_job(
    services: dict[str, Any], tmp_path: Path, unique: str, procs: Processes
) -> None:
    prometheus = prometheus_binary()
    from common.settings import get_settings

    settings = get_settings()
    events_topic, dlq_topic = f"test.metrics.events.{unique}", f"test.metrics.dlq.{unique}"
    index = f"test-metrics-findings-{unique}"
    ports = {name: free_port() for name in ("gw", "gw_m", "api", "api_m", "job_m", "prom")}

    creds = tmp_path / "credentials.json"
    _, token = CredentialStore(creds).enroll("acme", "ws01")
    keys = tmp_path / "api-keys.yml"
    keys.write_text("test-key: {tenant: acme, role: analyst, user: alice}\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cmd.yml").write_text(RULE)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "SIGSTREAM_EVENTS_TOPIC": events_topic,
        "SIGSTREAM_DLQ_TOPIC": dlq_topic,
        "SIGSTREAM_FINDINGS_INDEX": index,
        "SIGSTREAM_RUN_DIR": str(tmp_path / "run"),
        "SIGSTREAM_DEPLOY_DIR": str(tmp_path / "deploy"),
        "SIGSTREAM_API_KEYS_FILE": str(keys),
        "PYSPARK_SUBMIT_ARGS": "--conf spark.ui.showConsoleProgress=false pyspark-shell",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    # Prometheus first, with the shipped alerting rules, scraping every second.
    shutil.copy(REPO_ROOT / "infra" / "prometheus" / "sigstream-rules.yml", tmp_path)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["sigstream-rules.yml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{ports[p]}"]}]}
            for job, p in (
                ("sigstream-gateway", "gw_m"),
                ("sigstream-api", "api_m"),
                ("sigstream-detect", "job_m"),
            )
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    procs.start(
        "prometheus",
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prom']}",
            "--log.level=warn",
        ],
        env,
    )
    prom = Prometheus(f"http://127.0.0.1:{ports['prom']}")
    wait_http(f"{prom.url}/-/ready", 60, "prometheus", procs, "prometheus")

    # The gateway: two worker processes, one metrics port (multiprocess mode).
    cli = [sys.executable, "-c", CLI]
    procs.start(
        "gateway",
        [
            *cli,
            "gateway",
            "serve",
            "--insecure-http",
            "--port",
            str(ports["gw"]),
            "--workers",
            "2",
            "--credentials",
            str(creds),
            "--metrics-port",
            str(ports["gw_m"]),
        ],
        env,
    )
    procs.start(
        "api",
        [
            *cli,
            "findings",
            "serve",
            "--port",
            str(ports["api"]),
            "--metrics-port",
            str(ports["api_m"]),
        ],
        env,
    )
    gateway = f"http://127.0.0.1:{ports['gw']}"
    wait_http(f"{gateway}/readyz", 120, "gateway", procs, "gateway")
    wait_http(f"http://127.0.0.1:{ports['api']}/", 120, "triage API", procs, "api")

    # Events: EVENTS valid ones in three requests (any worker may take each), BAD_LINES
    # lines that are not JSON, one request with a wrong token.
    third = EVENTS // 3
    for start in range(0, EVENTS, third):
        body = ndjson([event(n) for n in range(start, start + third)])
        if start == 0:
            body += b"{not json\n" * BAD_LINES
        assert post(f"{gateway}/v1/events", body, token) == 200
    assert post(f"{gateway}/v1/events", ndjson([event(999)]), "wrong-token") == 401
    # A record written to the events topic directly that is not an event: the job's DLQ.
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(events_topic, b"{this is not json", key=b"ws01")
    assert producer.flush(30) == 0

    # The triage API: one request with the key, one without (no key needed to scrape).
    api = f"http://127.0.0.1:{ports['api']}"
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(
            urllib.request.Request(f"{api}/api/findings", headers={"X-API-Key": "test-key"}),
            timeout=30,
        )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{api}/api/findings", timeout=30)
    assert refused.value.code == 401

    # The streaming job (not --once: Prometheus scrapes it while it runs).
    procs.start(
        "detect",
        [
            *cli,
            "detect",
            "--no-deployments",
            "--no-sensor-health",
            "--no-correlations",
            "--no-normalize",
            "--rules",
            str(rules),
            "--checkpoint",
            str(tmp_path / "checkpoint"),
            "--metrics-port",
            str(ports["job_m"]),
        ],
        env,
    )

    def job_alive(_: float | None = None) -> None:
        proc = procs.procs["detect"]
        assert proc.poll() is None, f"detect exited:\n{procs.log('detect')}"

    for job in ("sigstream-gateway", "sigstream-api"):
        prom.wait(f'up{{job="{job}"}}', lambda v: v == 1, 60, f"{job} scraped")

    # Gateway: events in == sent, rejects by reason, the refused request.
    prom.wait(
        "sum(sigstream_gateway_events_accepted_total)", lambda v: v == EVENTS, 60, "gateway events"
    )
    assert prom.value('sigstream_gateway_events_rejected_total{reason="invalid_json"}') == BAD_LINES
    assert prom.value('sigstream_gateway_batches_refused_total{reason="unauthorized"}') >= 1
    assert prom.value("sigstream_gateway_batches_delivered_total") == 3

    # The API: requests by route template and status, no key needed for the scrape.
    api_401 = 'sum(sigstream_api_requests_total{route="/api/findings", status="401"})'
    prom.wait(api_401, lambda v: v is not None and v >= 1, 30, "API 401 counted")

    # The job: up, every event evaluated, a high finding each, the bad record's reason.
    deadline = 420.0
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        job_alive()
        with contextlib.suppress(OSError):
            if prom.value("sigstream_detect_events_total") == EVENTS:
                break
        time.sleep(2)
    else:
        raise AssertionError(f"job events never reached {EVENTS}:\n{procs.log('detect')}")
    assert prom.value('up{job="sigstream-detect"}') == 1
    high = 'sigstream_detect_findings_total{destination="active", level="high"}'
    prom.wait(high, lambda v: v == EVENTS, 30, "findings by level")
    job_alive()
    assert prom.value('sigstream_detect_dead_letters_total{reason="malformed_json"}') == 1
    assert prom.value(f'sigstream_rule_matches_total{{rule_id="{RULE_ID}"}}') == EVENTS
    assert prom.value(f'sigstream_rule_evaluated_events_total{{rule_id="{RULE_ID}"}}') == EVENTS
    assert prom.value(f'sigstream_rule_eval_seconds_total{{rule_id="{RULE_ID}"}}') > 0
    assert prom.value("sigstream_detect_rules_loaded") == 1
    assert prom.value("sigstream_detect_rules_quarantined") == 0
    assert prom.value("sigstream_detect_batch_duration_seconds_count") >= 1

    # Event-to-finding latency: one observation per finding, each under the job's whole
    # life since the events were sent (the gateway stamped received_time).
    assert prom.value("sigstream_detect_event_to_finding_seconds_count") == EVENTS
    mean = prom.value(
        "sigstream_detect_event_to_finding_seconds_sum"
        " / sigstream_detect_event_to_finding_seconds_count"
    )
    since_sent = time.monotonic() - started + 60
    assert mean is not None and 0 < mean < since_sent
    p99 = prom.value("histogram_quantile(0.99, sigstream_detect_event_to_finding_seconds_bucket)")
    assert p99 is not None and 0 < p99 <= 1800

    # A second wave while the job runs: the latency of live events (the first wave waited
    # for the job's start), from the histogram's increase over the wave.
    def buckets() -> dict[str, float]:
        found = prom.query("sigstream_detect_event_to_finding_seconds_bucket")
        return {r["metric"]["le"]: float(r["value"][1]) for r in found}

    before, sum_before = buckets(), prom.value("sigstream_detect_event_to_finding_seconds_sum")
    wave = 30
    body = ndjson([event(n) for n in range(EVENTS, EVENTS + wave)])
    assert post(f"{gateway}/v1/events", body, token) == 200
    count = "sigstream_detect_event_to_finding_seconds_count"
    prom.wait(count, lambda v: v == EVENTS + wave, 120, "second wave's findings")
    after, sum_after = buckets(), prom.value("sigstream_detect_event_to_finding_seconds_sum")
    assert sum_before is not None and sum_after is not None
    live_mean = (sum_after - sum_before) / wave
    bounds = sorted(after, key=lambda le: float(le))
    live_p99 = next(le for le in bounds if after[le] - before.get(le, 0) >= 0.99 * wave)
    assert 0 < live_mean < 120
    SUMMARY_LINES.append(
        f"metrics: {wave} live events' event-to-finding latency via Prometheus: mean "
        f"{live_mean:.2f} s, p99 bucket le={live_p99} s (first wave, sent before the job "
        f"started: mean {mean:.1f} s)"
    )
    # Both gateway workers counted into the multiprocess folder the parent serves.
    folder = tmp_path / "run" / "metrics" / f"gateway-{ports['gw']}"
    assert len(list(folder.glob("counter_*.db"))) >= 2

    # Kafka lag of the detect query, from Spark's progress: nothing left behind.
    lag = 'sigstream_stream_kafka_lag_records{query="sigstream-detect"}'
    prom.wait(lag, lambda v: v == 0, 60, "lag back to 0")
    assert prom.value('sigstream_stream_query_active{query="sigstream-detect"}') == 1

    # The shipped rules loaded and evaluate on these series: no SLO alert on a healthy run.
    groups = {g["name"] for g in prom.get("/api/v1/rules")["groups"]}
    assert {"sigstream-recording", "sigstream-slo"} <= groups
    assert prom.value('sigstream:kafka_lag_records:sum{query="sigstream-detect"}') == 0
    firing = prom.query('ALERTS{alertname=~"SigstreamDetectJobDown|SigstreamGatewayDown"}')
    assert firing == []

    # The job stops: its target goes down and the job-down alert is pending.
    procs.stop("detect")
    prom.wait('up{job="sigstream-detect"}', lambda v: v == 0, 30, "job seen down")
    prom.wait(
        'ALERTS{alertname="SigstreamDetectJobDown", alertstate="pending"}',
        lambda v: v == 1,
        30,
        "job-down alert pending",
    )
