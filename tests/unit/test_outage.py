"""The job's writes wait out an Elasticsearch outage and give up after their patience."""

from __future__ import annotations

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elastic_transport import ConnectionError as TransportConnectionError
from elasticsearch import ApiError, BadRequestError

from detections.sinks.elasticsearch import BulkWriteError
from detections.sinks.outage import is_outage, outlasting_outages


def _api_error(cls: type[ApiError], status: int) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.01, NodeConfig("http", "h", 9200))
    return cls("refused", meta, {})


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_outage_errors_are_recognised_and_request_errors_are_not() -> None:
    assert is_outage(TransportConnectionError("connection refused"))
    assert is_outage(_api_error(ApiError, 503))
    assert is_outage(_api_error(ApiError, 429))
    assert is_outage(BulkWriteError("2 refused", [503, 429]))
    assert not is_outage(BulkWriteError("1 refused", [400, 503]))
    assert not is_outage(_api_error(BadRequestError, 400))
    assert not is_outage(ValueError("bug"))


def test_write_is_repeated_until_the_cluster_is_back() -> None:
    clock = _Clock()
    attempts = []

    def write() -> str:
        attempts.append(clock.now)
        if clock.now < 60:  # down for a minute
            raise TransportConnectionError("connection refused")
        return "written"

    result = outlasting_outages(write, 300, sleep=clock.sleep, clock=lambda: clock.now)
    assert result == "written"
    assert attempts[-1] >= 60
    assert max(clock.sleeps) == 5.0  # backoff is capped
    assert clock.sleeps[:3] == [0.5, 1.0, 2.0]


def test_gives_up_after_its_patience_with_the_error() -> None:
    clock = _Clock()

    def write() -> None:
        raise TransportConnectionError("connection refused")

    with pytest.raises(TransportConnectionError):
        outlasting_outages(write, 30, sleep=clock.sleep, clock=lambda: clock.now)
    assert 25 <= clock.now <= 30


def test_a_refused_request_is_not_retried() -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        raise BulkWriteError("1 findings refused; first: x: 400 mapper_parsing_exception", [400])

    with pytest.raises(BulkWriteError):
        outlasting_outages(write, 300, sleep=lambda s: None)
    assert len(calls) == 1
