"""The sensor agent numbers events, persists the numbering across restarts, resets on
purpose, and spools heartbeats the backend can read. Delivery is not started: these
tests read what the agent put in the spool."""

from __future__ import annotations

import json
from pathlib import Path

from ingest.agent import SensorAgent, last_spooled_seq
from ingest.client import GatewayClient
from schemas.events import Heartbeat, parse_event

EVENT = {
    "event_type": "process_creation",
    "sensor_id": "ws01",
    "host": "WS01",
    "event_time": "2026-11-20T10:00:00Z",
    "Image": "C:\\Windows\\System32\\cmd.exe",
}


def _client(folder: Path) -> GatewayClient:
    return GatewayClient("http://127.0.0.1:9", "token", folder, fsync="never")


def _spooled(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for p in sorted(folder.glob("*.seg")) for line in p.open("rb")]


def _events(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{**EVENT, "event_id": f"e{i}"} for i in range(start, start + n)]


def test_events_are_numbered_and_numbering_survives_a_restart(tmp_path: Path) -> None:
    client = _client(tmp_path)
    agent = SensorAgent(client, "ws01", "WS01")
    assert agent.submit(_events(3)) == 3
    client.close()
    again = _client(tmp_path)
    SensorAgent(again, "ws01", "WS01").submit(_events(2, start=3))
    again.close()
    assert [r["seq"] for r in _spooled(tmp_path)] == [0, 1, 2, 3, 4]
    assert all("tenant_id" not in r for r in _spooled(tmp_path))


def test_numbering_is_rederived_from_the_spool_when_the_counter_file_lags(
    tmp_path: Path,
) -> None:
    client = _client(tmp_path)
    SensorAgent(client, "ws01", "WS01").submit(_events(5))
    client.close()
    (tmp_path / "sensor.seq").write_text(json.dumps({"next": 2}))  # crash before saving
    assert last_spooled_seq(tmp_path) == 4
    again = _client(tmp_path)
    SensorAgent(again, "ws01", "WS01").submit(_events(1, start=5))
    again.close()
    assert [r["seq"] for r in _spooled(tmp_path)][-1] == 5


def test_a_sources_own_seq_is_kept(tmp_path: Path) -> None:
    client = _client(tmp_path)
    SensorAgent(client, "ws01", "WS01").submit([{**EVENT, "event_id": "x", "seq": 1000}])
    client.close()
    assert [r["seq"] for r in _spooled(tmp_path)] == [1000]


def test_reset_seq_starts_again_from_zero(tmp_path: Path) -> None:
    client = _client(tmp_path)
    SensorAgent(client, "ws01", "WS01").submit(_events(4))
    client.close()
    again = _client(tmp_path)
    SensorAgent(again, "ws01", "WS01", reset_seq=True).submit(_events(2, start=4))
    again.close()
    assert [r["seq"] for r in _spooled(tmp_path)] == [0, 1, 2, 3, 0, 1]


def test_heartbeats_carry_interval_counters_and_a_seq(tmp_path: Path) -> None:
    client = _client(tmp_path)
    agent = SensorAgent(client, "ws01", "WS01", heartbeat_interval_s=30, clock=lambda: 1.8e9)
    agent.submit(_events(2))
    agent.heartbeat()
    client.close()
    *_, raw = _spooled(tmp_path)
    hb = parse_event({**raw, "tenant_id": "acme"})
    assert isinstance(hb, Heartbeat)
    assert (hb.seq, hb.expected_interval_s, hb.events_spooled) == (2, 30, 2)
    assert hb.logsource.product == "sigstream" and hb.event_time.timestamp() == 1.8e9
