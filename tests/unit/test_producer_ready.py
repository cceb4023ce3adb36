"""``EventProducer.wait_ready``: an unreachable broker is a clear error, not a hang.

librdkafka connects lazily; without the check, ``sigstream replay`` against a stopped broker
would queue events and report them failed only when they time out, minutes later."""

from __future__ import annotations

import socket
import time

import pytest

from ingest.producer import EventProducer, KafkaUnavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_unreachable_broker_raises_within_the_timeout() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    producer = EventProducer(bootstrap, "events", "events.dlq")
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"'events' not ready after 1\.5s"):
        producer.wait_ready(timeout=1.5)
    assert time.monotonic() - started < 10
