"""Alert delivery over HTTP to a real receiver on loopback: the signed generic webhook,
Slack and Teams payloads, tenant isolation, once-only delivery across restarts and
replays (also of a killed `sigstream alerts run` process), retries, dead letters, a down
destination that does not hold up the others, late-written findings, status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import ApiError

from common.settings import PROJECT_ROOT, get_settings
from detections.health.finding_docs import HEALTH_RULES
from detections.sinks.elasticsearch import connect
from tests.alerts_support import finding_doc
from tests.integration.alerts_support import (
    alert_config,
    http_receiver,
    make_runner,
    run_once,
    wait_until,
    write_findings,
)
from triage.alerts.deliverylog import status_rows

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def routes_file(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "routes.yml"
    path.write_text(
        f"""
destinations:
  acme-hook:
    type: webhook
    url: {url}/signed/acme
    secret_env: HOOK_SECRET
    tenants: [acme]
  globex-hook: {{type: webhook, url: "{url}/signed/globex", secret_env: HOOK_SECRET,
                tenants: [globex]}}
  acme-slack: {{type: slack, url: "{url}/slack", tenants: [acme]}}
  acme-teams: {{type: teams, url: "{url}/teams", tenants: [acme]}}
  acme-card: {{type: teams, format: messagecard, url: "{url}/card", tenants: [acme]}}
{extra}
routes:
  - name: everything
    destinations: [acme-hook, globex-hook]
  - name: chat
    match: {{min_level: high}}
    destinations: [acme-slack, acme-teams, acme-card]
"""
    )
    return path


def docs(tenant: str, n: int, start: int = 0, **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    return [
        finding_doc(
            tenant=tenant,
            event_id=f"{tenant}-{i}",
            host=f"WS-{i:03d}",
            ingested=NOW - timedelta(seconds=60 - i),
            **kw,
        )
        for i in range(start, start + n)
    ]


def test_webhook_slack_teams_tenants_and_once_only(
    services: Any, unique: str, tmp_path: Path
) -> None:
    acme, globex = docs("acme", 5), docs("globex", 3)
    write_findings(unique, acme + globex + docs("_canary", 2))
    cfg = alert_config(unique)
    with http_receiver() as rx:
        path = routes_file(tmp_path, rx.url)
        run_once(make_runner(cfg, path))
        hooks = rx.wait("/signed/acme", 5)
        rx.wait("/signed/globex", 3)
        rx.wait("/slack", 5)
        rx.wait("/teams", 5)
        rx.wait("/card", 5)
        # Signed, fresh, and each tenant's findings only at its own destination.
        assert all(r.signed_ok for r in rx.requests if r.path.startswith("/signed"))
        assert {r.json()["tenant"] for r in hooks} == {"acme"}
        assert {r.json()["tenant"] for r in rx.on("/signed/globex")} == {"globex"}
        assert not any("_canary" in r.body.decode() for r in rx.requests)
        body = hooks[0].json()
        assert body["title"] == "Suspicious PowerShell" and body["level"] == "high"
        assert body["link"].startswith("http://triage.test:8000/#/finding/")
        assert body["technique_links"] == ["https://attack.mitre.org/techniques/T1059/001/"]
        assert body["description"] and body["references"] == ["https://example.org/ps"]
        slack = rx.on("/slack")[0].json()
        assert slack["blocks"][0]["type"] == "header" and "Open in triage" in json.dumps(slack)
        teams = rx.on("/teams")[0].json()
        card = teams["attachments"][0]
        assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert card["content"]["type"] == "AdaptiveCard"
        assert rx.on("/card")[0].json()["@type"] == "MessageCard"
        delivered = len(rx.requests)
        assert delivered == 5 + 3 + 5 * 3

        # A restart, and a replay of the whole index: nothing is delivered twice.
        run_once(make_runner(cfg, path))
        replay = make_runner(cfg, path)
        replay.resume = False
        run_once(replay)
        assert replay.counts["duplicates"] == delivered
        assert len(rx.requests) == delivered
        ids = Counter(r.headers["x-sigstream-delivery"] for r in rx.requests)
        assert max(ids.values()) == 1

    with connect(get_settings().es_hosts) as es:
        es.indices.refresh(index=f"{cfg.log_index},{cfg.dead_index}")
        rows = {
            (r["route"], r["destination"]): r
            for r in status_rows(es, cfg.log_index, cfg.dead_index)
        }
    assert rows[("everything", "acme-hook")]["sent"] == 5
    assert rows[("everything", "globex-hook")]["sent"] == 3
    assert rows[("chat", "acme-slack")]["sent"] == 5
    assert rows[("chat", "acme-slack")]["p50_s"] is not None


def test_retries_dead_letters_and_a_down_destination_blocks_nothing(
    services: Any, unique: str, tmp_path: Path
) -> None:
    write_findings(unique, docs("acme", 4))
    cfg = alert_config(unique, max_attempts=3)
    with http_receiver() as rx:
        path = tmp_path / "routes.yml"
        path.write_text(
            f"""
destinations:
  down: {{type: webhook, url: "{rx.url}/down", tenants: [acme]}}
  gone: {{type: webhook, url: "http://127.0.0.1:9/nothing-listens", tenants: [acme]}}
  bad-secret: {{type: webhook, url: "{rx.url}/x", secret_env: MISSING_VAR, tenants: [acme]}}
  up: {{type: slack, url: "{rx.url}/up", tenants: [acme]}}
routes:
  - {{name: r, destinations: [down, gone, bad-secret, up]}}
"""
        )
        runner = make_runner(cfg, path)
        run_once(runner)
        assert len(rx.on("/up")) == 4
        # Three tries each at the down receiver (backoff in between), then dead letters.
        assert Counter(r.headers["x-sigstream-delivery"] for r in rx.on("/down")) == Counter(
            {d: 3 for d in {r.headers["x-sigstream-delivery"] for r in rx.on("/down")}}
        )
        assert len(rx.on("/down")) == 12
    with connect(get_settings().es_hosts) as es:
        es.indices.refresh(index=f"{cfg.log_index},{cfg.dead_index}")
        dead = es.search(index=cfg.dead_index, size=100)["hits"]["hits"]
        rows = {r["destination"]: r for r in status_rows(es, cfg.log_index, cfg.dead_index)}
    by_dest = Counter(h["_source"]["destination"] for h in dead)
    assert by_dest == {"down": 4, "gone": 4, "bad-secret": 4}
    errors = {h["_source"]["destination"]: h["_source"]["error"] for h in dead}
    assert "HTTP 503" in errors["down"]
    assert "ConnectError" in errors["gone"]
    assert "MISSING_VAR is not set" in errors["bad-secret"]
    assert rows["down"]["failed"] == 4 and rows["down"]["dead_letters"] == 4
    assert rows["up"]["sent"] == 4 and rows["up"]["failed"] == 0


def test_late_written_and_health_findings_are_followed(
    services: Any, unique: str, tmp_path: Path
) -> None:
    cfg = alert_config(unique, overlap_s=600.0)
    with http_receiver() as rx:
        path = routes_file(tmp_path, rx.url)
        write_findings(unique, docs("acme", 2))
        runner = make_runner(cfg, path)
        runner.open()
        runner.step()
        rx.wait("/signed/acme", 2)
        # Written now, stamped 5 minutes ago: behind the cursor, inside the overlap.
        late = finding_doc(tenant="acme", event_id="late", ingested=NOW - timedelta(minutes=5))
        # Sensor health findings have no event.ingested: followed on event.created.
        _, health = finding_doc(tenant="acme", event_id="h", rule_id=HEALTH_RULES["silent"].id)
        health["event"].pop("ingested")
        health["event"]["created"] = NOW.isoformat()
        write_findings(unique, [late, ("health-1", health)])
        runner.follower.last_sweep = 0.0
        wait_until(lambda: runner.step() >= 0 and len(rx.on("/signed/acme")) >= 4, what="late")
        kinds = Counter(r.json()["kind"] for r in rx.on("/signed/acme"))
        assert kinds == {"sigma": 3, "sensor_health": 1}
        runner.close()


def _cli_env(unique: str, cfg: Any, routes: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    env.update(
        {
            "PYTHONPATH": str(PROJECT_ROOT),
            "SIGSTREAM_FINDINGS_INDEX": cfg.findings_index,
            "SIGSTREAM_ALERTS_LOG_INDEX": cfg.log_index,
            "SIGSTREAM_ALERTS_DEAD_INDEX": cfg.dead_index,
            "SIGSTREAM_ALERTS_STATE_INDEX": cfg.state_index,
            "SIGSTREAM_ALERTS_POLL_S": "0.2",
            "SIGSTREAM_ALERT_ROUTES": str(routes),
            "HOOK_SECRET": "test-hmac-secret",
        }
    )
    return env


def _start_cli(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from sigstream.cli import app; app()", "alerts", "run", *args]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _sent(cfg: Any) -> int:
    """Deliveries the log says were sent (0 while the process is still creating it)."""
    with connect(get_settings().es_hosts) as es:
        try:
            es.indices.refresh(index=cfg.log_index)
            return sum(r["sent"] for r in status_rows(es, cfg.log_index, cfg.dead_index))
        except ApiError:
            return 0


def test_killed_process_rerun_delivers_each_once(
    services: Any, unique: str, tmp_path: Path
) -> None:
    """SIGKILL between deliveries, rerun, replay from the beginning: no duplicate. Then
    SIGKILL in the middle of sending: every finding arrives, and the only repeats are
    deliveries that were on the wire at the kill, with the same delivery id (the
    documented at-least-once window, which receivers close with that id)."""
    cfg = alert_config(unique)
    log = tmp_path / "alerts.log"
    write_findings(unique, docs("acme", 20))
    with http_receiver(delay_s=0.02) as rx:
        path = routes_file(tmp_path, rx.url)
        env = _cli_env(unique, cfg, path)
        proc = _start_cli(env, log, "--from", "beginning")
        try:
            wait_until(lambda: _sent(cfg) == 80, timeout=120, what="80 deliveries logged sent")
            proc.send_signal(signal.SIGKILL)  # no clean shutdown
            proc.wait(10)
            write_findings(unique, docs("acme", 10, start=20))
            proc = _start_cli(env, log, "--from", "beginning")
            wait_until(lambda: _sent(cfg) == 120, timeout=120, what="120 deliveries logged sent")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        # A replay of the whole index by a fresh process without its cursor.
        replay = _start_cli(env, log, "--from", "beginning", "--no-resume", "--once")
        assert replay.wait(120) == 0
        out = log.read_text()
        assert "120 already in the log" in out, out[-2000:]
        ids = Counter(r.headers["x-sigstream-delivery"] for r in rx.requests)
        assert len(ids) == 120 and max(ids.values()) == 1, out[-3000:]
        assert len({r.json()["finding_id"] for r in rx.on("/signed/acme")}) == 30

        # Killed while sending (the receiver takes 20 ms per request).
        rx.requests.clear()
        write_findings(unique, docs("acme", 40, start=30))
        proc = _start_cli(env, log)
        try:
            rx.wait("/signed/acme", 10, timeout=90)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = _start_cli(env, log)
            wait_until(lambda: _sent(cfg) == 280, timeout=120, what="280 deliveries logged sent")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        ids = Counter(r.headers["x-sigstream-delivery"] for r in rx.requests)
        assert len(ids) == 160
        repeats = sum(v - 1 for v in ids.values())
        assert repeats <= 4, ids  # at most one in flight per destination worker
        assert len({r.json()["finding_id"] for r in rx.on("/signed/acme")}) == 40


def test_throttle_sends_one_then_a_digest_with_the_count(
    services: Any, unique: str, tmp_path: Path
) -> None:
    cfg = alert_config(unique)
    with http_receiver() as rx:
        path = tmp_path / "routes.yml"
        path.write_text(
            f"""
destinations:
  hook: {{type: webhook, url: "{rx.url}/signed/h", secret_env: HOOK_SECRET, tenants: [acme]}}
routes:
  - name: throttled
    destinations: [hook]
    throttle: {{window: 3s, per: [rule, host], max: 1}}
silences:
  - {{id: maint, match: {{hosts: [WS-9]}}, until: "2999-01-01T00:00:00Z", reason: rebuild}}
"""
        )
        same = [finding_doc(tenant="acme", event_id=f"t{i}", host="WS-1") for i in range(5)]
        other = [finding_doc(tenant="acme", event_id="o", host="WS-2")]
        silenced = [finding_doc(tenant="acme", event_id="s", host="WS-9")]
        write_findings(unique, same + other + silenced)
        runner = make_runner(cfg, path)
        runner.open()
        wait_until(
            lambda: runner.step() >= 0 and len(rx.on("/signed/h")) >= 3, timeout=30, what="digest"
        )
        runner.close()
    bodies = [r.json() for r in rx.on("/signed/h")]
    assert sorted((b["type"], b["host"], b["digest_count"] or 0) for b in bodies) == [
        ("digest", "WS-1", 4),
        ("finding", "WS-1", 0),
        ("finding", "WS-2", 0),
    ]
    assert bodies[-1]["type"] == "digest"  # at the window's end, after the first two
    assert bodies[-1]["headline"] == "4 more: Suspicious PowerShell on WS-1"
    with connect(get_settings().es_hosts) as es:
        es.indices.refresh(index=cfg.log_index)
        (row,) = status_rows(es, cfg.log_index, cfg.dead_index)
        silence = es.search(index=cfg.log_index, query={"term": {"status": "silenced"}})
    assert (row["sent"], row["throttled"], row["silenced"]) == (3, 4, 1)
    assert silence["hits"]["hits"][0]["_source"]["reason"] == "maint: rebuild"
