"""Property-based tests of the triage API's front door and its free-text bounds: whatever
the headers, framing and body, the guard answers with a known status and a reason, never
reads a body it refuses, never hands the app more than the cap; whatever ``q``, the check
accepts it or refuses it with QueryRejected, and what it accepts is within the bounds."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import fuzz_support  # noqa: F401  (hypothesis profiles)
from triage.auth import KeyStore
from triage.guard import CSP, GuardLimits, RequestGuard
from triage.queries import QueryRejected, TextLimits, check_text

pytestmark = pytest.mark.fuzz

KEYS = KeyStore({"good": {"tenant": "acme", "role": "analyst", "user": "a"}})
CAP = 1000
LIMITS = TextLimits()
HEADER_NAMES = st.sampled_from(
    [
        *(b"content-length", b"transfer-encoding", b"x-api-key", b"authorization"),
        *(b"content-type", b"x-other"),
    ]
)
HEADER_VALUES = st.one_of(
    st.binary(max_size=30),
    st.integers(0, 10**12).map(lambda n: str(n).encode()),
    st.sampled_from([b"good", b"Bearer good", b"chunked", b"bearer good", b"-1", b" 5"]),
)


@given(
    path=st.sampled_from(["/", "/api", "/api/me", "/api/findings/x/notes", "/static/a", "/apix"]),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    chunks=st.lists(st.binary(max_size=600), max_size=6),
)
def test_guard_answers_every_request(
    path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> None:
    received: list[bytes] = []
    app_bodies: list[bytes] = []
    sent: list[dict[str, Any]] = []
    pending = list(chunks)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        app_bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        chunk = pending.pop(0) if pending else b""
        received.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    guard = RequestGuard(app, KEYS, GuardLimits(max_body_bytes=CAP, body_timeout_s=5))
    asyncio.run(guard(scope, receive, send))

    status = sent[0]["status"]
    assert status in (200, 400, 401, 413)
    assert dict(sent[0]["headers"])[b"content-security-policy"] == CSP.encode()
    if status != 200:
        assert json.loads(sent[1]["body"])["detail"]
        assert not app_bodies
    if status == 401:
        assert path == "/api" or path.startswith("/api/")
        assert received == []  # refused from the headers alone
    assert sum(len(c) for c in received) <= CAP + 600  # stops at the first chunk past it
    for body in app_bodies:
        assert len(body) <= CAP


@given(st.text(max_size=700))
def test_check_text_accepts_within_bounds_or_says_why(text: str) -> None:
    try:
        check_text(text, LIMITS)
    except QueryRejected as exc:
        assert str(exc).startswith("q ")
        return
    assert len(text) <= LIMITS.max_chars
    assert text.count("*") <= LIMITS.max_wildcards
    assert len(re.findall(r"[^\s~]~", text)) <= LIMITS.max_fuzzy


@given(st.lists(st.sampled_from(["a", "b~", "c~2", "d*", '"', "(", ")", "-", "|", "+", " "])))
def test_check_text_on_operator_soup(parts: list[str]) -> None:
    text = " ".join(parts)
    try:
        check_text(text, LIMITS)
    except QueryRejected as exc:
        assert "at most" in str(exc) or "control" in str(exc)
