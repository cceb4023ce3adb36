"""Which agent version each sensor runs, as the detection pass needs it to observe fields
per sensor version (docs/field-drift.md). Pure (no Spark, no I/O).

Events carry no version; heartbeats do (``Heartbeat.agent_version``). The job's driver
keeps one ``SensorVersions``: the tasks of each micro-batch report the heartbeats they saw,
the drift stage seeds it from its state when it starts (the versions it stored per
tenant), and before each micro-batch the driver ships its current map to the tasks
(a Spark broadcast, renewed only when the map changed, at most every ``REFRESH_S``
seconds). Executors never read versions from their environment.

Bounded: at most ``MAX_SENSOR_VERSIONS`` (tenant, sensor) pairs, the most recently changed
kept (a fleet larger than that labels the sensors left out ``unknown`` until their next
heartbeat in the same task); a version is cut to ``MAX_VERSION_LEN`` characters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

SEP = "\x1f"
#: The label of events whose sensor sent no heartbeat yet (or no version in it).
UNKNOWN = "unknown"
#: The label of versions beyond a route's (or a task's) bound of distinct versions.
OTHER = "other"
#: The label of a baseline across every version of a route (never a sensor's version).
ACROSS = "*"
MAX_SENSOR_VERSIONS = 65_536
MAX_VERSION_LEN = 64
#: Seconds between two broadcasts of a changed map (a fleet's rollout changes it often).
REFRESH_S = 5.0


def version_label(version: Any) -> str:
    """A heartbeat's ``agent_version`` as a label: ``unknown`` when absent, never ``*``,
    control characters (the record keys' separator among them) replaced by ``?``."""
    if version is None:
        return UNKNOWN
    text = "".join(c if c.isprintable() else "?" for c in str(version)[:256])
    text = text.strip()[:MAX_VERSION_LEN]
    if not text:
        return UNKNOWN
    return OTHER if text == ACROSS else text


def sensor_key(tenant: str, sensor: str) -> str:
    return f"{tenant}{SEP}{sensor}"


class SensorVersions:
    """(tenant, sensor) -> agent version on the driver, shared by the detection pass (which
    ships it to its tasks) and the drift stage (which seeds it). Thread-safe: both run in
    the driver's query threads."""

    def __init__(self, cap: int = MAX_SENSOR_VERSIONS) -> None:
        self.cap = cap
        self._map: dict[str, str] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped when a mapping changes
        self._shipped: tuple[int, float, Any] | None = None  # generation, when, broadcast

    def __getstate__(self) -> dict[str, Any]:  # a Lock does not pickle
        with self._lock:
            return {"cap": self.cap, "_map": dict(self._map), "generation": self.generation}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._shipped = None

    def update(self, tenant: str, versions: Mapping[str, Any]) -> int:
        """Record sensors' versions of one tenant; returns how many changed."""
        return self.update_pairs((tenant, s, v) for s, v in versions.items())

    def update_pairs(self, triples: Iterable[Any]) -> int:
        changed = 0
        with self._lock:
            for tenant, sensor, version in triples:
                key, label = sensor_key(str(tenant), str(sensor)), version_label(version)
                if label == UNKNOWN or self._map.get(key) == label:
                    continue
                self._map.pop(key, None)  # re-inserted last: the most recently changed
                self._map[key] = label
                changed += 1
            while len(self._map) > self.cap:
                del self._map[next(iter(self._map))]
            if changed:
                self.generation += 1
        return changed

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def get(self, tenant: str, sensor: str) -> str:
        return self._map.get(sensor_key(tenant, sensor), UNKNOWN)

    def shipped(self, broadcast: Any, now: float | None = None, every: float = REFRESH_S) -> Any:
        """The broadcast of the current map the tasks get: renewed (``broadcast(map)``,
        the previous one unpersisted) when the map changed since the last one and that
        one is at least ``every`` seconds old."""
        now = time.monotonic() if now is None else now
        last = self._shipped
        if last is not None and (last[0] == self.generation or now - last[1] < every):
            return last[2]
        generation = self.generation
        value = broadcast(self.snapshot())
        if last is not None and hasattr(last[2], "unpersist"):
            last[2].unpersist()
        self._shipped = (generation, now, value)
        return value
