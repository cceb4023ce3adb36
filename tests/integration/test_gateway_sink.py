"""The gateway's Kafka sink against a real broker: a record the *broker* refuses (not the
producer at ``produce()`` time) is reported by a failure-only delivery report, matched back
to its event by key and event-id header, and goes to the DLQ as ``kafka_refused``; a
concurrent batch on another pooled producer is unaffected and no producer is replaced."""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from common.settings import get_settings
from ingest.gateway.parse import Identity, Limits, parse_batch
from ingest.gateway.sink import KafkaSink
from ingest.producer import describe_reject
from tests.integration.test_gateway_hostile import ids, read_at_least
from tests.unit.gateway_helpers import event, ndjson

pytestmark = pytest.mark.integration


def create_topic(name: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": get_settings().kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1, config=config)]).values():
        future.result(30)


def test_a_record_the_broker_refuses_is_that_records_reject(services: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    events, dlq = f"test.{tag}.brokerrefuse.events", f"test.{tag}.brokerrefuse.dlq"
    create_topic(events, **{"max.message.bytes": "4000"})  # the broker's limit, per batch
    create_topic(dlq)
    sink = KafkaSink(get_settings().kafka_bootstrap, events, dlq, timeout_s=20)
    now = datetime.now(UTC)
    noise = secrets.token_hex(8000)  # incompressible: its record batch stays over 4000 B
    big = parse_batch(
        ndjson([event(7, CommandLine=noise)]), Identity("acme", "ws01"), Limits(), now
    )
    small = parse_batch(
        ndjson([event(i, sensor="ws02") for i in range(20)]),
        Identity("globex", "ws02"),
        Limits(),
        now,
    )
    results: dict[str, Any] = {}

    def run(name: str, batch: Any, who: Identity) -> None:
        results[name] = sink.deliver(batch.events, batch.rejects, who, name)

    try:
        threads = [
            threading.Thread(target=run, args=("big", big, Identity("acme", "ws01"))),
            threading.Thread(target=run, args=("small", small, Identity("globex", "ws02"))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sink.close()
    refused = results["big"].refused
    assert [(r.line, r.reason) for r in refused] == [(1, "kafka_refused")]
    assert "Kafka refused the event" in refused[0].message
    assert results["small"].refused == []
    assert sink.replaced == 0
    assert ids(read_at_least(events, 20)) == {("ws02", f"ws02-{i:06d}"): 1 for i in range(20)}
    (dead,) = read_at_least(dlq, 1)
    assert describe_reject(dead.headers)["reason"] == "kafka_refused"
    assert json.loads(dead.value)["event_id"] == "ws01-000007"
