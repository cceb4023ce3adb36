"""OTLP/HTTP logs and syslog-over-TLS throughput: real Windows records into Kafka.

The gateway runs as its own process (``sigstream gateway serve --syslog-port``) writing to
fresh topics. Records are NXLog ``im_msvistalog`` JSON lines from the OTRF recordings
(../shared/data), each given a distinct ``RecordNumber`` so none is a duplicate, so every
record goes through layout detection and normalization. Senders (one relay credential
each) post pre-built requests one at a time: OTLP protobuf (gzip) and OTLP JSON (gzip)
to ``/v1/logs``, and RFC 5424 octet-counted messages over one TLS connection each to the
syslog listener. A request counts once answered 200 (after Kafka acknowledged); syslog has
no answer, so its clock stops when the topic's end offsets reach the count. Every row
checks the end offsets. Also prints the gateway's peak RSS (VmHWM).

    python -m bench.otlp [--records 20000] [--senders 2] [--batch 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bench.common import machine_info, print_kv, print_table, proc_status_kb, progress, rate
from bench.gateway import topic_count
from common.settings import PROJECT_ROOT, get_settings
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import free_port

OTRF = PROJECT_ROOT.parent / "shared" / "data" / "otrf"


def records(count: int) -> list[bytes]:
    """``count`` NXLog lines from the OTRF zips, each with its own RecordNumber."""
    lines: list[bytes] = []
    for path in sorted(OTRF.rglob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.startswith("__MACOSX"):
                    continue
                lines += [ln for ln in archive.read(name).splitlines() if ln.strip()]
        if len(lines) >= count:
            break
    if not lines:
        raise SystemExit(f"no OTRF recordings under {OTRF}")
    out = []
    for i in range(count):
        obj = json.loads(lines[i % len(lines)])
        obj["RecordNumber"] = 10_000_000 + i
        out.append(json.dumps(obj, separators=(",", ":")).encode())
    return out


def otlp_request(lines: list[bytes]) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for line in lines:
        scope.log_records.add().body.CopyFrom(AnyValue(string_value=line.decode()))
    return req


def start_gateway(workdir: Path) -> tuple[subprocess.Popen[bytes], str, int, str, str]:
    port, syslog_port = free_port(), free_port()
    creds = workdir / "creds.json"
    topic = f"bench.otlp.{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable, "-c", "from sigstream.cli import app; app()",
        "gateway", "serve", "--port", str(port), "--syslog-port", str(syslog_port),
        "--credentials", str(creds), "--topic", topic, "--dlq-topic", topic + ".dlq",
        "--rate", "0", "--byte-rate", "0",
    ]  # fmt: skip
    env = os.environ | {"SIGSTREAM_RUN_DIR": str(workdir / "run")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"https://127.0.0.1:{port}"
    ca = str(workdir / "run" / "gateway" / "tls" / "cert.pem")
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/healthz", verify=ca, timeout=2).status_code == 200:
                break
        except (httpx.HTTPError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gateway did not start: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.2)
    return proc, url, syslog_port, ca, topic


def run_http(url: str, ca: str, bodies: list[list[bytes]], tokens: list[str], media: str) -> float:
    errors: list[str] = []

    def send(token: str, chunks: list[bytes]) -> None:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": media,
            "Content-Encoding": "gzip",
        }
        with httpx.Client(verify=ca, timeout=120) as http:
            for body in chunks:
                resp = http.post(url + "/v1/logs", content=body, headers=headers)
                if resp.status_code != 200 or b"rejected" in resp.content.lower():
                    errors.append(f"{resp.status_code} {resp.content[:200]!r}")

    threads = [
        threading.Thread(target=send, args=pair) for pair in zip(tokens, bodies, strict=True)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return time.perf_counter() - started


def run_syslog(port: int, ca: str, streams: list[bytes], topic: str, expected: int) -> float:
    ctx = ssl.create_default_context(cafile=ca)

    def send(stream: bytes) -> None:
        with ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"
        ) as conn:
            conn.sendall(stream)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1024):
                pass

    threads = [threading.Thread(target=send, args=(s,)) for s in streams]
    started = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + 600
    while topic_count(topic) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic_count(topic)} of {expected} syslog events in Kafka")
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    for t in threads:
        t.join()
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000, help="records per row")
    parser.add_argument("--senders", type=int, default=2, help="concurrent senders")
    parser.add_argument("--batch", type=int, default=1000, help="records per request")
    args = parser.parse_args(argv)
    print_kv("machine", machine_info(get_settings()))
    progress(f"{args.records * 3} OTRF records")
    pool = records(args.records * 3)
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-otlp-") as tmp:
        proc, url, syslog_port, ca, topic = start_gateway(Path(tmp))
        try:
            store = CredentialStore(Path(tmp) / "creds.json")
            tokens = [
                store.enroll("bench", f"relay{i}", relay=True)[1] for i in range(args.senders)
            ]
            per = args.records // args.senders // args.batch * args.batch
            total = per * args.senders
            for row, media in enumerate(("application/x-protobuf", "application/json")):
                part = pool[row * args.records :][:total]
                bodies = []
                for s in range(args.senders):
                    mine = part[s * per : (s + 1) * per]
                    reqs = [
                        otlp_request(mine[i : i + args.batch]) for i in range(0, per, args.batch)
                    ]
                    encode = (
                        (lambda r: r.SerializeToString())
                        if media.endswith("protobuf")
                        else (lambda r: json_format.MessageToJson(r, indent=None).encode())
                    )
                    bodies.append([gzip.compress(encode(r), 1) for r in reqs])
                progress(f"/v1/logs {media}")
                before = topic_count(topic)
                seconds = run_http(url, ca, bodies, tokens, media)
                landed = topic_count(topic) - before
                assert landed == total, f"{landed} events in Kafka, expected {total}"
                rows.append([f"OTLP {media.split('/')[1]} gzip", args.senders, args.batch,
                             total, f"{seconds:.2f}", rate(total, seconds)])  # fmt: skip
            part = pool[2 * args.records :][:total]
            streams = []
            for s in range(args.senders):
                msgs = []
                for line in part[s * per : (s + 1) * per]:
                    m = (
                        b"<14>1 2026-12-06T00:00:00Z wec bench - - "
                        b'[sigstream@32473 token="' + tokens[s].encode() + b'"] ' + line
                    )
                    msgs.append(str(len(m)).encode() + b" " + m)
                streams.append(b"".join(msgs))
            progress("syslog TLS")
            before = topic_count(topic)
            seconds = run_syslog(syslog_port, ca, streams, topic, before + total)
            rows.append(["syslog TLS octet-counted", args.senders, "-", total,
                         f"{seconds:.2f}", rate(total, seconds)])  # fmt: skip
            peak = proc_status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print_table(["protocol", "senders", "batch", "records", "seconds", "records/s"], rows)
    print(f"gateway peak RSS (VmHWM): {peak / 1024 if peak else 0:.0f} MiB")


if __name__ == "__main__":
    main()
