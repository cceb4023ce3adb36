"""A synthetic sensor fleet for tests and benchmarks: N sensors sending events and
heartbeats in rounds, some misbehaving on purpose, all decided by a seed.

Misbehaviours (disjoint sets of sensors, so every sensor has one expected outcome):

* ``silent``: stops sending anything (events and heartbeats) after ``silent_after`` rounds;
* ``dropping``: skips ``drop_count`` sequence numbers once, at round ``incident_round``;
* ``restarting``: starts numbering from 0 again at round ``incident_round``;
* ``skewed``: its clock is ``skew_s`` ahead (half of them) or behind (the other half).

Event times and ``sent_time`` (the sensor's clock when it sends, what skew is judged on)
are taken from the clock at send time plus the sensor's skew, so the backend sees real
receive times. ``expected()`` says which sensors must end up with which
health finding.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.events import Envelope, Heartbeat, ProcessCreation

_IMAGES = (
    "C:\\Windows\\System32\\svchost.exe",
    "C:\\Windows\\explorer.exe",
    "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "C:\\Windows\\System32\\conhost.exe",
)


@dataclass(frozen=True)
class FleetSpec:
    sensors: int = 100
    events_per_round: int = 5  # per healthy sensor
    heartbeat_every: int = 2  # rounds between heartbeats
    round_s: float = 1.0  # wall-clock seconds per round when paced
    silent: float = 0.05  # fractions of the fleet
    dropping: float = 0.05
    restarting: float = 0.05
    skewed: float = 0.05
    silent_after: int = 3  # rounds
    incident_round: int = 2
    drop_count: int = 5
    skew_s: float = 900.0
    tenant_id: str = "fleet"
    agent_version: str = "sigstream-sim/1.0"
    seed: int = 7

    @property
    def heartbeat_interval_s(self) -> int:
        return max(1, round(self.heartbeat_every * self.round_s))


def sensor_name(i: int) -> str:
    return f"sim-{i:05d}"


@dataclass
class _Sensor:
    sensor_id: str
    host: str
    behaviour: str = "healthy"
    skew_s: float = 0.0
    seq: int = 0
    session: int = 0
    sent: int = 0


@dataclass
class Fleet:
    """The fleet's sensors and their behaviours; ``round`` yields what they send."""

    spec: FleetSpec
    sensors: list[_Sensor] = field(default_factory=list)

    @classmethod
    def build(cls, spec: FleetSpec) -> Fleet:
        rng = random.Random(spec.seed)
        sensors = [_Sensor(sensor_name(i), f"SIM-{i:05d}") for i in range(spec.sensors)]
        order = list(range(spec.sensors))
        rng.shuffle(order)
        start = 0
        for behaviour in ("silent", "dropping", "restarting", "skewed"):
            n = round(getattr(spec, behaviour) * spec.sensors)
            for k, i in enumerate(order[start : start + n]):
                sensors[i].behaviour = behaviour
                if behaviour == "skewed":
                    sensors[i].skew_s = spec.skew_s if k % 2 == 0 else -spec.skew_s
            start += n
        return cls(spec, sensors)

    def with_behaviour(self, behaviour: str) -> set[str]:
        return {s.sensor_id for s in self.sensors if s.behaviour == behaviour}

    def expected(self) -> dict[str, set[str]]:
        """Health finding kind -> sensors that must raise it (and no others)."""
        return {
            "silent": self.with_behaviour("silent"),
            "gap": self.with_behaviour("dropping"),
            "reset": self.with_behaviour("restarting"),
            "skew": self.with_behaviour("skewed"),
        }

    def _event(self, s: _Sensor, now: float) -> Envelope:
        when = datetime.fromtimestamp(now + s.skew_s, tz=UTC)
        event = ProcessCreation(
            tenant_id=self.spec.tenant_id,
            sensor_id=s.sensor_id,
            host=s.host,
            event_id=f"{s.sensor_id}-{s.session}-{s.seq}",
            seq=s.seq,
            event_time=when,
            sent_time=when,
            EventID=1,
            Image=_IMAGES[s.seq % len(_IMAGES)],
            CommandLine=f"{_IMAGES[s.seq % len(_IMAGES)]} --n {s.seq}",
        )
        s.seq += 1
        s.sent += 1
        return event

    def _heartbeat(self, s: _Sensor, now: float) -> Heartbeat:
        hb = Heartbeat(
            tenant_id=self.spec.tenant_id,
            sensor_id=s.sensor_id,
            host=s.host,
            event_id=f"{s.sensor_id}-{s.session}-{s.seq}-hb",
            seq=s.seq,
            event_time=datetime.fromtimestamp(now + s.skew_s, tz=UTC),
            sent_time=datetime.fromtimestamp(now + s.skew_s, tz=UTC),
            expected_interval_s=self.spec.heartbeat_interval_s,
            agent_version=self.spec.agent_version,
            events_sent=s.sent,
            events_dropped=0,
            events_spooled=0,
        )
        s.seq += 1
        return hb

    def round(self, number: int, now: float) -> Iterator[Envelope]:
        """Everything the fleet sends in round ``number`` (0-based) at clock ``now``."""
        spec = self.spec
        for s in self.sensors:
            if s.behaviour == "silent" and number >= spec.silent_after:
                continue
            if s.behaviour == "restarting" and number == spec.incident_round:
                s.seq, s.session = 0, s.session + 1
            if s.behaviour == "dropping" and number == spec.incident_round:
                s.seq += spec.drop_count  # these seqs are never sent
            s.sent = 0
            if number % spec.heartbeat_every == 0:
                yield self._heartbeat(s, now)
            for _ in range(spec.events_per_round):
                yield self._event(s, now)


def run_fleet(
    fleet: Fleet,
    send: Callable[[Envelope], None],
    rounds: int,
    *,
    paced: bool = True,
    first_round: int = 0,
    flush: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.time,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Send ``rounds`` rounds (one every ``round_s`` when ``paced``); returns records sent.
    ``stop`` is checked between rounds."""
    sent = 0
    next_at = time.monotonic()
    for number in range(first_round, first_round + rounds):
        if stop and stop():
            break
        for event in fleet.round(number, clock()):
            send(event)
            sent += 1
        if flush:
            flush()
        if progress:
            progress(number + 1 - first_round, sent)
        if paced:
            next_at += fleet.spec.round_s
            time.sleep(max(0.0, next_at - time.monotonic()))
    return sent
