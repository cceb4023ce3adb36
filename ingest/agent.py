"""The sensor side of sensor health: number every event, say "alive" on an interval.

``SensorAgent`` wraps a ``GatewayClient`` (spool + delivery). It gives every event the
sensor's next sequence number when the source did not (``seq`` increases by one per
record, heartbeats included, so the backend can tell lost or deleted events from a quiet
sensor), and spools a ``Heartbeat`` every ``heartbeat_interval_s`` with the expected
interval and the client's counters. The next number is persisted beside the spool
(``sensor.seq``) and re-derived from the spool's newest record when opening, so a
restarted sensor continues its numbering; ``reset_seq=True`` starts again from 0 on
purpose (a reinstall), which the backend reports as a sequence reset. A source that
numbers its own events keeps its numbers (it should then number all of them).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.client import GatewayClient
from ingest.spool import SUFFIX
from schemas.events import Envelope, Heartbeat, parse_event

SEQ_FILE = "sensor.seq"
AGENT_VERSION = "sigstream-agent/1"


def last_spooled_seq(folder: Path, tail_bytes: int = 1 << 16) -> int | None:
    """The ``seq`` of the newest record in the spool folder (None when there is none)."""
    segments = sorted(p for p in folder.glob(f"*{SUFFIX}") if p.stem.isdigit())
    for path in reversed(segments):
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - tail_bytes))
            lines = handle.read().splitlines()
        for line in reversed(lines):
            try:
                seq = json.loads(line).get("seq")
            except (ValueError, AttributeError):
                continue
            if isinstance(seq, int):
                return seq
    return None


class SequenceCounter:
    """The sensor's next sequence number, persisted in ``folder/sensor.seq``."""

    def __init__(self, folder: Path, reset: bool = False) -> None:
        self.path = folder / SEQ_FILE
        stored: int = 0
        if not reset and self.path.exists():
            stored = int(json.loads(self.path.read_text()).get("next", 0))
        spooled = None if reset else last_spooled_seq(folder)
        self.next = max(stored, spooled + 1 if spooled is not None else 0)
        if reset:
            self.save()

    def take(self, n: int) -> int:
        """Reserve ``n`` numbers; returns the first."""
        first = self.next
        self.next += n
        return first

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next": self.next}))
        os.replace(tmp, self.path)


class SensorAgent:
    """Numbers and spools a sensor's events and sends its heartbeats."""

    def __init__(
        self,
        client: GatewayClient,
        sensor_id: str,
        host: str,
        *,
        heartbeat_interval_s: float = 60.0,
        agent_version: str = AGENT_VERSION,
        reset_seq: bool = False,
        clock: Callable[[], float] = time.time,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self.status = status  # extra heartbeat fields (sources, hashes, per-source drops)
        self.sensor_id = sensor_id
        self.host = host
        self.heartbeat_interval_s = heartbeat_interval_s
        self.agent_version = agent_version
        self.clock = clock
        self.seq = SequenceCounter(client.spool.folder, reset=reset_seq)
        self.submitted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _encode(self, event: Envelope) -> bytes:
        # As the gateway expects it: no tenant (the credential says it), no nulls.
        return event.model_dump_json(exclude_none=True, exclude={"tenant_id"}).encode()

    def submit(self, events: Iterable[Envelope | dict[str, Any]]) -> int:
        """Number (when ``seq`` is missing) and spool events; returns how many."""
        parsed = [e if isinstance(e, Envelope) else parse_event(e) for e in events]
        if not parsed:
            return 0
        with self._lock:
            missing = sum(1 for e in parsed if e.seq is None)
            first = self.seq.take(missing)
            numbered = []
            for e in parsed:
                if e.seq is None:
                    e = e.model_copy(update={"seq": first})
                    first += 1
                numbered.append(self._encode(e))
            self.client.submit(numbered)
            self.seq.save()  # after the spool has them: a crash in between is re-derived
            self.submitted += len(numbered)
        return len(numbered)

    def heartbeat(self, stop_reason: str | None = None) -> Heartbeat:
        """Spool one heartbeat now (it takes a sequence number like any record);
        ``stop_reason`` marks the last one of a clean stop."""
        s = self.client.stats
        delivered = s.accepted + s.duplicates + s.rejected + s.dropped
        extra = dict(self.status()) if self.status else {}
        lost_at_source = sum((extra.get("dropped_by_source") or {}).values())
        hb = Heartbeat(
            sensor_id=self.sensor_id,
            host=self.host,
            event_id=f"hb-{uuid.uuid4().hex}",
            event_time=datetime.fromtimestamp(self.clock(), tz=UTC),
            expected_interval_s=max(1, round(self.heartbeat_interval_s)),
            agent_version=self.agent_version,
            events_sent=s.accepted,
            events_dropped=s.dropped + lost_at_source,
            events_spooled=max(0, self.submitted - delivered),
            stop_reason=stop_reason,
            **extra,
        )
        self.submit([hb])
        return hb

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            self.heartbeat()

    def start(self) -> SensorAgent:
        """Send a heartbeat now and then every interval (the client delivers them)."""
        self.heartbeat()
        self._thread = threading.Thread(target=self._loop, name="sensor-heartbeat", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
