"""``sigstream gateway serve --workers 2``: two gateway processes on one HTTPS port, real Kafka.

Proves: both workers serve the shared socket (a new connection per batch: both do work);
every batch answered 200 is in Kafka (end offsets = the events answered ``accepted``); a
batch re-sent on a new connection is answered as duplicates by the worker that wrote it and
written again by the other one (each worker has its own de-duplication window: the
documented per-process limit), and the answers say which; after a restart every worker's
window is seeded from Kafka, so re-sent batches are duplicates whichever worker takes them;
SIGTERM to the parent stops every worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from common.settings import get_settings
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import free_port
from tests.unit.gateway_helpers import event, ndjson

pytestmark = pytest.mark.integration


def end_offsets(topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=get_settings().kafka_bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(c) for c in (task / "children").read_text().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            pass
    return out


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def start(tmp_path: Path, creds: Path, topic: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-c", "from sigstream.cli import app; app()",
        "gateway", "serve", "--port", str(port), "--workers", "2",
        "--credentials", str(creds), "--topic", topic, "--dlq-topic", topic + ".dlq",
    ]  # fmt: skip
    env = os.environ | {"SIGSTREAM_RUN_DIR": str(tmp_path / "run")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(proc: subprocess.Popen[bytes], url: str, ca: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            up = httpx.get(url + "/healthz", verify=str(ca), timeout=2).status_code == 200
            if up and len(descendants(proc.pid)) >= 2:
                time.sleep(2)  # the second worker seeds its window too
                return
        except (httpx.HTTPError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"gateway did not start: {err}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> list[int]:
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return workers


def test_two_workers_share_the_port_and_kafka_has_every_event_once(
    services: Any, tmp_path: Path
) -> None:
    topic = f"test.workers.{uuid.uuid4().hex[:8]}"
    creds = tmp_path / "creds.json"
    store = CredentialStore(creds)
    tokens = [store.enroll("acme", f"ws{i:02d}")[1] for i in range(8)]
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    ca = tmp_path / "run" / "gateway" / "tls" / "cert.pem"
    proc = start(tmp_path, creds, topic, port)
    try:
        wait_ready(proc, url, ca)
        per_batch = 400  # enough work per batch that both workers' CPU time shows it
        bodies = [
            ndjson([event(n, sensor=f"ws{i:02d}") for n in range(per_batch)]) for i in range(8)
        ]
        workers = descendants(proc.pid)
        before = {w: cpu_ticks(w) for w in workers}
        accepted = 0

        def send(token: str, body: bytes) -> httpx.Response:
            return httpx.post(
                url + "/v1/events",
                content=body,
                headers={"Authorization": f"Bearer {token}"},
                verify=str(ca),
                timeout=60,
            )

        # The first copy, then re-sends: a new connection per batch, the 8 sensors' batches
        # at once (as a fleet sends them), so both workers are accepting connections.
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(3):
                for resp in pool.map(send, tokens, bodies):
                    assert resp.status_code == 200, resp.text
                    answer = resp.json()
                    assert answer["accepted"] + answer["duplicates"] == per_batch
                    accepted += answer["accepted"]
        busy = [cpu_ticks(w) - before[w] for w in workers]
        # Every event at least once; a re-send the other worker took is written again
        # (it said so: "accepted"), never more often than there are workers.
        assert 8 * per_batch <= accepted <= 2 * 8 * per_batch
        assert end_offsets(topic) == accepted
        # Both workers took a real share of the connections (the helper processes, such
        # as multiprocessing's resource tracker, do nothing).
        less, more = sorted(busy)[-2:]
        assert less + more >= 10, f"too little work measured: {busy}"
        assert less >= 0.25 * (less + more), f"one worker did most of the work: {busy}"
    finally:
        workers = stop(proc)
    assert len(workers) >= 2
    deadline = time.monotonic() + 15  # multiprocessing's resource tracker takes ~2 s more
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "workers outlived SIGTERM"

    # A restart: every worker seeds its window from Kafka, so re-sent batches are
    # duplicates whichever worker takes them.
    proc = start(tmp_path, creds, topic, port)
    try:
        wait_ready(proc, url, ca)
        for token, body in zip(tokens, bodies, strict=True):
            resp = httpx.post(
                url + "/v1/events",
                content=body,
                headers={"Authorization": f"Bearer {token}"},
                verify=str(ca),
                timeout=60,
            )
            assert resp.status_code == 200
            assert (resp.json()["accepted"], resp.json()["duplicates"]) == (0, per_batch)
        assert end_offsets(topic) == accepted
    finally:
        stop(proc)
