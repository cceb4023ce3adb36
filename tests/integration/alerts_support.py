"""Real receivers on loopback for the alert delivery tests, and a runner harness.

The HTTP receiver is the standard library's threading HTTP server: it records every
request (path, headers, body), verifies the webhook's HMAC signature with the shared
secret, and answers with the status its path asks for (``/down`` answers 503)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common.settings import get_settings
from detections.sinks.elasticsearch import connect, ensure_findings_index, write_documents
from sigstream import __version__
from triage.alerts.destinations import SenderContext
from triage.alerts.destinations.http import verify
from triage.alerts.runner import AlertConfig, RoutesWatcher, Runner

SECRET = "test-hmac-secret"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    signed_ok: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, path: str, count: int, timeout: float = 60.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.on(path)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path}: {len(self.on(path))} of {count} requests in {timeout}s")


@contextmanager
def http_receiver(delay_s: float = 0.0) -> Iterator[HttpReceiver]:
    receiver: HttpReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            lower = {k.lower(): v for k, v in headers.items()}
            ok = verify(
                SECRET,
                {
                    "X-Sigstream-Timestamp": lower.get("x-sigstream-timestamp"),
                    "X-Sigstream-Signature": lower.get("x-sigstream-signature"),
                },
                body,
            )
            if delay_s:
                time.sleep(delay_s)
            with receiver.lock:
                receiver.requests.append(Request(self.path, lower, body, ok))
            status = 503 if self.path.startswith("/down") else 200
            if self.path.startswith("/signed") and not ok:
                status = 401
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = HttpReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def alert_config(unique: str, **overrides: Any) -> AlertConfig:
    values: dict[str, Any] = {
        "findings_index": f"test-{unique}-findings",
        "log_index": f"test-{unique}-alerts-log",
        "dead_index": f"test-{unique}-alerts-dead",
        "state_index": f"test-{unique}-alerts-state",
        "poll_s": 0.2,
        "overlap_s": 30.0,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
        "recover_every_s": 1.0,
        "base_url": "http://triage.test:8000",
    }
    values.update(overrides)
    return AlertConfig(**values)


def write_findings(unique: str, docs: list[tuple[str, dict[str, Any]]]) -> None:
    index = f"test-{unique}-findings"
    with connect(get_settings().es_hosts) as es:
        ensure_findings_index(es, index)
        write_documents(es, index, docs)
        es.indices.refresh(index=index)


def make_runner(cfg: AlertConfig, routes: Path, environ: dict[str, str] | None = None) -> Runner:
    watcher = RoutesWatcher(routes)
    assert watcher.poll(), watcher.error
    assert watcher.routes is not None
    ctx = SenderContext(
        timeout_s=5.0,
        kafka_config={"bootstrap.servers": get_settings().kafka_bootstrap},
        environ={"HOOK_SECRET": SECRET, **(environ or {})},
        product_version=__version__,
    )
    es = connect(get_settings().es_hosts)
    runner = Runner(cfg, es, watcher, ctx, datetime(1970, 1, 1, tzinfo=UTC))
    runner._apply_routes(watcher.routes)
    return runner


def run_once(runner: Runner, timeout: float = 60.0) -> None:
    """Run until nothing new arrives and the queues are empty (``--once``)."""
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), kwargs={"once": True}, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        stop.set()
        thread.join(10)
        raise AssertionError(f"the runner did not finish within {timeout}s")


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
