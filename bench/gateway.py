"""Gateway throughput: events/s from sensors through the HTTPS gateway into Kafka.

The gateway runs as its own process (``sigstream gateway serve``, as in production, so the
client's CPU does not share its interpreter), writing to fresh topics. Sensors post
pre-built NDJSON batches of synthetic process_creation events (built before the clock
starts); each sensor has its own credential and posts one batch at a time, as the spooling
client does. A batch counts only once the gateway answered 200, which it does only after
Kafka acknowledged every record (acks=all), and the topic's end offsets are checked
afterwards, so the number is end to end: HTTP + TLS + decompression + JSON parsing + schema
validation + Kafka. One extra row runs the real spooling client (``ingest.client``), disk
spool included.

The **scale** rows (issue 19) run the gateway as ``--workers N`` processes sharing one port
and measure, over several rounds (medians): ``/v1/events`` with 1,000-event gzip batches,
``/_bulk`` with the same schema events, and ``/_bulk`` with Winlogbeat (ECS layout) records
through the layouts adapter. The load generator is this process: one thread per sensor,
each an ``httpx`` client posting pre-built, pre-compressed bodies over HTTPS keep-alive, on
the same cores as the gateway (and Kafka). A round counts only batches answered 200 with
every event accepted, and the topic's end offsets must grow by exactly that count. The
**memory** rows: RSS of every gateway process at rest, per idle keep-alive TLS connection
(RSS growth / connections) and per request (peak RSS growth, sampled every 5 ms, while K
largest-valid requests run at once).

    python -m bench.gateway [--events 40000] [--quick] [--scale-only] [--workers 2]
                            [--rounds 3] [--scale-events 200000] [--sensors 16]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, TopicPartition

from bench.common import (
    machine_info,
    print_kv,
    print_table,
    proc_status_kb,
    progress,
    rate,
    save_result,
)
from common.settings import get_settings
from ingest.client import GatewayClient, compress
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import free_port


def make_event(sensor: str, n: int) -> bytes:
    return json.dumps(
        {
            "event_type": "process_creation",
            "sensor_id": sensor,
            "host": sensor.upper(),
            "event_id": f"{sensor}-{n:08d}-{uuid.uuid4().hex[:8]}",
            "seq": n,
            "event_time": "2026-11-20T10:00:00Z",
            "logsource": {"product": "windows", "category": "process_creation"},
            "EventID": 1,
            "Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            "CommandLine": f"powershell.exe -nop -w hidden -c Get-Process {n}",
            "ParentImage": "C:\\Windows\\explorer.exe",
            "User": "ACME\\bob",
            "IntegrityLevel": "High",
            "Hashes": "SHA256=" + "ab" * 32,
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    url: str
    ca: str | bool
    store: CredentialStore
    events_topic: str


def start_gateway(
    workdir: Path, tls: bool, tag: str, workers: int = 1, extra: tuple[str, ...] = ()
) -> Gateway:
    port = free_port()
    creds = workdir / f"creds-{tag}.json"
    topic = f"bench.gateway.{tag}.{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable, "-c", "from sigstream.cli import app; app()",
        "gateway", "serve", "--port", str(port),
        "--credentials", str(creds), "--topic", topic, "--dlq-topic", topic + ".dlq",
        "--rate", "0", "--byte-rate", "0", "--workers", str(workers), *extra,
    ]  # fmt: skip
    if not tls:
        cmd.append("--insecure-http")
    env = os.environ | {"SIGSTREAM_RUN_DIR": str(workdir / "run")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    ca: str | bool = str(workdir / "run" / "gateway" / "tls" / "cert.pem") if tls else False
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/healthz", verify=ca, timeout=2).status_code == 200:
                break
        except (httpx.HTTPError, OSError):  # not listening yet, or cert not written yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gateway did not start: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.2)
    gw = Gateway(proc, url, ca, CredentialStore(creds), topic)
    deadline = time.monotonic() + 90
    while len(gateway_pids(gw)) < workers + (workers > 1):  # every worker up (spawned)
        if time.monotonic() > deadline:
            raise RuntimeError("gateway workers did not start")
        time.sleep(0.2)
    time.sleep(1 if workers > 1 else 0)
    return gw


def topic_count(topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=get_settings().kafka_bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def post_run(gw: Gateway, sensors: int, per_sensor: int, batch: int, encoding: str) -> float:
    """Seconds for ``sensors`` concurrent senders to get every batch answered 200."""
    bodies: list[tuple[str, list[bytes]]] = []
    for s in range(sensors):
        sensor = f"bench{s:02d}"
        _, token = gw.store.enroll("bench", sensor)
        events = [make_event(sensor, n) for n in range(per_sensor)]
        chunks = [
            compress(b"\n".join(events[i : i + batch]) + b"\n", encoding)  # type: ignore[arg-type]
            for i in range(0, per_sensor, batch)
        ]
        bodies.append((token, chunks))
    errors: list[str] = []

    def send(token: str, chunks: list[bytes]) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if encoding != "identity":
            headers["Content-Encoding"] = encoding
        with httpx.Client(verify=gw.ca, timeout=120) as http:
            for body in chunks:
                resp = http.post(gw.url + "/v1/events", content=body, headers=headers)
                if resp.status_code != 200 or resp.json()["accepted"] != batch:
                    errors.append(f"{resp.status_code} {resp.text[:200]}")

    threads = [threading.Thread(target=send, args=b) for b in bodies]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} batches failed, first: {errors[0]}")
    return seconds


def client_run(gw: Gateway, workdir: Path, events: int) -> float:
    """The real spooling client: submit everything, time until the spool is drained."""
    _, token = gw.store.enroll("bench", "spooler")
    records = [make_event("spooler", n) for n in range(events)]
    client = GatewayClient(gw.url, token, workdir / f"spool-{uuid.uuid4().hex[:6]}", verify=gw.ca)
    started = time.perf_counter()
    client.start()
    for i in range(0, events, 1000):
        client.submit(records[i : i + 1000])
    assert client.flush(timeout_s=600)
    seconds = time.perf_counter() - started
    client.close()
    assert client.stats.accepted == events, client.stats
    return seconds


# -- scale rows (issue 19): several gateway processes, several rounds ---------------------

ECS_FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/layouts"


def gateway_pids(gw: Gateway) -> list[int]:
    """The ``serve`` process and every process under it (the spawned workers)."""
    out: list[int] = []
    todo = [gw.proc.pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def rss_kb(pids: list[int]) -> int:
    return sum(proc_status_kb(p, "VmRSS") or 0 for p in pids)


def ecs_record(sensor: str, n: int) -> bytes:
    """A Winlogbeat 8 (ECS, nested) Sysmon process creation, unique by record id."""
    doc = {
        "@timestamp": "2026-11-20T10:00:00.000Z",
        "event": {"code": "1", "kind": "event", "provider": "Microsoft-Windows-Sysmon"},
        "host": {"name": sensor},
        "agent": {"type": "winlogbeat", "version": "8.15.0"},
        "winlog": {
            "channel": "Microsoft-Windows-Sysmon/Operational",
            "provider_name": "Microsoft-Windows-Sysmon",
            "computer_name": f"{sensor}.acme.local",
            "record_id": n,
            "event_id": "1",
            "event_data": {
                "Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                "CommandLine": f"powershell.exe -nop -w hidden -c Get-Process {n}",
                "ParentImage": "C:\\Windows\\explorer.exe",
                "User": "ACME\\bob",
                "IntegrityLevel": "High",
                "ProcessId": str(1000 + n % 50000),
                "Hashes": "SHA256=" + "ab" * 32,
            },
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def bulk_body(docs: list[bytes]) -> bytes:
    return b"".join(b'{"create":{}}\n' + d + b"\n" for d in docs)


@dataclass(frozen=True)
class Load:
    """One endpoint's traffic: pre-built gzip bodies per sensor credential."""

    path: str
    senders: list[tuple[str, list[bytes]]]
    events: int


def build_load(gw: Gateway, kind: str, sensors: int, per_sensor: int, batch: int) -> Load:
    """``kind``: ``events`` (/v1/events), ``bulk`` (schema events via /_bulk) or
    ``bulk-ecs`` (Winlogbeat ECS records via /_bulk and the layouts adapter)."""
    senders = []
    base = int(time.time() * 1000) % 10**9 * 1000  # unique record ids across rounds
    for s in range(sensors):
        sensor = f"scale{s:02d}-{uuid.uuid4().hex[:6]}"
        _, token = gw.store.enroll("bench", sensor)
        if kind == "bulk-ecs":
            docs = [ecs_record(sensor, base + n) for n in range(per_sensor)]
        else:
            docs = [make_event(sensor, n) for n in range(per_sensor)]
        bodies = []
        for i in range(0, per_sensor, batch):
            chunk = docs[i : i + batch]
            raw = b"\n".join(chunk) + b"\n" if kind == "events" else bulk_body(chunk)
            bodies.append(gzip.compress(raw, compresslevel=6))
        senders.append((token, bodies))
    path = "/v1/events" if kind == "events" else "/_bulk"
    return Load(path, senders, sensors * per_sensor)


def accepted_of(resp: httpx.Response, path: str) -> int:
    if resp.status_code != 200:
        raise RuntimeError(f"{resp.status_code} {resp.text[:300]}")
    body = resp.json()
    if path == "/v1/events":
        return int(body["accepted"])
    ok = [i for i in body["items"] if next(iter(i.values()))["status"] in (200, 201)]
    if len(ok) != len(body["items"]):
        bad = next(i for i in body["items"] if next(iter(i.values()))["status"] >= 300)
        raise RuntimeError(f"bulk item refused: {json.dumps(bad)[:300]}")
    return len(ok)


def run_load(gw: Gateway, load: Load) -> tuple[float, int]:
    """Every sender posts its bodies one at a time; seconds and events acknowledged."""
    acked = [0] * len(load.senders)
    errors: list[str] = []

    def send(i: int, token: str, bodies: list[bytes]) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"}
        headers["Content-Type"] = "application/x-ndjson"
        with httpx.Client(verify=gw.ca, timeout=120) as http:
            for body in bodies:
                try:
                    resp = http.post(gw.url + load.path, content=body, headers=headers)
                    acked[i] += accepted_of(resp, load.path)
                except Exception as exc:  # counted, and the round fails below
                    errors.append(repr(exc)[:300])

    threads = [
        threading.Thread(target=send, args=(i, tok, bodies))
        for i, (tok, bodies) in enumerate(load.senders)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return seconds, sum(acked)


WRK_SCRIPT = Path(__file__).with_name("gateway_load.lua")


def run_load_wrk(
    gw: Gateway, load: Load, workdir: Path, per_body: int, client: list[int], finished: Any
) -> tuple[float, int, Any]:
    """The same traffic sent by ``wrk`` (C, one thread and one keep-alive HTTPS connection
    per sensor, ``bench/gateway_load.lua``): seconds, events acknowledged (200 answers
    with every event accepted, counted by the script) and wrk's pid (its CPU is the load
    generator's). The clock starts when the first thread has its bodies loaded and stops
    when the last one has its last answer (files the script writes, polled every 2 ms)."""
    root = Path(tempfile.mkdtemp(prefix="wrk-", dir=workdir))
    for i, (token, bodies) in enumerate(load.senders):
        d = root / str(i)
        d.mkdir()
        (d / "token").write_text(token)
        (d / "count").write_text(str(len(bodies)))
        for n, body in enumerate(bodies, 1):
            (d / f"{n:06d}.gz").write_bytes(body)
    n = len(load.senders)
    cmd = [
        "wrk", f"-t{n}", f"-c{n}", "-d3600s", "--timeout", "120s", "-s", str(WRK_SCRIPT),
        gw.url, "--", str(root), load.path, str(per_body),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client.append(proc.pid)
    ready = [root / str(i) / "ready" for i in range(n)]
    done = [root / str(i) / "done" for i in range(n)]
    deadline = time.monotonic() + 600
    while not any(p.exists() for p in ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    started = time.perf_counter()
    while not all(p.exists() for p in done):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    seconds = time.perf_counter() - started
    measured = finished()  # wrk's CPU is readable until it exits
    proc.send_signal(2)  # wrk sleeps for -d; SIGINT ends it and runs done()
    out, err = proc.communicate(timeout=60)
    line = next((x for x in out.splitlines() if x.startswith("WRKRESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out[-1000:]} {err[-1000:]}")
    res = json.loads(line.split(" ", 1)[1])
    if res["failed"] or res["errors"]:
        raise RuntimeError(f"wrk: {res}")
    shutil.rmtree(root, ignore_errors=True)
    return seconds, int(res["acked"]), measured


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def busy_ticks() -> int:
    """Ticks every core spent busy (not idle/iowait), machine-wide."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def cpu_split(gw: Gateway, client: list[int] | None = None) -> Any:
    """Start measuring; call the result to get cores used per role since then. ``client``:
    the load generator's pids (default this process); a pid appended later (``wrk``,
    started after this call) counts from its start."""
    kafka_pid = get_settings().run_dir / "kafka" / "kafka.pid"
    try:
        kafka = int(kafka_pid.read_text().strip())
    except (OSError, ValueError):
        kafka = -1
    clients = client if client is not None else [os.getpid()]
    roles = {"gateway": gateway_pids(gw), "client": clients, "kafka": [kafka]}
    before = {p: cpu_ticks(p) for ps in roles.values() for p in ps}
    busy0, t0 = busy_ticks(), time.perf_counter()
    hz = os.sysconf("SC_CLK_TCK")

    def done() -> dict[str, float]:
        secs = time.perf_counter() - t0
        used = {
            r: sum(cpu_ticks(p) - before.get(p, 0) for p in ps) / hz / secs
            for r, ps in roles.items()
        }
        used["other"] = max(0.0, (busy_ticks() - busy0) / hz / secs - sum(used.values()))
        return {k: round(v, 2) for k, v in used.items()}

    return done


def load_conditions() -> str:
    """Load average and the busiest processes right now (other helpers share the cores)."""
    one, five, _ = os.getloadavg()
    try:
        top = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()[:4]
    except (OSError, subprocess.TimeoutExpired):
        top = []
    return f"load {one:.1f}/{five:.1f}; busiest: " + ", ".join(" ".join(t.split()) for t in top)


def scale_rows(
    workdir: Path,
    workers: int,
    rounds: int,
    events: int,
    sensors: int,
    kinds: list[str],
    loader: str = "wrk",
    serve_args: tuple[str, ...] = (),
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    gw = start_gateway(workdir, True, f"scale{workers}", workers=workers, extra=serve_args)
    try:
        pids = gateway_pids(gw)
        progress(f"gateway pids {pids}, RSS {rss_kb(pids) // 1024} MiB at rest")
        per_sensor = max(1000, events // sensors // 1000 * 1000)
        for kind in kinds:
            rates: list[float] = []
            cores_seen: list[dict[str, float]] = []
            for r in range(rounds):
                load = build_load(gw, kind, sensors, per_sensor, 1000)
                before = topic_count(gw.events_topic)
                cond = load_conditions()
                if loader == "wrk":
                    client = [os.getpid()]
                    measure = cpu_split(gw, client)
                    seconds, acked, cores = run_load_wrk(gw, load, workdir, 1000, client, measure)
                else:
                    measure = cpu_split(gw)
                    seconds, acked = run_load(gw, load)
                    cores = measure()
                landed = topic_count(gw.events_topic) - before
                assert acked == load.events, f"{acked} acknowledged, {load.events} sent"
                assert landed == acked, f"{landed} events in Kafka, {acked} acknowledged"
                rates.append(acked / seconds)
                cores_seen.append(cores)
                speed = f"{acked} in {seconds:.2f}s = {acked / seconds:,.0f}/s"
                progress(f"{kind} round {r + 1}: {speed}; cores used {cores} ({cond})")
                results.append(
                    {
                        "kind": kind,
                        "workers": workers,
                        "round": r + 1,
                        "events": acked,
                        "landed": landed,
                        "seconds": seconds,
                        "conditions": cond,
                        "cores": cores,
                        "loader": loader,
                    }
                )
            # Gateway CPU per event (all its processes and threads) is steadier than
            # events/s on shared cores; the projection gives the gateway both cores minus
            # what Kafka and the load generator used.
            cpu_us = statistics.median(
                c["gateway"] / x * 1e6 for c, x in zip(cores_seen, rates, strict=True)
            )
            spare = 2 - statistics.median(c["kafka"] + c["client"] for c in cores_seen)
            rows.append(
                [
                    kind,
                    load.path,
                    workers,
                    sensors,
                    load.events,
                    rounds,
                    f"{statistics.median(rates):,.0f}",
                    " / ".join(f"{x:,.0f}" for x in rates),
                    f"{statistics.median(c['other'] for c in cores_seen):.2f}",
                    f"{cpu_us:.1f}",
                    f"{spare / cpu_us * 1e6:,.0f}",
                ]
            )
        results.append({"rss_kb_end": rss_kb(gateway_pids(gw)), "pids": len(pids)})
    finally:
        stop_gateway(gw)
    return rows, results


def stop_gateway(gw: Gateway) -> None:
    gw.proc.terminate()
    try:
        gw.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        gw.proc.wait(timeout=10)


# -- memory rows --------------------------------------------------------------------------


def open_idle_connections(gw: Gateway, n: int) -> list[ssl.SSLSocket]:
    """``n`` TLS keep-alive connections, each after one answered request (GET /healthz)."""
    ctx = ssl.create_default_context(cafile=str(gw.ca))
    host, port = gw.url.removeprefix("https://").split(":")
    conns = []
    for _ in range(n):
        sock = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(
            next(
                h.split(b":")[1]
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length")
            )
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        conns.append(sock)
    return conns


def big_body(sensor: str, count: int, size: int) -> bytes:
    """The largest valid batch: ``count`` events of about ``size`` bytes, gzip."""
    pad = "A" * max(0, size - 600)
    lines = [
        make_event(sensor, n).replace(
            b'"IntegrityLevel":"High"', f'"IntegrityLevel":"{pad}"'.encode()
        )
        for n in range(count)
    ]
    return gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1)


def post_concurrently(gw: Gateway, bodies: list[tuple[str, bytes]]) -> list[int]:
    """Post each (token, gzip body) on its own connection at once; events accepted each."""
    got = [0] * len(bodies)

    def one(i: int, token: str, body: bytes) -> None:
        with httpx.Client(verify=gw.ca, timeout=300) as http:
            headers = {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"}
            resp = http.post(gw.url + "/v1/events", content=body, headers=headers)
            got[i] = accepted_of(resp, "/v1/events")

    threads = [threading.Thread(target=one, args=(i, *b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def peak_during(pids: list[int], work: Any, *args: Any) -> tuple[int, Any]:
    """Peak RSS (kB, summed over ``pids``) sampled every 5 ms while ``work()`` runs."""
    peak = [rss_kb(pids)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pids))
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = work(*args)
    finally:
        done.set()
        t.join()
    return peak[0], out


def memory_rows(
    workdir: Path, connections: int, concurrent: list[int]
) -> tuple[list[list[Any]], dict[str, Any]]:
    """RSS at rest, per idle TLS connection and per largest request (one gateway process)."""
    rows: list[list[Any]] = []
    out: dict[str, Any] = {}
    gw = start_gateway(workdir, True, "mem", workers=1)
    try:
        pids = gateway_pids(gw)
        for c in open_idle_connections(gw, 5):  # warm the TLS and HTTP paths
            c.close()
        time.sleep(0.5)
        rest = rss_kb(pids)
        rows.append(["gateway process at rest", f"{rest / 1024:,.1f} MiB", "1 process"])
        started = time.monotonic()
        conns = open_idle_connections(gw, connections)
        opened_s = time.monotonic() - started
        time.sleep(0.2)
        held = rss_kb(pids)
        for c in conns:
            c.close()
        per_conn = (held - rest) / connections
        rows.append(
            [
                "per idle keep-alive TLS connection",
                f"{per_conn:,.1f} KiB",
                f"({held - rest:,} KiB over {connections} connections, opened in {opened_s:.1f}s)",
            ]
        )
        out.update(rest_kb=rest, per_connection_kb=per_conn, connections=connections)
        for k in concurrent:
            bodies = []
            for i in range(k):
                sensor = f"mem{k}-{i}-{uuid.uuid4().hex[:6]}"
                _, token = gw.store.enroll("bench", sensor)
                bodies.append((token, big_body(sensor, 10_000, 6_000)))
            time.sleep(5.5)  # idle connections of the step before are gone (keep-alive 5 s)
            base = rss_kb(pids)

            peak, got = peak_during(pids, post_concurrently, gw, bodies)
            assert got == [10_000] * k, got
            mib = (peak - base) / 1024
            rows.append(
                [
                    f"per request, {k} at once (10,000 events of 6 KB, 62 MB decoded, "
                    f"{len(bodies[0][1]) // 1024} KiB gzip)",
                    f"{mib / k:,.0f} MiB",
                    f"(peak RSS +{mib:,.0f} MiB over {base / 1024:,.0f} MiB)",
                ]
            )
            out[f"per_request_mib_k{k}"] = mib / k
    finally:
        stop_gateway(gw)
    return rows, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=40_000, help="events per row")
    parser.add_argument("--quick", action="store_true", help="10,000 events per row")
    parser.add_argument("--scale-only", action="store_true", help="only the issue 19 rows")
    parser.add_argument("--workers", type=int, default=2, help="gateway processes (scale rows)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scale row")
    parser.add_argument("--scale-events", type=int, default=200_000, help="events per round")
    parser.add_argument("--sensors", type=int, default=16, help="concurrent senders")
    parser.add_argument(
        "--kinds", default="events,bulk,bulk-ecs", help="scale rows: events, bulk, bulk-ecs"
    )
    parser.add_argument(
        "--loader",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="scale rows' load generator: wrk (C, its own process; apt install wrk) or "
        "httpx threads in this process",
    )
    parser.add_argument(
        "--parallel-batches", type=int, default=0, help="scale rows: batches per process"
    )
    parser.add_argument("--connections", type=int, default=200, help="idle connections")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory rows")
    args = parser.parse_args(argv)
    total = 10_000 if args.quick else args.events
    s = get_settings()
    print_kv("machine", machine_info(s))
    configs = [  # (tls, sensors, batch, encoding)
        (True, 1, 100, "zstd"),
        (True, 1, 1000, "zstd"),
        (True, 1, 5000, "zstd"),
        (True, 4, 1000, "zstd"),
        (True, 4, 1000, "gzip"),
        (True, 4, 1000, "identity"),
        (False, 4, 1000, "zstd"),
    ]
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        for tls in () if args.scale_only else (True, False):
            gw = start_gateway(workdir, tls, "tls" if tls else "http", workers=1)
            try:
                for c_tls, sensors, batch, encoding in configs:
                    if c_tls != tls:
                        continue
                    per_sensor = total // sensors // batch * batch
                    progress(f"tls={tls} sensors={sensors} batch={batch} {encoding}")
                    before = topic_count(gw.events_topic)
                    seconds = post_run(gw, sensors, per_sensor, batch, encoding)
                    n = sensors * per_sensor
                    landed = topic_count(gw.events_topic) - before
                    assert landed == n, f"{landed} events in Kafka, expected {n}"
                    transport = "https" if tls else "http"
                    rows.append(
                        [transport, sensors, batch, encoding, n, f"{seconds:.2f}", rate(n, seconds)]
                    )
                    results.append(
                        {
                            "tls": tls,
                            "sensors": sensors,
                            "batch": batch,
                            "encoding": encoding,
                            "events": n,
                            "seconds": seconds,
                        }
                    )
                if tls:
                    progress("spooling client (disk spool, zstd, 1000/batch)")
                    before = topic_count(gw.events_topic)
                    seconds = client_run(gw, workdir, total)
                    assert topic_count(gw.events_topic) - before == total
                    rows.append(
                        [
                            "https",
                            "1 (client)",
                            1000,
                            "zstd",
                            total,
                            f"{seconds:.2f}",
                            rate(total, seconds),
                        ]
                    )
                    results.append({"client": True, "events": total, "seconds": seconds})
            finally:
                gw.proc.terminate()
                gw.proc.wait(timeout=30)
        progress(f"scale rows: {args.workers} workers, {args.rounds} rounds")
        scale, scale_results = scale_rows(
            workdir,
            args.workers,
            args.rounds,
            10_000 if args.quick else args.scale_events,
            args.sensors,
            [k for k in args.kinds.split(",") if k],
            args.loader,
            ("--parallel-batches", str(args.parallel_batches)) if args.parallel_batches else (),
        )
        memory: list[list[Any]] = []
        memory_result: dict[str, Any] = {}
        if not args.no_memory:
            progress("memory rows")
            memory, memory_result = memory_rows(workdir, args.connections, [1, 4])
    if rows:
        print_table(
            ["transport", "sensors", "batch", "encoding", "events", "seconds", "events/s"], rows
        )
    print()
    how = (
        "wrk, its own process, one thread + connection per sensor"
        if args.loader == "wrk"
        else "httpx, one thread per sensor in the bench process"
    )
    print(
        f"HTTPS, {args.workers} gateway processes on one port, 1,000-event gzip batches; "
        f"load generator ({how}) on the same cores:"
    )
    print_table(
        [
            "kind",
            "path",
            "workers",
            "sensors",
            "events/round",
            "rounds",
            "median events/s",
            "each round",
            "others' cores",
            "gateway CPU us/event",
            "2 quiet cores (projected)",
        ],
        scale,
    )
    if memory:
        print()
        print_table(["memory", "value", "how"], memory)
    path = save_result(
        "gateway", {"rows": results, "scale": scale_results, "memory": memory_result}
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
