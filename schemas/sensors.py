"""The sensors index: one status document per (tenant, sensor), written by the
sensor-health query and listed by ``sigstream sensors``. Its Elasticsearch mappings are
generated from this model (``schemas.generate.es_mappings``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

SensorHealth = Literal["healthy", "degraded", "silent"]


class SensorStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    sensor_id: str
    host: str | None = None
    state: SensorHealth
    updated: datetime
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    last_event_time: datetime | None = None
    silent_since: datetime | None = None
    events: int = 0  # events (heartbeats not counted)
    heartbeats: int = 0
    rate: float = 0.0  # events per second, exponentially weighted over a few minutes
    last_seq: int | None = None
    missing: int = 0  # sequence numbers reported missing in all
    gaps: int = 0  # gap findings
    pending_gaps: int = 0  # missing ranges still within their grace
    resets: int = 0
    duplicates: int = 0
    silences: int = 0
    skew_s: float | None = None  # event time - receive time; positive: clock ahead
    skewed: str | None = None  # "ahead" / "behind" during a skew episode
    expected_interval_s: float
    # The sensor's own counters, from its latest heartbeat.
    agent_version: str | None = None
    events_sent: int | None = None
    events_dropped: int | None = None
    events_spooled: int | None = None
    # Tamper evidence from its latest heartbeat (docs/sensor.md): own code and config
    # hashes, each event source's status, and why it stopped when it stopped cleanly.
    sensor_sha256: str | None = None
    config_sha256: str | None = None
    sources: dict[str, str] | None = None
    stop_reason: str | None = None
