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

    python -m bench.gateway [--events 40000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench.common import machine_info, print_kv, print_table, progress, rate, save_result
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


def start_gateway(workdir: Path, tls: bool, tag: str) -> Gateway:
    port = free_port()
    creds = workdir / f"creds-{tag}.json"
    topic = f"bench.gateway.{tag}.{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable, "-c", "from sigstream.cli import app; app()",
        "gateway", "serve", "--port", str(port),
        "--credentials", str(creds), "--topic", topic, "--dlq-topic", topic + ".dlq",
        "--rate", "0",
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
    return Gateway(proc, url, ca, CredentialStore(creds), topic)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=40_000, help="events per row")
    parser.add_argument("--quick", action="store_true", help="10,000 events per row")
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
        for tls in (True, False):
            gw = start_gateway(workdir, tls, "tls" if tls else "http")
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
    print_table(
        ["transport", "sensors", "batch", "encoding", "events", "seconds", "events/s"], rows
    )
    path = save_result("gateway", {"rows": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
