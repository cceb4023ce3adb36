"""Hostile requests against a real ``sigstream findings serve`` process and the real
Elasticsearch: huge bodies (with and without a key), slow connections past the limit,
expensive free text, HTTPS with a self-signed certificate; and a fuzzer of the whole
request path (random headers, query strings, bodies: never a 5xx).

Before the guard (measured on the same machine): an unauthenticated 150 MB POST took the
server from 111 to 562 MB before its 401, an authenticated one to 853 MB and 105 s (a 422
echoing the input); 300 connections trickling headers stayed open indefinitely; 2,000
fuzzy terms took 10 s."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.settings import Settings
from ingest.gateway.tls import generate_self_signed
from tests.integration import triage_seed
from tests.unit import fuzz_support  # noqa: F401  (hypothesis profiles)
from triage.api import create_app
from triage.auth import KeyStore

pytestmark = pytest.mark.integration
#: The stack the ``services`` fixture runs (SIGSTREAM_ES_HOSTS; 127.0.0.1:9200 by default).
HOSTS = Settings().es_hosts
#: Ports no other test uses (the gateway tests take free ephemeral ports).
PORTS = range(18450, 18500)
KEY = "sk-hostile-acme"
MB = 1024 * 1024


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def _mem(pid: int, field: str) -> int:
    """VmRSS / VmHWM (peak) of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise LookupError(field)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    tls_cert: Path | None = None


@pytest.fixture
def seeded(services: dict[str, Any], unique: str) -> Iterator[triage_seed.Seeded]:
    s = triage_seed.seed(HOSTS, f"test-{unique}-findings", f"test-{unique}-events")
    yield s
    triage_seed.drop(HOSTS, s)


def _serve(
    seeded: triage_seed.Seeded, tmp_path: Path, extra: list[str], env: dict[str, str]
) -> Iterator[Served]:
    keys = tmp_path / "keys.yml"
    keys.write_text(f"{KEY}: {{tenant: acme, role: analyst, user: alice}}\n")
    port = _free_port()
    full_env = {
        **os.environ,
        "SIGSTREAM_API_KEYS_FILE": str(keys),
        "SIGSTREAM_FINDINGS_INDEX": seeded.index,
        "SIGSTREAM_EVENTS_INDEX": seeded.events_index,
        **env,
    }
    cmd = [sys.executable, "-c", "from sigstream.cli import app; app()", "findings", "serve"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), *extra], env=full_env, stdout=log, stderr=log
    )
    tls = "--tls-cert" in extra
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((tmp_path / "serve.log").read_text()) from None
            time.sleep(0.2)
    cert = Path(extra[extra.index("--tls-cert") + 1]) if tls else None
    try:
        yield Served(proc, port, url, cert)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def served(seeded: triage_seed.Seeded, tmp_path: Path) -> Iterator[Served]:
    yield from _serve(
        seeded,
        tmp_path,
        [],
        {"SIGSTREAM_API_MAX_CONNECTIONS": "20", "SIGSTREAM_API_HEADER_TIMEOUT_S": "2"},
    )


def _post_huge(port: int, headers: str, size: int) -> tuple[str, int]:
    """Send a POST of ``size`` bytes (chunked when the headers say so) as fast as the
    server takes it; (status line, bytes the server accepted before it closed)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        f"POST /api/findings/x/notes HTTP/1.1\r\nHost: t\r\n{headers}"
        "Content-Type: application/json\r\n\r\n".encode()
    )
    chunk, sent = b"a" * MB, 0
    if "chunked" in headers:
        chunk = b"%x\r\n%s\r\n" % (MB, chunk)
    try:
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed: expected
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except OSError:
        pass
    sock.close()
    return answer.split(b"\r\n", 1)[0].decode(), sent


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (f"Content-Length: {150 * MB}\r\n", "401"),
        ("Transfer-Encoding: chunked\r\n", "401"),
        (f"X-API-Key: {KEY}\r\nContent-Length: {150 * MB}\r\n", "413"),
    ],
    ids=["unauthenticated", "unauthenticated-chunked", "authenticated-oversize"],
)
def test_150mb_post_is_refused_with_memory_under_the_bound(
    served: Served, headers: str, status: str
) -> None:
    before = _mem(served.proc.pid, "VmRSS")
    t0 = time.monotonic()
    line, sent = _post_huge(served.port, headers, 150 * MB)
    elapsed = time.monotonic() - t0
    peak = _mem(served.proc.pid, "VmHWM")
    assert line.split(" ")[1:2] == [status], line
    assert peak - before < 40, f"peak {peak} MB from {before} MB"
    assert sent < 150 * MB and elapsed < 30  # dropped, not drained
    # And the server still answers.
    r = httpx.get(f"{served.url}/api/me", headers={"X-API-Key": KEY}, timeout=10)
    assert r.status_code == 200


def test_authenticated_streamed_oversize_is_413_while_streaming(served: Served) -> None:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    sock.sendall(
        f"POST /api/findings/x/notes HTTP/1.1\r\nHost: t\r\nX-API-Key: {KEY}\r\n"
        "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n".encode()
    )
    piece = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
    try:
        for _ in range(2000):
            sock.sendall(piece)
    except OSError:
        pass
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body over 262,144 bytes" in answer


def test_slow_connections_beyond_the_limit_are_refused_and_timed_out(served: Served) -> None:
    """Cap 20 connections, 2 s to send the headers: 40 slow clients trickling a header."""
    slow: list[socket.socket] = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        s.sendall(b"GET /api/me HTTP/1.1\r\nHost: t\r\n")
        slow.append(s)
    t0 = time.monotonic()
    answers: dict[str, int] = {}
    for s in slow:
        closed_at = None
        data = b""
        while time.monotonic() - t0 < 15:
            try:  # read what the server said before trickling more (a write after its
                s.settimeout(0.3)  # close would reset the connection and lose the answer)
                got = s.recv(4096)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    s.sendall(b"X-Slow: 1\r\n")
                continue
            except OSError:
                got = b""
            data += got
            if not got or data.endswith(b"}"):
                closed_at = time.monotonic() - t0
                break
        assert closed_at is not None, "a slow connection was still open after 15 s"
        key = data.split(b"\r\n", 1)[0].decode() or "closed"
        answers[key] = answers.get(key, 0) + 1
        s.close()
    assert answers.get("HTTP/1.1 503 Service Unavailable", 0) >= 19, answers
    assert answers.get("HTTP/1.1 408 Request Timeout", 0) >= 19, answers
    assert time.monotonic() - t0 < 15
    r = httpx.get(f"{served.url}/api/me", headers={"X-API-Key": KEY}, timeout=10)
    assert r.status_code == 200


def test_expensive_free_text_is_400_fast_and_reasonable_text_works(served: Served) -> None:
    h = {"X-API-Key": KEY}
    for q, reason in (
        (" ".join(f"powershel{i}~2" for i in range(2000)), "characters; at most 512"),
        (" ".join(f"w{i}" for i in range(40)), "40 terms; at most 32"),
        (" ".join(f"p{i}~2" for i in range(10)), "10 fuzzy (~) terms; at most 4"),
        ("a* b* c* d* e* f*", "6 wildcard (*) terms; at most 4"),
    ):
        t0 = time.monotonic()
        r = httpx.get(f"{served.url}/api/findings?q={quote(q)}", headers=h, timeout=30)
        assert r.status_code == 400 and reason in r.json()["detail"], r.text
        assert time.monotonic() - t0 < 2
    r = httpx.get(
        f"{served.url}/api/findings", params={"q": "powershel~2 hiden~1"}, headers=h, timeout=30
    )
    assert r.status_code == 200 and r.json()["total"] == 1 and r.json()["timed_out"] is False


@pytest.fixture
def served_tls(seeded: triage_seed.Seeded, tmp_path: Path) -> Iterator[Served]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    generate_self_signed(cert, key, ["localhost", "127.0.0.1"])
    yield from _serve(seeded, tmp_path, ["--tls-cert", str(cert), "--tls-key", str(key)], {})


def test_https_serve_with_a_self_signed_certificate(served_tls: Served) -> None:
    assert served_tls.url.startswith("https://") and served_tls.tls_cert
    ctx = ssl.create_default_context(cafile=str(served_tls.tls_cert))
    r = httpx.get(f"{served_tls.url}/api/me", headers={"X-API-Key": KEY}, verify=ctx, timeout=10)
    assert r.status_code == 200 and r.json()["tenant"] == "acme"
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    page = httpx.get(f"{served_tls.url}/", verify=ctx, timeout=10)
    assert page.status_code == 200 and "Sigstream findings" in page.text
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(f"{served_tls.url}/api/me", timeout=10)
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on the HTTPS port
        httpx.get(f"http://127.0.0.1:{served_tls.port}/api/me", timeout=10)


# --- fuzzing the whole request path on the real Elasticsearch --------------------------

KEYS = KeyStore({KEY: {"tenant": "acme", "role": "analyst", "user": "alice"}})
PATHS = st.sampled_from(
    [
        "/api/me",
        "/api/findings",
        "/api/findings/{id}",
        "/api/findings/{id}/ack",
        "/api/findings/{id}/close",
        "/api/findings/{id}/notes",
        "/api/findings/{id}/assign",
        "/api/suppressions",
        "/",
        "/static/app.js",
        "/openapi.json",
        "/api/findings/nope",
    ]
)
PARAMS = st.sampled_from(
    [
        *("q", "level", "status", "host", "rule", "assignee", "since", "until", "sort"),
        *("order", "page", "size", "window_minutes", "x"),
    ]
)
QUERY_TEXT = st.text(
    alphabet=st.sampled_from(list('ab~*"()+|-\\ 12/:%&=?\u00e9\U0001f600\x00'))
    | st.characters(blacklist_categories=("Cs",)),  # a URL cannot carry a lone surrogate
    max_size=80,
)
#: Raw query strings, sent as they are (percent-escapes of invalid UTF-8 included).
RAW_QUERY = st.lists(
    st.tuples(PARAMS, st.sampled_from(["%ED%A0%80", "%FF", "%", "%zz", "a%00b", "~2*", ""])),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@pytest.fixture
def fuzz_client(seeded: triage_seed.Seeded) -> Iterator[tuple[TestClient, str]]:
    s = Settings(
        findings_index=seeded.index, events_index=seeded.events_index, api_max_body_bytes=4096
    )
    with TestClient(create_app(s, KEYS), raise_server_exceptions=False) as c:
        yield c, seeded.acme_id


@pytest.mark.fuzz
def test_fuzz_requests_never_5xx(fuzz_client: tuple[TestClient, str]) -> None:
    client, fid = fuzz_client
    counted = {"examples": 0}

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
        path=PATHS,
        params=st.lists(st.tuples(PARAMS, QUERY_TEXT), max_size=6),
        headers=st.dictionaries(
            st.sampled_from(["content-type", "x-other", "accept", "authorization", "x-api-key"]),
            HEADER_VALUE,
            max_size=3,
        ),
        raw_query=RAW_QUERY,
        authed=st.booleans(),
        body=st.one_of(st.binary(max_size=6000), st.just(b'{"text": "n", "resolution": "benign"}')),
    )
    def check(
        method: str,
        path: str,
        params: list[tuple[str, str]],
        headers: dict[str, str],
        raw_query: str,
        authed: bool,
        body: bytes,
    ) -> None:
        counted["examples"] += 1
        if authed:
            headers = {**headers, "x-api-key": KEY}
        url = path.format(id=fid) + (f"?{raw_query}" if raw_query else "")
        resp = client.request(
            method,
            url,
            params=params or None,
            headers=headers,
            content=body if method not in ("GET", "HEAD") else None,
        )
        assert resp.status_code < 500, (resp.status_code, resp.text[:300])
        assert resp.headers["x-content-type-options"] == "nosniff"
        if path.startswith("/api/") and not authed and headers.get("x-api-key") != KEY:
            assert resp.status_code == 401 or "Bearer" in headers.get("authorization", "")

    check()
    print(f"fuzzed {counted['examples']} API requests")
    assert counted["examples"] >= 10
