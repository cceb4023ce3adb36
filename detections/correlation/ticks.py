"""Clock ticks: how quiet correlation keys get decided without a Spark job every trigger.

A query with processing-time timeouts makes Spark run a micro-batch on **every** trigger,
data or not, so that timed-out keys are decided: with the job's 0.5 s trigger an idle
correlation stage ran a Spark job (Kafka offsets, shuffle, state store load and commit,
Python workers) twice a second, on the cores the detection pass needs. Spark has no
setting for "check timeouts every N seconds" (``noDataMicroBatches`` is all or nothing), so
the stage turns its no-data batches off and this ticker publishes one tiny record per
partition of the matches topic every ``every_s`` seconds instead. A tick is a data batch,
in which Spark decides every timed-out key; ``keyed_matches`` drops ticks (by their Kafka
key) before anything else reads the records.

Quiet keys are therefore decided at most ``every_s`` (default 5 s) after their timer is
due, against windows of minutes and a per-key lateness of 60 s. A busy stage (matches
arriving every trigger) runs its batches anyway; the ticks then cost one record per
partition per ``every_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from detections.stream.derived import PRODUCER_DEFAULTS

log = logging.getLogger("sigstream.correlate")

#: Kafka key of a tick record on the matches topic (no match is keyed like this: a match's
#: key joins its correlation id, tenant and group key with a control character,
#: ``detections.correlation.feed.record``).
TICK_KEY = "sigstream:tick"


#: The exact shape of a tick's value (``tick_value``): the stage drops a record only when
#: both its key and its value are a tick's, so a foreign record keyed like a tick still
#: reaches the DLQ with a reason instead of vanishing.
TICK_VALUE_PATTERN = r'^\{"tick": [0-9]{1,19}\}$'


def tick_value(now_ms: int) -> bytes:
    return json.dumps({"tick": now_ms}).encode()


class Ticker:
    """A daemon thread on the driver that ticks the matches topic while ``running()``."""

    def __init__(
        self,
        producer_options: Mapping[str, Any],
        topic: str,
        every_s: float,
        running: Callable[[], bool],
    ) -> None:
        self.topic, self.every_s, self.running = topic, every_s, running
        self.options = {**PRODUCER_DEFAULTS, **producer_options}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="correlation-ticks", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from confluent_kafka import Producer

        producer = Producer(self.options)
        try:
            while not self._stop.wait(self.every_s):
                if not self.running():
                    return
                try:
                    self.tick(producer)
                except Exception as exc:  # a missed tick delays timers; never stops the stage
                    log.warning("correlation clock tick failed (timers wait): %s", exc)
        finally:
            producer.flush(5)

    def tick(self, producer: Any) -> int:
        """One tick record to every partition of the topic; returns how many."""
        meta = producer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        partitions = sorted(meta.partitions) if meta is not None and meta.partitions else []
        value = tick_value(int(time.time() * 1000))
        for partition in partitions:
            producer.produce(self.topic, key=TICK_KEY.encode(), value=value, partition=partition)
        producer.flush(10)
        self.sent += len(partitions)
        return len(partitions)
