"""Syslog over TCP+TLS: framing (octet-counting and newline), RFC 5424 / 3164 headers,
and the listener's outcomes, auth and bounds (in-memory sink; Kafka and real shippers in
tests/integration/test_shippers_otlp_syslog.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.gateway import syslog
from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.server import free_port
from ingest.gateway.syslog_server import SyslogOptions
from ingest.gateway.tls import generate_self_signed
from tests.unit.gateway_helpers import event
from tests.unit.memory_sink import MemorySink

# -- framing -------------------------------------------------------------------------------


def frames(
    stream: bytes, max_message: int = 20, step: int | None = None
) -> list[tuple[bytes, int]]:
    framer = syslog.Framer(max_message)
    out: list[syslog.Frame] = []
    step = step or len(stream)
    for i in range(0, len(stream), step):
        out += framer.feed(stream[i : i + step])
    return [(f.data, f.size) for f in out]


STREAM = b"5 hello3 abc\nline1\r\n\n\n30 " + b"x" * 30 + b"ok\n" + b"y" * 50 + b"\nend\n"
EXPECTED = [
    (b"hello", 5),
    (b"abc", 3),
    (b"line1", 5),
    (b"x" * 20, 30),
    (b"ok", 2),
    (b"y" * 20, 50),
    (b"end", 3),
]


@pytest.mark.parametrize("step", [None, 1, 7])
def test_framing_mixed_and_over_long(step: int | None) -> None:
    assert frames(STREAM, step=step) == EXPECTED


def test_framing_bad_length_prefix_is_fatal() -> None:
    with pytest.raises(syslog.FramingError):
        frames(b"12x <13>hello\n")
    with pytest.raises(syslog.FramingError):
        frames(b"12345678901 ")


def test_framer_holds_at_most_one_message() -> None:
    framer = syslog.Framer(100)
    list(framer.feed(b"z" * 10_000))
    assert framer.buffered <= 101
    assert list(framer.feed(b"\n")) == [syslog.Frame(b"z" * 100, 10_000)]


def test_many_blank_lines_do_not_recurse() -> None:
    assert frames(b"\n" * 200_000 + b"a\n") == [(b"a", 1)]


# -- headers -------------------------------------------------------------------------------


def test_rfc5424_with_structured_data_and_bom() -> None:
    data = (
        b"<134>1 2024-01-01T00:00:00.123456+01:00 host1 app 42 ID7 "
        b'[sigstream@32473 token="sst_a_b"]'
        b'[x@1 a="q\\]\\"\\\\"] \xef\xbb\xbf{"a":1}'
    )
    msg = syslog.parse_message(data)
    assert (msg.rfc, msg.facility, msg.severity) == (5424, 16, 6)
    assert msg.hostname == "host1" and msg.app_name == "app"
    assert msg.structured_data["x@1"] == {"a": 'q]"\\'}
    assert syslog.token_of(msg) == "sst_a_b"
    assert msg.msg == b'{"a":1}'


def test_rfc5424_nil_values_and_no_msg() -> None:
    msg = syslog.parse_message(b"<0>1 - - - - - -")
    assert msg.timestamp is None and msg.hostname is None and msg.msg == b""


def test_rfc3164() -> None:
    msg = syslog.parse_message(b'<13>Dec  6 06:00:00 web01 nxlog[12]: {"x":1}')
    assert (msg.rfc, msg.hostname, msg.app_name, msg.msg) == (3164, "web01", "nxlog", b'{"x":1}')


@pytest.mark.parametrize(
    "data",
    [
        b"no pri",
        b"<192>1 - - - - - -",
        b"<13>1 2024-13-01 host a - - -",
        b"<13>1 - " + b"h" * 256 + b" a - - -",
        b'<13>1 - h a - - [bad id="x"',
        b'<13>1 - h a - - [id a="un]escaped"]',
        b"<13>1 - h a - -",
        b"<13>Foo  6 06:00:00 web01 x",
    ],
)
def test_bad_headers(data: bytes) -> None:
    with pytest.raises(syslog.SyslogError):
        syslog.parse_message(data)


# -- the listener --------------------------------------------------------------------------


@dataclass
class Listener:
    port: int
    sink: MemorySink
    store: CredentialStore
    token: str
    ctx: ssl.SSLContext
    totals: object

    def send(self, *messages: bytes) -> None:
        """One connection: send, half-close, read until the gateway closes (as a shipper
        that stops does; an abrupt close with unread TLS tickets is a reset)."""
        with self.connect() as conn:
            conn.sendall(b"".join(messages))
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while conn.recv(1024):
                    pass

    def connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed(cert, key, ["127.0.0.1"])
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    port = free_port()
    opts = SyslogOptions(
        port,
        cert=cert,
        key=key,
        idle_timeout_s=2,
        frame_timeout_s=1,
        max_connections=2,
        batch_wait_s=0.05,
    )
    app = create_app(store, sink, GatewayOptions(), syslog=opts)
    ctx = ssl.create_default_context(cafile=str(cert))
    with TestClient(app):
        yield Listener(port, sink, store, token, ctx, app.state.gateway.totals)


def rfc5424(doc: object, token: str | None, host: str = "ws01") -> bytes:
    sd = f'[sigstream@32473 token="{token}"]' if token else "-"
    msg = doc if isinstance(doc, str) else json.dumps(doc)
    return f"<134>1 2024-01-01T00:00:00Z {host} app - - {sd} {msg}".encode()


def octet(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


def wait_for(check, timeout: float = 10.0, state: Listener | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            seen = (state.sink.events, state.sink.rejects, state.totals) if state else None
            raise AssertionError(f"condition not met in time: {seen}")
        time.sleep(0.02)


def test_messages_events_and_rejects_with_reasons(listener: Listener) -> None:
    listener.send(
        octet(rfc5424(event(1), listener.token)),
        rfc5424(event(2), None) + b"\n",  # bound to the connection's credential
        rfc5424("plain text", None) + b"\n",  # a Linux log entry: a linux_log event
        rfc5424("[1, 2]", None) + b"\n",
        b"<13>garbage\n",
        rfc5424(event(3, tenant_id="globex"), None) + b"\n",
        octet(rfc5424("x" * 300_000, None)),
    )
    wait_for(lambda: len(listener.sink.events) + len(listener.sink.rejects) == 7, state=listener)
    assert [e.event_id for e in listener.sink.events][:2] == ["ws01-000001", "ws01-000002"]
    text = listener.sink.events[2]
    assert text.event_type == "linux_log" and text.message == "plain text"  # type: ignore[attr-defined]
    assert (text.host, text.sensor_id, text.tenant_id) == ("ws01", "ws01", "acme")
    assert [r.reason for _, r in listener.sink.rejects] == [
        "not_an_object",
        "syslog_invalid",
        "tenant_mismatch",
        "message_too_large",
    ]
    assert all(i.tenant_id == "acme" for i, _ in listener.sink.rejects)


def test_no_token_or_wrong_token_closes_without_storing(listener: Listener) -> None:
    for token in (None, "sst_nope_nope"):
        with listener.connect() as conn:
            conn.sendall(rfc5424(event(1), token) + b"\n")
            conn.settimeout(5)
            assert conn.recv(10) == b""  # closed by the gateway
    assert listener.sink.events == [] and listener.sink.rejects == []


def test_revocation_ends_a_bound_connection(listener: Listener) -> None:
    with listener.connect() as conn:
        conn.sendall(rfc5424(event(1), listener.token) + b"\n")
        wait_for(lambda: len(listener.sink.events) == 1)
        listener.store.revoke("ws01")
        conn.sendall(rfc5424(event(2), None) + b"\n")
        conn.settimeout(5)
        assert conn.recv(10) == b""
    assert len(listener.sink.events) == 1


def test_kafka_down_holds_the_batch_and_retries(listener: Listener) -> None:
    listener.sink.down = True
    with listener.connect() as conn:
        conn.sendall(rfc5424(event(1), listener.token) + b"\n")
        time.sleep(0.5)
        assert listener.sink.events == []
        listener.sink.down = False
        wait_for(lambda: len(listener.sink.events) == 1, timeout=15)


def test_slow_sender_and_connection_limit(listener: Listener) -> None:
    with listener.connect() as conn:
        conn.sendall(b"<134>1 - ws01 app - - - {")  # never completed
        conn.settimeout(5)
        started = time.monotonic()
        assert conn.recv(10) == b""
        assert time.monotonic() - started < 4
    a, b = listener.connect(), listener.connect()
    try:
        c = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            s = listener.ctx.wrap_socket(c, server_hostname="127.0.0.1")
            s.settimeout(5)
            s.sendall(b"x\n")
            assert s.recv(10) == b""
            raise ConnectionError("closed")
    finally:
        a.close()
        b.close()
