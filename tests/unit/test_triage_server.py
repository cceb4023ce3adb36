"""The triage server's per-connection bounds on a real uvicorn socket (no services): the
request deadline cuts a client that trickles its headers but never a request the app is
still handling, is re-armed after each keep-alive response, and the connection cap answers
503 before parsing anything."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from triage.server import ConnectionLimits, uvicorn_config

PORTS = range(18400, 18450)  # this suite's own ports


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


async def slow_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers after ``?s`` seconds (0 by default)."""
    if scope["type"] != "http":
        return
    delay = float(scope["query_string"].decode() or 0)
    await asyncio.sleep(delay)
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def port() -> Iterator[int]:
    port = _free_port()
    limits = ConnectionLimits(max_connections=3, header_timeout_s=1.5, keep_alive_s=5)
    srv = uvicorn.Server(uvicorn_config(slow_app, "127.0.0.1", port, limits, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield port
    srv.should_exit = True
    thread.join(timeout=10)


def _read_response(s: socket.socket, timeout: float = 5) -> bytes:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith((b"ok", b"}")):
        got = s.recv(4096)
        if not got:
            break
        data += got
    return data


def test_a_request_the_app_handles_longer_than_the_deadline_completes(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /?3 HTTP/1.1\r\nHost: t\r\n\r\n")  # twice the deadline
        assert _read_response(s).startswith(b"HTTP/1.1 200")


def test_trickled_headers_get_408_and_the_deadline_is_rearmed_per_request(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(s).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # a second request well within the deadline: served
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(s).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        answer = b""
        s.settimeout(0.2)
        while time.monotonic() - t0 < 10:
            try:
                got = s.recv(4096)
            except TimeoutError:
                s.sendall(b"X-Slow: 1\r\n")
                continue
            if not got:
                break
            answer += got
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
        assert b"request headers not received within 1.5 s" in answer
        assert time.monotonic() - t0 < 6  # the deadline, not the 10 s the client would trickle


def test_connections_past_the_cap_get_503_at_once(port: int) -> None:
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            answer = _read_response(extra, timeout=2)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
        assert b"too many connections (at most 3)" in answer
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port)) as s:  # room again
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(s).startswith(b"HTTP/1.1 200")


def test_an_idle_connection_is_closed_without_an_unasked_answer(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        t0 = time.monotonic()
        assert s.recv(4096) == b""  # closed at the deadline, nothing written
        assert 1.2 < time.monotonic() - t0 < 6
