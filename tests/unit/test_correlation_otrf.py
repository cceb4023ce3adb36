"""The own correlation rules on real attack telemetry (OTRF recordings), without services:
quiet on single-technique recordings, firing when two recon recordings of one host are
replayed as one session."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detections.correlation.offline import correlate_events
from detections.correlation.query import CorrelationContent, load_content
from detections.engine.apply import match_events
from ingest.sources import iter_items
from sigstream.commands.correlations import OWN_CORRELATIONS
from tests.conftest import shared_path

RECON = "Burst Of Distinct Reconnaissance Commands On One Host"


@pytest.fixture(scope="module")
def content() -> CorrelationContent:
    return load_content([OWN_CORRELATIONS])


def events_of(path: Path) -> list[dict[str, Any]]:
    return [i.event.model_dump(mode="json") for i in iter_items([path]) if i.event is not None]


def shifted(events: list[dict[str, Any]], delta: timedelta) -> list[dict[str, Any]]:
    def move(e: dict[str, Any]) -> dict[str, Any]:
        when = datetime.fromisoformat(e["event_time"]) + delta
        return {**e, "event_time": when.isoformat(), "event_id": f"shifted-{e['event_id']}"}

    return [move(e) for e in events]


def test_single_recordings_match_base_rules_but_fire_no_correlation(
    content: CorrelationContent,
) -> None:
    folder = shared_path("otrf", "discovery")
    recordings = sorted(folder.rglob("*.zip"))
    assert recordings
    matched = 0
    for path in recordings:
        events = events_of(path)
        matched += len(match_events(content.plan, events))
        assert correlate_events(content, events) == [], path.name
    assert matched >= 6  # net/net1 user and friends: the base rules do see the recon


def test_two_recon_recordings_replayed_as_one_session_fire_the_recon_burst(
    content: CorrelationContent,
) -> None:
    local = events_of(shared_path("otrf", "discovery", "host", "empire_shell_net_local_users.zip"))
    domain = events_of(
        shared_path("otrf", "discovery", "host", "empire_shell_samr_EnumDomainUsers.zip")
    )
    # As recorded, nine minutes apart: two distinct commands in each 5-minute window.
    assert correlate_events(content, local + domain) == []
    # The second recording moved eight minutes earlier: one session of four commands.
    firings = correlate_events(content, local + shifted(domain, timedelta(minutes=-8)))
    assert [(spec.title, f.group_key, f.value) for spec, f in firings] == [
        (RECON, "WORKSTATION5.theshire.local", 4)
    ]
