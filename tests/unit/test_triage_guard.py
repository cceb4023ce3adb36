"""The triage API's front door without services: authentication from headers before any
body byte is read, body caps (declared and streamed), body deadline, security headers,
local-only API docs, and the bounds of the free text ``q``.

The app's Elasticsearch client points at a closed port: every request here must be
decided before a search is made."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient

from common.settings import Settings
from triage.api import create_app
from triage.auth import KeyStore
from triage.guard import CSP, GuardLimits, RequestGuard, api_key
from triage.queries import QueryRejected, TextLimits, check_text

KEYS = KeyStore(
    {
        "good-key": {"tenant": "acme", "role": "analyst", "user": "alice"},
        "viewer-key": {"tenant": "acme", "role": "read-only", "user": "victor"},
    }
)
NOWHERE = "http://127.0.0.1:9"  # nothing listens: a search would fail with 503


def _app(docs: bool = False, **settings: Any) -> Any:
    s = Settings(es_hosts=[NOWHERE], findings_index="test-guard", **settings)
    return create_app(s, KEYS, Elasticsearch(NOWHERE), docs=docs)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(_app()) as c:
        yield c


class Recorder:
    """ASGI receive/send that records what the app did; receive fails the test when the
    body must not be read."""

    def __init__(self, chunks: list[bytes] | None = None, forbid: bool = False) -> None:
        self.chunks = list(chunks or [])
        self.forbid = forbid
        self.receive_calls = 0
        self.done = False
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.receive_calls += 1
        if self.forbid:
            raise AssertionError("the body was read")
        if self.done:  # a response listening for the disconnect: the client stays
            await asyncio.sleep(3600)
        if not self.chunks:
            self.done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = self.chunks.pop(0)
        self.done = not self.chunks
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def detail(self) -> str:
        body = b"".join(m.get("body", b"") for m in self.sent[1:])
        return str(json.loads(body)["detail"])


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


def _call(app: Any, scope: dict[str, Any], rec: Recorder) -> None:
    asyncio.run(app(scope, rec.receive, rec.send))


BIG = str(150 * 1024 * 1024).encode()


@pytest.mark.parametrize(
    "framing",
    [[(b"content-length", BIG)], [(b"transfer-encoding", b"chunked")]],
    ids=["content-length", "chunked"],
)
@pytest.mark.parametrize(
    "auth", [[], [(b"x-api-key", b"wrong")], [(b"authorization", b"Bearer nope")]]
)
def test_unauthenticated_post_is_refused_without_reading_the_body(
    framing: list[tuple[bytes, bytes]], auth: list[tuple[bytes, bytes]]
) -> None:
    rec = Recorder(forbid=True)
    headers = [(b"content-type", b"application/json"), *framing, *auth]
    _call(_app(), _scope("POST", "/api/findings/abc/notes", headers), rec)
    assert rec.receive_calls == 0
    assert rec.status == 401 and rec.detail == "missing or unknown API key"
    assert rec.headers[b"connection"] == b"close"  # the unread body is dropped, not drained


def test_declared_oversize_body_is_refused_before_reading() -> None:
    rec = Recorder(forbid=True)
    headers = [(b"x-api-key", b"good-key"), (b"content-length", BIG)]
    _call(_app(), _scope("POST", "/api/findings/abc/notes", headers), rec)
    assert rec.receive_calls == 0
    assert rec.status == 413
    assert rec.detail == "request body of 157,286,400 bytes; at most 262,144"


def test_streamed_body_is_counted_and_stopped_at_the_cap() -> None:
    chunk = b"a" * 65536
    rec = Recorder(chunks=[chunk] * 2000)  # 131 MB if it were all read
    headers = [(b"authorization", b"Bearer good-key"), (b"transfer-encoding", b"chunked")]
    _call(_app(), _scope("POST", "/api/findings/abc/notes", headers), rec)
    assert rec.status == 413 and "over 262,144 bytes" in rec.detail
    assert rec.receive_calls == 262_144 // 65536 + 1  # stopped at the first chunk past it
    assert rec.headers[b"connection"] == b"close"


def test_cap_is_a_setting_and_applies_to_every_route() -> None:
    app = _app(api_max_body_bytes=10)
    for path in ("/", "/static/app.js", "/openapi.json", "/api/me"):
        rec = Recorder(forbid=True)
        headers = [(b"x-api-key", b"good-key"), (b"content-length", b"11")]
        _call(app, _scope("POST", path, headers), rec)
        assert (rec.status, rec.receive_calls) == (413, 0), path


def test_slow_body_gets_408() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    guard = RequestGuard(app, KEYS, GuardLimits(max_body_bytes=1000, body_timeout_s=0.2))
    sent: list[dict[str, Any]] = []

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.15)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    headers = [(b"x-api-key", b"good-key"), (b"content-length", b"500")]
    asyncio.run(guard(_scope("POST", "/api/me", headers), trickle, send))
    assert sent[0]["status"] == 408
    assert b"not received within 0.2 s" in sent[1]["body"]


def test_body_within_the_cap_reaches_the_app_once() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(app, KEYS, GuardLimits(max_body_bytes=10))
    rec = Recorder(chunks=[b"12345", b"6789"])
    headers = [(b"x-api-key", b"good-key"), (b"transfer-encoding", b"chunked")]
    asyncio.run(guard(_scope("POST", "/api/x", headers), rec.receive, rec.send))
    assert seen == [{"type": "http.request", "body": b"123456789", "more_body": False}]
    assert rec.status == 200


def test_api_key_is_read_from_either_header() -> None:
    assert api_key([(b"x-api-key", b"k1")]) == "k1"
    assert api_key([(b"authorization", b"Bearer k2")]) == "k2"
    assert api_key([(b"authorization", b"Basic k3")]) == ""
    assert api_key([]) == ""


def test_the_api_still_works_through_the_guard(client: TestClient) -> None:
    me = client.get("/api/me", headers={"X-API-Key": "good-key"})
    assert me.json() == {"user": "alice", "role": "analyst", "tenant": "acme"}
    assert client.get("/api/me", headers={"Authorization": "Bearer viewer-key"}).status_code == 200
    assert client.get("/api/me").status_code == 401
    # A read-only key passes the guard and is still refused by the route's role check.
    resp = client.post(
        "/api/findings/x/notes", json={"text": "n"}, headers={"X-API-Key": "viewer-key"}
    )
    assert resp.status_code == 403
    # Validation still answers 422 for a small bad body, saying where and why.
    resp = client.post("/api/findings/x/close", json={"resolution": 1}, headers=_k())
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "resolution"]


def test_a_body_that_is_not_utf8_is_422_not_500(client: TestClient) -> None:
    """Found by the request-path fuzzer: FastAPI's handler echoed the bytes and failed."""
    for body in (b"\x80", b'{"text": "\xff"}', b"\xfe\xff{"):
        resp = client.post("/api/findings/x/notes", content=body, headers=_k())
        assert resp.status_code == 422, resp.text
        assert "input" not in resp.text


def _k() -> dict[str, str]:
    return {"X-API-Key": "good-key"}


# --- security headers, docs -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/me", "/openapi.json", "/nope"])
def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    for headers in ({}, _k()):
        resp = client.get(path, headers=headers)
        assert resp.headers["content-security-policy"] == CSP
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in resp.headers  # plain HTTP here


def test_csp_is_strict() -> None:
    rules = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert rules["default-src"] == "'self'"
    assert rules["frame-ancestors"] == "'none'"
    assert rules["script-src"] == "'self'" and rules["style-src"] == "'self'"
    assert "unsafe" not in CSP and "http" not in CSP


def test_hsts_over_https() -> None:
    rec = Recorder()
    _call(_app(), {**_scope("GET", "/", []), "scheme": "https"}, rec)
    assert rec.headers[b"strict-transport-security"] == b"max-age=31536000"


def test_page_has_no_inline_script_or_style(client: TestClient) -> None:
    html = client.get("/").text
    assert "<script src=" in html and "<script>" not in html
    assert "<style" not in html and " style=" not in html and " on" + "click=" not in html


def test_docs_are_off_by_default_and_local_when_on() -> None:
    with TestClient(_app()) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200
    with TestClient(_app(docs=True)) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "cdn" not in page.text and "<script>" not in page.text
        assert page.headers["content-security-policy"] == CSP
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert c.get(asset).status_code == 200, asset
        assert "SwaggerUIBundle" in c.get("/static/docs.js").text
        assert c.get("/redoc").status_code == 404


# --- q bounds ---------------------------------------------------------------------------

LIMITS = TextLimits()


@pytest.mark.parametrize(
    ("q", "reason"),
    [
        (" ".join(f"powershel{i}~2" for i in range(2000)), "characters; at most 512"),
        (" ".join(f"w{i}" for i in range(33)), "33 terms; at most 32"),
        ("a~ b~1 c~2 d~ e~", "5 fuzzy (~) terms; at most 4"),
        ('"a b"~9 "c d"~9 "e f"~9 "g h"~9 "i j"~9', "5 fuzzy (~) terms"),
        ("a* b* c* d* e*", "5 wildcard (*) terms; at most 4"),
        ("(" * 9 + "a" + ")" * 9, "nests parentheses 9 deep; at most 8"),
        ("a\x00b", "control characters"),
    ],
)
def test_q_over_the_bounds_is_refused_with_the_reason(q: str, reason: str) -> None:
    with pytest.raises(QueryRejected, match=re.escape(reason)):
        check_text(q, LIMITS)


@pytest.mark.parametrize(
    "q",
    [
        "powershell -enc hidden",
        "powershel~2 encoded~2 comand~ winwrd~1",
        'explorer* | "winword.exe powershell"~2 -(net* user*)',
        " ".join(f"w{i}" for i in range(32)),
    ],
)
def test_q_within_the_bounds_is_accepted(q: str) -> None:
    check_text(q, LIMITS)


def test_q_bounds_are_settings() -> None:
    with pytest.raises(QueryRejected, match="2 terms; at most 1"):
        check_text("a b", TextLimits(max_terms=1))


def test_the_api_answers_400_for_q_over_the_bounds_without_searching(
    client: TestClient,
) -> None:
    q = " ".join(f"powershel{i}~2" for i in range(20))
    resp = client.get(f"/api/findings?q={quote(q)}", headers=_k())
    assert resp.status_code == 400
    assert "fuzzy (~) terms; at most 4" in resp.json()["detail"]
    resp = client.get("/api/findings?" + "&".join(["level=high"] * 11), headers=_k())
    assert resp.status_code == 400 and "at most 10 level values" in resp.json()["detail"]
    resp = client.get(f"/api/findings?host={'h' * 300}", headers=_k())
    assert resp.status_code == 422


def test_elasticsearch_down_is_503_with_a_reason(client: TestClient) -> None:
    resp = client.get("/api/findings?q=powershell", headers=_k())
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    assert resp.json()["detail"].startswith("Elasticsearch unavailable")
