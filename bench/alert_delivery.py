"""Finding written -> webhook delivered: latency of ``sigstream alerts run``.

Findings are written to a fresh findings index at a steady rate, in batches every
``--batch-s`` seconds as the detection pass's micro-batches write them (the job's own
write path, ``detections.sinks.elasticsearch.write_documents``: bulk create + group sync,
``event.ingested`` stamped when the batch starts). The default rate, 130 findings/s, is
what ``bench/latency.py`` produces at half the job's capacity (7,799 findings in 60 s,
bench/README.md). ``sigstream alerts run`` runs as its own process (as deployed) with one
route to a signed webhook; the receiver, a real HTTP server in this process, verifies each
signature and records when each finding arrived. Latency = arrival - end of the bulk
write that stored the finding (it is searchable at the next refresh, <= 1 s later), so it
includes the refresh, the follower's poll interval, the delivery-log claim, the HTTP post.
Everything is in fresh indices, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common.settings import PROJECT_ROOT, get_settings
from detections.sinks.elasticsearch import (
    connect,
    drop_findings_index,
    ensure_findings_index,
    write_documents,
)
from detections.sinks.finding_docs import build_finding, finding_document
from schemas.findings import RuleInfo
from triage.alerts.destinations.http import verify

SECRET = "bench-secret"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def receiver(arrivals: dict[str, float], bad: list[int]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            if not verify(SECRET, self.headers, body):
                bad.append(1)
            arrivals.setdefault(json.loads(body)["finding_id"], now)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def batch(rules: list[RuleInfo], n: int, seq: int) -> list[tuple[str, dict[str, Any]]]:
    now = datetime.now(UTC)
    docs = []
    for i in range(n):
        event = {
            "event_id": f"b{seq}-{i}",
            "event_time": now.isoformat(),
            "host": f"host-{(seq * n + i) % 500}",
            "tenant_id": "bench",
            "sensor_id": f"s{i % 50}",
            "event_type": "process_creation",
            "Image": "C:\\Windows\\System32\\cmd.exe",
        }
        docs.append(finding_document(build_finding(rules[i % len(rules)], event, ingested=now)))
    return docs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.alert_delivery", description=__doc__)
    parser.add_argument("--rate", type=float, default=130.0, help="findings per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of writing")
    parser.add_argument("--batch-s", type=float, default=0.5, help="seconds between writes")
    parser.add_argument("--poll-s", type=float, default=None, help="SIGSTREAM_ALERTS_POLL_S")
    args = parser.parse_args(argv)
    settings = get_settings()
    run = uuid.uuid4().hex[:8]
    index = f"bench-alerts-{run}-findings"
    names = {
        "SIGSTREAM_FINDINGS_INDEX": index,
        "SIGSTREAM_ALERTS_LOG_INDEX": f"bench-alerts-{run}-log",
        "SIGSTREAM_ALERTS_DEAD_INDEX": f"bench-alerts-{run}-dead",
        "SIGSTREAM_ALERTS_STATE_INDEX": f"bench-alerts-{run}-state",
    }
    arrivals: dict[str, float] = {}
    bad: list[int] = []
    server = receiver(arrivals, bad)
    workdir = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    routes = workdir / "routes.yml"
    routes.write_text(
        "destinations:\n"
        f"  hook: {{type: webhook, url: 'http://127.0.0.1:{server.server_address[1]}/h', "
        "secret_env: BENCH_SECRET, tenants: [bench]}\n"
        "routes:\n  - {name: all, destinations: [hook]}\n"
    )
    env = {**os.environ, **names, "SIGSTREAM_ALERT_ROUTES": str(routes), "BENCH_SECRET": SECRET}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    if args.poll_s is not None:
        env["SIGSTREAM_ALERTS_POLL_S"] = str(args.poll_s)
    es = connect(settings.es_hosts)
    ensure_findings_index(es, index)
    log = (workdir / "alerts.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sigstream.cli import app; app()", "alerts", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rules = [
        RuleInfo(id=f"bench-rule-{i}", name=f"Bench rule {i}", level="high", tags=["attack.t1059"])
        for i in range(20)
    ]
    written: dict[str, float] = {}
    try:
        time.sleep(4.0)  # the process's start-up (imports, index creation) is not measured
        per_batch = max(1, round(args.rate * args.batch_s))
        start = time.monotonic()
        seq = 0
        print(
            f"writing {per_batch} findings every {args.batch_s}s for {args.duration:.0f}s",
            file=sys.stderr,
        )
        while time.monotonic() - start < args.duration:
            docs = batch(rules, per_batch, seq)
            write_documents(es, index, docs)
            done = time.time()
            for _, body in docs:
                written[body["sigstream"]["finding"]["id"]] = done
            seq += 1
            time.sleep(max(0.0, start + seq * args.batch_s - time.monotonic()))
        elapsed = time.monotonic() - start
        deadline = time.monotonic() + 60
        while len(arrivals) < len(written) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
        server.shutdown()
        for name in list(names.values())[1:]:
            es.options(ignore_status=404).indices.delete(index=name)
        drop_findings_index(es, index)
        es.close()
    lat = [arrivals[f] - written[f] for f in written if f in arrivals]
    print(f"\nload: {os.getloadavg()[0]:.2f} (1-min) on {os.cpu_count()} cores")
    print(f"findings written: {len(written)} at {len(written) / elapsed:.1f}/s")
    print(f"delivered: {len(lat)}; missing: {len(written) - len(lat)}; bad signatures: {len(bad)}")
    if lat:
        print(
            f"finding written -> webhook delivered: p50 {statistics.median(lat):.2f} s, "
            f"p95 {pct(lat, 95):.2f} s, p99 {pct(lat, 99):.2f} s, max {max(lat):.2f} s"
        )


if __name__ == "__main__":
    main()
