"""Tamper evidence in sensor health (pure state, no services): a hash change between
heartbeats, a silence after a clean stop versus without one, a working source becoming
unavailable; and the new heartbeat fields survive the summary the job writes."""

from __future__ import annotations

from detections.health.finding_docs import HEALTH_RULES, health_finding
from detections.health.state import (
    HealthConfig,
    Record,
    SensorState,
    expire,
    observe,
    records_batch,
)
from detections.health.summary import SensorSummaries, decode

CFG = HealthConfig(default_interval_s=10, silence_multiplier=3, gap_grace_s=5)
T0 = 1_800_000_000.0
OK = {"process": "ok", "file": "ok", "network": "ok"}


def hb(seq: int, t: float, **kw: object) -> Record:
    kw.setdefault("sensor_sha256", "a" * 64)
    kw.setdefault("config_sha256", "c" * 64)
    kw.setdefault("sources", OK)
    return Record(
        event_id=f"hb{seq}",
        event_time=t,
        received=t,
        seq=seq,
        host="web-01",
        heartbeat=True,
        interval_s=10.0,
        sent_time=t,
        **kw,  # type: ignore[arg-type]
    )


def kinds(obs: list) -> list[str]:  # type: ignore[type-arg]
    return [o.kind for o in obs]


def test_same_hashes_and_sources_raise_nothing() -> None:
    s = SensorState()
    assert observe(s, [hb(0, T0), hb(1, T0 + 10)], T0 + 10, CFG) == []
    assert s.sources == OK and s.sensor_sha256 == "a" * 64


def test_code_hash_change_is_a_tampered_finding_once() -> None:
    s = SensorState()
    observe(s, [hb(0, T0)], T0, CFG)
    (obs,) = observe(s, [hb(1, T0 + 10, sensor_sha256="b" * 64)], T0 + 10, CFG)
    assert obs.kind == "tampered" and obs.details["changed"] == "sensor code"
    assert obs.details["previous_sha256"] == "a" * 64 and obs.details["sha256"] == "b" * 64
    assert observe(s, [hb(2, T0 + 20, sensor_sha256="b" * 64)], T0 + 20, CFG) == []


def test_config_hash_change_names_the_configuration() -> None:
    s = SensorState()
    observe(s, [hb(0, T0)], T0, CFG)
    (obs,) = observe(s, [hb(1, T0 + 10, config_sha256="d" * 64)], T0 + 10, CFG)
    assert (obs.kind, obs.details["changed"]) == ("tampered", "configuration")


def test_heartbeats_without_hashes_never_look_like_a_change() -> None:
    s = SensorState()
    observe(s, [hb(0, T0)], T0, CFG)
    plain = hb(1, T0 + 10, sensor_sha256=None, config_sha256=None, sources=None)
    assert observe(s, [plain, hb(2, T0 + 20)], T0 + 20, CFG) == []


def test_silence_after_a_clean_stop_is_stopped_with_its_reason() -> None:
    s = SensorState()
    stopping = {k: "stopped" for k in OK}
    last = hb(1, T0 + 5, stop_reason="SIGTERM (systemd stop)", sources=stopping)
    assert observe(s, [hb(0, T0), last], T0 + 5, CFG) == []  # "stopped" is no lost source
    (obs,) = expire(s, T0 + 40, CFG)
    assert obs.kind == "stopped"
    assert obs.details["cause"] == "stopped cleanly (SIGTERM (systemd stop))"


def test_silence_without_a_stop_is_killed_or_cut_off() -> None:
    s = SensorState()
    observe(s, [hb(0, T0), hb(1, T0 + 5)], T0 + 5, CFG)
    (obs,) = expire(s, T0 + 40, CFG)
    assert obs.kind == "silent"
    assert obs.details["cause"] == "went silent without stopping: killed or cut off"


def test_a_restart_after_a_clean_stop_forgets_the_stop() -> None:
    s = SensorState()
    observe(s, [hb(0, T0), hb(1, T0 + 5, stop_reason="SIGTERM")], T0 + 5, CFG)
    observe(s, [hb(2, T0 + 8)], T0 + 8, CFG)
    assert kinds(expire(s, T0 + 60, CFG)) == ["silent"]


def test_source_that_was_ok_becoming_unavailable_is_reported() -> None:
    s = SensorState()
    observe(s, [hb(0, T0)], T0, CFG)
    lost = {**OK, "process": "unavailable: connector read failed: [Errno 9]"}
    (obs,) = observe(s, [hb(1, T0 + 10, sources=lost)], T0 + 10, CFG)
    assert obs.kind == "source_lost"
    assert obs.details == {"source": "process", "was": "ok", "status": lost["process"]}
    assert observe(s, [hb(2, T0 + 20, sources=lost)], T0 + 20, CFG) == []  # once


def test_source_never_ok_or_only_degraded_is_no_finding() -> None:
    s = SensorState()
    first = {**OK, "file": "unavailable: fanotify_init: Operation not permitted"}
    observe(s, [hb(0, T0, sources=first)], T0, CFG)
    degraded = {**first, "process": "degraded: kernel dropped events 2 times (ENOBUFS)"}
    assert observe(s, [hb(1, T0 + 10, sources=degraded)], T0 + 10, CFG) == []


def test_the_sensors_index_shows_hashes_sources_and_a_clean_stop() -> None:
    from detections.health.finding_docs import sensor_status

    s = SensorState()
    observe(s, [hb(0, T0, stop_reason="SIGTERM", sources={"process": "stopped"})], T0, CFG)
    status = sensor_status("acme", "web-01", s, T0, CFG)
    assert (status.stop_reason, status.sources) == ("SIGTERM", {"process": "stopped"})
    assert status.sensor_sha256 == "a" * 64 and status.config_sha256 == "c" * 64


def test_findings_of_the_new_kinds_use_their_own_rules() -> None:
    s = SensorState()
    observe(s, [hb(0, T0)], T0, CFG)
    (obs,) = observe(s, [hb(1, T0 + 10, sensor_sha256="b" * 64)], T0 + 10, CFG)
    finding = health_finding("acme", "web-01", "web-01", obs)
    assert finding.rule.id == HEALTH_RULES["tampered"].id
    assert "changed=sensor code" in finding.message
    again = health_finding("acme", "web-01", "web-01", obs)
    assert again.sigstream.finding.id == finding.sigstream.finding.id


def test_tamper_fields_survive_the_summary_round_trip() -> None:
    records = [hb(0, T0), hb(1, T0 + 5, stop_reason="SIGTERM", sources={"process": "stopped"})]
    summaries = SensorSummaries()
    summaries.add(records_batch(records))
    ((_, raw),) = summaries.records()
    back = decode(raw)
    assert back.hb[0]["sources"] == OK and back.hb[0]["sensor_sha256"] == "a" * 64
    assert back.hb[1]["stop_reason"] == "SIGTERM"


def test_older_summaries_without_tamper_fields_still_decode() -> None:
    old = (
        b'{"v":1,"tenant":"t","sensor":"s","host":null,"src":null,"n":[1,0,1,0],'
        b'"et":[1.0,1.0],"rt":[1.0,1.0],"last":["h",1.0,1.0],"runs":[[0,0,1.0,1.0,"h"]],'
        b'"skipped":null,"clock":null,"hb":[[0,"h",1.0,null,1.0,10.0,"a/1",0,0,0]]}'
    )
    (entry,) = decode(old).hb
    assert entry["events_spooled"] == 0 and entry["sources"] is None
