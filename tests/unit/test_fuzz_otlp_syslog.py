"""Property-based tests of the OTLP and syslog decoders: whatever the bytes, only the
documented errors (a 4xx BatchError, SyslogError, FramingError), every record or message
gets exactly one outcome, and the framer never holds more than one message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest.gateway import otlp, syslog
from ingest.gateway.parse import BatchError, Limits
from tests.unit import fuzz_support  # noqa: F401  (the hypothesis profile: fast or fuzz)

pytestmark = pytest.mark.fuzz

LIMITS = Limits(max_event_bytes=4096, max_depth=8)


@given(st.binary(max_size=2048), st.sampled_from([otlp.PROTOBUF, otlp.JSON]))
def test_decode_request_only_refuses_with_4xx(body: bytes, media: str) -> None:
    try:
        req = otlp.decode_request(body, media)
    except BatchError as exc:
        assert 400 <= exc.status < 500
        return
    out = otlp.documents(req, LIMITS)
    assert out.records == otlp.count_records(req)


@given(st.lists(st.text(max_size=200), max_size=20))
def test_every_string_record_gets_one_outcome(bodies: list[str]) -> None:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for body in bodies:
        scope.log_records.add().body.CopyFrom(AnyValue(string_value=body))
    out = otlp.documents(req, LIMITS)
    assert sorted([d.index for d in out.documents] + [r.index for r in out.rejects]) == list(
        range(1, len(bodies) + 1)
    )


@given(st.binary(max_size=1024))
def test_parse_message_only_raises_syslog_error(data: bytes) -> None:
    try:
        message = syslog.parse_message(data)
    except syslog.SyslogError:
        return
    assert message.rfc in (5424, 3164)
    assert 0 <= message.facility <= 23 and 0 <= message.severity <= 7


@given(st.lists(st.binary(max_size=300), max_size=30))
def test_framer_is_bounded(chunks: list[bytes]) -> None:
    framer = syslog.Framer(100)
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                assert len(frame.data) <= 100 and frame.size >= len(frame.data)
            assert framer.buffered <= 100 + 1 + syslog.MAX_LENGTH_DIGITS
    except syslog.FramingError:
        pass
