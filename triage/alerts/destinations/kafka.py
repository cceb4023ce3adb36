"""OCSF Detection Findings on a Kafka topic (key: the finding id, header: the delivery
id), produced idempotently and flushed before the delivery counts as sent."""

from __future__ import annotations

import json
from typing import Any

from triage.alerts.config import KafkaDest
from triage.alerts.destinations.base import Sender, SenderContext
from triage.alerts.ocsf import detection_finding
from triage.alerts.render import Notification


class KafkaSender(Sender):
    def __init__(self, dest: KafkaDest, timeout: float, ctx: SenderContext) -> None:
        from confluent_kafka import Producer

        config: dict[str, Any] = dict(ctx.kafka_config)
        if dest.bootstrap:
            config["bootstrap.servers"] = dest.bootstrap
        config.update({"enable.idempotence": True, "message.timeout.ms": int(timeout * 1000)})
        self.dest, self.timeout, self.version = dest, timeout, ctx.product_version
        self.producer = Producer(config)

    def send(self, n: Notification, delivery_id: str) -> None:
        errors: list[str] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        record = detection_finding(n, self.version)
        self.producer.produce(
            self.dest.topic,
            key=(n.finding_id or delivery_id).encode(),
            value=json.dumps(record, separators=(",", ":")).encode(),
            headers=[("sigstream.delivery", delivery_id.encode())],
            on_delivery=done,
        )
        left = self.producer.flush(self.timeout)
        if left:
            raise RuntimeError(f"{left} record(s) not acknowledged within {self.timeout}s")
        if errors:
            raise RuntimeError(errors[0])

    def close(self) -> None:
        self.producer.flush(self.timeout)
