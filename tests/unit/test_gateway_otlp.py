"""OTLP/HTTP logs: request decoding (protobuf and the OTLP JSON mapping), record ->
document mapping, and ``POST /v1/logs`` answers (in-memory sink; Kafka is tested in
tests/integration/test_shippers_otlp_syslog.py)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from ingest.gateway import otlp
from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import BatchError, Limits
from tests.unit.gateway_helpers import event
from tests.unit.memory_sink import MemorySink


def request_of(bodies: list[AnyValue], host: str | None = None) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    if host:
        rl.resource.attributes.append(KeyValue(key="host.name", value=AnyValue(string_value=host)))
    scope = rl.scope_logs.add()
    for body in bodies:
        record = scope.log_records.add()
        record.body.CopyFrom(body)
        record.time_unix_nano = 1_700_000_000_000_000_000
    return req


def s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def to_kv(obj: dict[str, object]) -> AnyValue:
    values = []
    for key, value in obj.items():
        if isinstance(value, dict):
            values.append(KeyValue(key=key, value=to_kv(value)))
        elif isinstance(value, bool):
            values.append(KeyValue(key=key, value=AnyValue(bool_value=value)))
        elif isinstance(value, int):
            values.append(KeyValue(key=key, value=AnyValue(int_value=value)))
        else:
            values.append(KeyValue(key=key, value=AnyValue(string_value=str(value))))
    return AnyValue(kvlist_value=KeyValueList(values=values))


# -- pure ----------------------------------------------------------------------------------


def test_string_and_kvlist_bodies_become_documents_others_rejects() -> None:
    req = request_of(
        [
            s('{"a": 1}'),
            to_kv({"Channel": "Security", "EventID": 4624, "nested": {"x": True}}),
            s("plain text line"),
            s("[1, 2]"),
            AnyValue(int_value=5),
            AnyValue(),
        ]
    )
    out = otlp.documents(req, Limits())
    assert [d.index for d in out.documents] == [1, 2]
    assert out.documents[0].obj == {"a": 1} and out.documents[0].raw == b'{"a": 1}'
    assert out.documents[1].obj == {"Channel": "Security", "EventID": 4624, "nested": {"x": True}}
    assert [(r.index, r.reason) for r in out.rejects] == [
        (3, "not_json"),
        (4, "not_an_object"),
        (5, "unsupported_body"),
        (6, "empty_body"),
    ]
    assert json.loads(out.rejects[0].raw)["body"] == {"stringValue": "plain text line"}


def test_limits_reject_records_not_the_request() -> None:
    deep = "[" * 40 + "]" * 40
    req = request_of([s('{"x": ' + deep + "}"), s('{"big": "' + "a" * 300_000 + '"}')])
    out = otlp.documents(req, Limits())
    assert [r.reason for r in out.rejects] == ["too_deep", "event_too_large"]
    assert all(len(r.raw) <= Limits().max_event_bytes for r in out.rejects)


def test_host_filled_from_attributes_only_where_the_layout_lacks_it() -> None:
    req = request_of(
        [
            s('{"log_name": "Security", "event_id": 1}'),
            s('{"Channel": "Security", "EventID": 1}'),
            s('{"winlog": {"channel": "Security"}, "event": {"code": "1"}}'),
            s('{"Channel": "Security", "EventID": 1, "Hostname": "own"}'),
            s('{"event_type": "process_creation"}'),
        ],
        host="shipper-host",
    )
    docs = [d.obj for d in otlp.documents(req, Limits()).documents]
    assert docs[0]["computer_name"] == "shipper-host"
    assert docs[1]["Hostname"] == "shipper-host"
    assert docs[2]["host"] == {"name": "shipper-host"}
    assert docs[3]["Hostname"] == "own"
    assert "host" not in docs[4]


def test_json_mapping_with_hex_ids_and_enum_ints() -> None:
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "h"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "severityNumber": 9,
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "body": {"stringValue": '{"a": 1}'},
                                "someFutureField": 1,
                            }
                        ]
                    }
                ],
            }
        ]
    }
    req = otlp.decode_request(json.dumps(body).encode(), otlp.JSON)
    record = req.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert record.severity_number == 9
    assert otlp.documents(req, Limits()).documents[0].obj == {"a": 1, "host": {"name": "h"}}


@pytest.mark.parametrize(
    ("body", "media"),
    [
        (b"\xff\xff\xff", otlp.PROTOBUF),
        (b"{not json", otlp.JSON),
        (b"[1]", otlp.JSON),
        (b'{"resourceLogs": 5}', otlp.JSON),
        (b'{"message": "a line", "timestamp": "2024-01-01T00:00:00Z"}', otlp.JSON),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', otlp.JSON),
    ],
)
def test_malformed_requests_are_400(body: bytes, media: str) -> None:
    with pytest.raises(BatchError) as info:
        otlp.decode_request(body, media)
    assert info.value.status == 400


def test_media_type() -> None:
    assert otlp.media_type("application/x-protobuf") == otlp.PROTOBUF
    assert otlp.media_type("application/json; charset=utf-8") == otlp.JSON
    with pytest.raises(BatchError) as info:
        otlp.media_type("text/plain")
    assert info.value.status == 415


# -- POST /v1/logs -------------------------------------------------------------------------


@dataclass
class Gw:
    http: TestClient
    sink: MemorySink
    store: CredentialStore
    token: str

    def post(self, req: ExportLogsServiceRequest, media: str = otlp.PROTOBUF, **headers: str):  # type: ignore[no-untyped-def]
        body = (
            req.SerializeToString()
            if media == otlp.PROTOBUF
            else otlp.json_format.MessageToJson(req).encode()
        )
        headers.setdefault("Authorization", f"Bearer {self.token}")
        headers["Content-Type"] = media
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.compress(body)
        return self.http.post("/v1/logs", content=body, headers=headers)


def make(tmp_path: Path, **options: object) -> Iterator[Gw]:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    app = create_app(store, sink, GatewayOptions(**options))  # type: ignore[arg-type]
    with TestClient(app) as http:
        yield Gw(http, sink, store, token)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gw]:
    yield from make(tmp_path)


def test_all_accepted_answers_empty_response(gw: Gw) -> None:
    req = request_of([s(json.dumps(event(n))) for n in range(5)])
    resp = gw.post(req, **{"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.content
    assert resp.headers["content-type"] == otlp.PROTOBUF
    answer = ExportLogsServiceResponse.FromString(resp.content)
    assert not answer.HasField("partial_success")
    assert [e.event_id for e in gw.sink.events] == [f"ws01-{n:06d}" for n in range(5)]
    assert gw.sink.events[0].tenant_id == "acme"


def test_partial_success_counts_rejects_in_request_content_type(gw: Gw) -> None:
    req = request_of(
        [s(json.dumps(event(1))), s("not json"), s(json.dumps(event(2, tenant_id="x")))]
    )
    resp = gw.post(req, otlp.JSON)
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["partialSuccess"]["rejectedLogRecords"] == "2"
    assert "not_json: 1" in answer["partialSuccess"]["errorMessage"]
    assert "tenant_mismatch: 1" in answer["partialSuccess"]["errorMessage"]
    assert sorted(r.reason for _, r in gw.sink.rejects) == ["not_json", "tenant_mismatch"]
    assert len(gw.sink.events) == 1


def test_duplicates_are_not_rejections(gw: Gw) -> None:
    req = request_of([s(json.dumps(event(1)))])
    assert gw.post(req).status_code == 200
    resp = gw.post(req)
    assert not ExportLogsServiceResponse.FromString(resp.content).HasField("partial_success")
    assert len(gw.sink.events) == 1


def test_unauthorized_malformed_unsupported(gw: Gw) -> None:
    req = request_of([s(json.dumps(event(1)))])
    resp = gw.post(req, Authorization="Bearer sst_nope_nope")
    assert resp.status_code == 401
    assert status_pb2.Status.FromString(resp.content).code == 16
    bad = gw.http.post(
        "/v1/logs",
        content=b"\xff\xff",
        headers={"Authorization": f"Bearer {gw.token}", "Content-Type": otlp.PROTOBUF},
    )
    assert bad.status_code == 400
    assert (
        gw.http.post(
            "/v1/logs",
            content=b"x",
            headers={"Authorization": f"Bearer {gw.token}", "Content-Type": "text/plain"},
        ).status_code
        == 415
    )
    assert gw.sink.events == [] and gw.sink.rejects == []


def test_too_many_records_is_413(tmp_path: Path) -> None:
    for gw in make(tmp_path, limits=Limits(max_events=3)):
        resp = gw.post(request_of([s("{}")] * 4), otlp.JSON)
        assert resp.status_code == 413
        assert "over 3" in resp.json()["message"]


def test_kafka_down_is_503_with_retry_after(gw: Gw) -> None:
    gw.sink.down = True
    resp = gw.post(request_of([s(json.dumps(event(1)))]))
    assert resp.status_code == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert status_pb2.Status.FromString(resp.content).code == 14


def test_rate_limited_is_429_with_retry_after(tmp_path: Path) -> None:
    for gw in make(tmp_path, events_per_second=1, burst_events=10_000):
        req = request_of([s(json.dumps(event(n))) for n in range(10_000)])
        assert gw.post(req).status_code == 200
        resp = gw.post(request_of([s(json.dumps(event(99_999)))]))
        assert resp.status_code == 429
        assert int(resp.headers["Retry-After"]) >= 1
