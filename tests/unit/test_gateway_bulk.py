"""The Elasticsearch bulk API at the gateway, without services: credentials as shippers
send them, bulk bodies -> operations, per-item answers, the handshake and the probes."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingest.gateway import bulk
from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.auth import token_from_header
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import BatchError, Identity, Limits
from ingest.gateway.pipeline import Outcome
from tests.unit.gateway_helpers import event
from tests.unit.memory_sink import MemorySink

TOKEN = "sst_0123456789abcdef_" + "s" * 43
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- credentials ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",
        f"ApiKey {TOKEN}",
        f"ApiKey {b64('anything:' + TOKEN)}",
        f"ApiKey {b64('0123456789abcdef:' + 's' * 43)}",  # key id : secret
        f"Basic {b64('syslog-ng:' + TOKEN)}",
        f"Basic {b64(':' + TOKEN)}",
        f"Basic {b64('0123456789abcdef:' + 's' * 43)}",
    ],
)
def test_every_shipper_spelling_of_the_token(header: str) -> None:
    assert token_from_header(header) == TOKEN


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Digest abc",
        f"Basic {TOKEN}",  # not base64 of user:password
        f"Basic {b64('user-without-colon')}",
        f"Basic {b64('user:not-a-token')}",
        f"ApiKey {b64('id:not-a-token')}",
        "ApiKey %%%",
        "Bearer " + "x" * 5000,  # bounded before anything is looked at
    ],
)
def test_headers_without_a_token(header: str | None) -> None:
    assert token_from_header(header) is None


# -- bulk bodies ------------------------------------------------------------------------


def body(*lines: Any) -> bytes:
    return b"".join(
        (ln if isinstance(ln, bytes) else json.dumps(ln).encode()) + b"\n" for ln in lines
    )


def test_pairs_become_operations_numbered_in_order() -> None:
    ops = bulk.parse_bulk(
        body(
            {"index": {"_index": "winlogbeat-8", "_id": "a"}},
            {"x": 1},
            {"create": {}},
            {"y": 2},
            {"delete": {"_id": "z"}},
            {"update": {"_id": "u"}},
            {"doc": {"a": 1}},
            {"create": {}},
            b"{broken",
        )
        + b"\n\n",  # trailing blank lines are allowed
        None,
        Limits(),
        "logs",
    )
    assert [(o.number, o.action, o.index, o.doc_id) for o in ops] == [
        (1, "index", "winlogbeat-8", "a"),
        (2, "create", "logs", None),
        (3, "delete", "logs", "z"),
        (4, "update", "logs", "u"),
        (5, "create", "logs", None),
    ]
    assert [o.carries_event for o in ops] == [True, True, False, False, True]
    assert ops[4].source == b"{broken"
    assert ops[2].error and ops[2].error[0] == 400


@pytest.mark.parametrize(
    "lines, reason",
    [
        ([b"not json"], "x_content_parse_exception"),
        ([{"index": {}, "create": {}}], "illegal_argument_exception"),
        ([{"upsert": {}}], "illegal_argument_exception"),
        ([{"index": "x"}], "illegal_argument_exception"),
        ([[1, 2]], "illegal_argument_exception"),
    ],
)
def test_a_malformed_action_line_refuses_the_body(lines: list[Any], reason: str) -> None:
    with pytest.raises(BatchError) as info:
        bulk.parse_bulk(body(*lines), None, Limits())
    assert (info.value.status, info.value.reason) == (400, reason)


def test_bounds_apply_to_bulk_bodies() -> None:
    limits = Limits(max_events=3, max_event_bytes=64)
    many = body(*[ln for _ in range(4) for ln in ({"create": {}}, {"a": 1})])
    with pytest.raises(BatchError) as info:
        bulk.parse_bulk(many, None, limits)
    assert info.value.status == 413
    bomb = gzip.compress(b"x" * (Limits().max_decoded_bytes + 1))
    with pytest.raises(BatchError) as info:
        bulk.parse_bulk(bomb, "gzip", Limits())
    assert info.value.reason == "decoded_too_large"
    big = bulk.parse_bulk(body({"create": {}}, {"a": "x" * 200}), None, limits)
    assert big[0].source_length > 64 and len(big[0].source or b"") == 64
    batch = bulk.to_batch(big, Identity("acme", "ws01"), limits, NOW)
    assert [r.reason for r in batch.rejects] == ["event_too_large"]
    missing = bulk.parse_bulk(body({"create": {}}), None, limits)
    assert missing[0].error and missing[0].error[0] == 400


def test_sources_become_items_numbered_by_operation() -> None:
    ops = bulk.parse_bulk(
        body({"delete": {}}, {"create": {}}, event(1), {"create": {}}, b"[1]", {"index": {}}, b"{"),
        None,
        Limits(),
    )
    batch = bulk.to_batch(ops, Identity("acme", "ws01"), Limits(), NOW)
    assert [(e.line, e.event_id) for e in batch.events] == [(2, "ws01-000001")]
    assert [(r.line, r.reason) for r in batch.rejects] == [
        (3, "not_an_object"),
        (4, "invalid_json"),
    ]


def test_answer_statuses_say_what_to_retry() -> None:
    ops = [
        bulk.BulkOp(1, "create", "i", source=b"{}"),
        bulk.BulkOp(2, "create", "i", source=b"{}"),
        bulk.BulkOp(3, "index", "i", source=b"{}"),
        bulk.BulkOp(4, "delete", "i", error=(400, "action_request_validation_exception", "no")),
        bulk.BulkOp(5, "index", "i", source=b"{}"),
    ]
    outcomes = {
        1: Outcome(1, "accepted", "e1"),
        2: Outcome(2, "duplicate", "e2"),
        3: Outcome(3, "rejected", None, "unknown_layout", "keys: a, b"),
        5: Outcome(5, "kafka_refused", None, "kafka_refused", "too large"),
    }
    doc = bulk.answer(ops, outcomes, 3)
    assert doc["errors"] is True and doc["took"] == 3
    statuses = [(next(iter(i)), next(iter(i.values()))["status"]) for i in doc["items"]]
    assert statuses == [
        ("create", 201),
        ("create", 200),
        ("index", 400),
        ("delete", 400),
        ("index", 400),
    ]
    assert doc["items"][0]["create"]["_id"] == "e1"
    assert doc["items"][0]["create"]["result"] == "created"
    assert doc["items"][1]["create"]["result"] == "noop"
    err = doc["items"][2]["index"]["error"]
    assert err["sigstream_reason"] == "unknown_layout" and "keys: a, b" in err["reason"]
    ok = bulk.answer(ops[:2], outcomes, 1)
    assert ok["errors"] is False


def test_handshake_and_error_shapes() -> None:
    hello = bulk.handshake()
    assert hello["version"]["number"].startswith("8.")
    assert hello["version"]["build_flavor"] == "default"
    assert hello["tagline"] == "You Know, for Search"
    err = bulk.error_body(429, "rate_limited", "slow down")
    assert err["status"] == 429 and err["error"]["type"] == "es_rejected_execution_exception"
    assert err["error"]["root_cause"][0]["sigstream_reason"] == "rate_limited"


# -- the routes (in-memory sink) -----------------------------------------------------------


@dataclass
class Es:
    http: TestClient
    sink: MemorySink
    token: str

    def bulk(self, data: bytes, path: str = "/_bulk", **headers: str) -> Any:
        headers.setdefault("Authorization", f"ApiKey {b64('shipper:' + self.token)}")
        headers.setdefault("Content-Type", "application/x-ndjson")
        return self.http.post(path, content=data, headers=headers)


@pytest.fixture
def es(tmp_path: Path) -> Iterator[Es]:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    with TestClient(create_app(store, sink, GatewayOptions())) as http:
        yield Es(http, sink, token)


def test_bulk_route_writes_answers_and_dedupes(es: Es) -> None:
    data = body({"create": {}}, event(1), {"create": {}}, b"{nope", {"delete": {}})
    resp = es.bulk(gzip.compress(data), "/logs-x/_bulk", **{"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-elastic-product"] == "Elasticsearch"
    doc = resp.json()
    assert [next(iter(i.values()))["status"] for i in doc["items"]] == [201, 400, 400]
    assert doc["items"][0]["create"]["_index"] == "logs-x"
    assert [e.event_id for e in es.sink.events] == ["ws01-000001"]
    assert [r.reason for _, r in es.sink.rejects] == ["invalid_json"]
    again = es.bulk(data, "/logs-x/_bulk")  # a shipper's retry: the event is a duplicate
    assert [next(iter(i.values()))["status"] for i in again.json()["items"]] == [200, 400, 400]
    assert len(es.sink.events) == 1


def test_bulk_refusals_are_whole_request_and_retryable(es: Es) -> None:
    es.sink.down = True
    resp = es.bulk(body({"create": {}}, event(1)))
    assert resp.status_code == 503 and resp.headers["retry-after"]
    assert resp.json()["status"] == 503
    bad = es.bulk(body(b"nope", {}))
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "x_content_parse_exception"


@pytest.mark.parametrize(
    "auth",
    [None, "Bearer sst_0123456789abcdef_" + "x" * 43, "Basic " + b64("u:wrong")],
)
def test_every_es_route_wants_a_credential(es: Es, auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    for method, path in [("GET", "/"), ("HEAD", "/"), ("GET", "/_license"), ("POST", "/_bulk")]:
        resp = es.http.request(method, path, headers=headers, content=b"{}\n")
        assert resp.status_code == 401, (method, path)
        assert resp.headers["x-elastic-product"] == "Elasticsearch"
        assert "ApiKey" in resp.headers.get_list("www-authenticate")


def test_probes_clients_make_before_sending(es: Es) -> None:
    auth = {"Authorization": f"Basic {b64('elastic:' + es.token)}"}
    hello = es.http.get("/", headers=auth)
    assert hello.status_code == 200 and hello.json()["tagline"] == "You Know, for Search"
    assert hello.headers["x-elastic-product"] == "Elasticsearch"
    assert es.http.head("/", headers=auth).status_code == 200
    assert es.http.get("/_license", headers=auth).json()["license"]["status"] == "active"
    assert es.http.get("/_xpack", headers=auth).json()["features"]["ilm"]["available"]
    assert es.http.get("/_cat/health", headers=auth).status_code == 200
    for path in ["/_index_template/winlogbeat-8", "/_ilm/policy/winlogbeat", "/_ingest/pipeline/p"]:
        assert es.http.get(path, headers=auth).status_code == 200, path
        assert es.http.head(path, headers=auth).status_code == 200, path
        put = es.http.put(path, headers=auth, json={"x": 1})
        assert put.json() == {"acknowledged": True}, path


def test_v1_events_takes_the_shippers_credentials_too(es: Es) -> None:
    data = body(event(5))
    for auth in (f"ApiKey {es.token}", f"Basic {b64('x:' + es.token)}"):
        resp = es.http.post("/v1/events", content=data, headers={"Authorization": auth})
        assert resp.status_code == 200, resp.text
    assert len(es.sink.events) == 1


def test_a_refused_batch_lists_every_item_with_the_refusal() -> None:
    ops = [bulk.BulkOp(1, "create", "i", source=b"{}"), bulk.BulkOp(2, "index", "i", source=b"{}")]
    doc = bulk.refusal_body(429, "rate_limited", "over 10 events/s", ops)
    assert doc["status"] == 429 and doc["error"]["type"] == "es_rejected_execution_exception"
    assert doc["errors"] is True
    assert [next(iter(i.values()))["status"] for i in doc["items"]] == [429, 429]
    assert "items" not in bulk.refusal_body(429, "rate_limited", "byte debt")


def test_bulk_authenticates_before_any_body_byte_is_read(tmp_path: Path) -> None:
    """Drive the ASGI app directly: a bad credential is a 401 without ``receive`` ever
    being called; a good one with a body declared over the cap is a 413, still unread."""
    import asyncio

    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    app = create_app(store, MemorySink())

    async def call(auth: bytes) -> tuple[int, int]:
        reads = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": body({"create": {}}, event(1))}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/_bulk",
            "raw_path": b"/_bulk",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"authorization", auth), (b"content-length", b"1073741824")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        return sent[0]["status"], reads

    assert asyncio.run(call(b"Basic " + b64("u:sst_0000000000000000_" + "x" * 43).encode())) == (
        401,
        0,
    )
    assert asyncio.run(call(b"")) == (401, 0)
    assert asyncio.run(call(f"ApiKey {token}".encode())) == (413, 0)
