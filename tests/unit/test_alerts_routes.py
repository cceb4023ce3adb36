"""Routes file loading, finding kinds, route matching, silences, tenant isolation and
throttling: the pure core of alert routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detections.content.canary.finding_docs import NOT_FIRING_RULE_ID
from detections.content.deploy.demotion import DEMOTION_RULE_ID
from detections.drift.finding_docs import FIELD_DRIFT_RULE
from detections.health.finding_docs import HEALTH_RULES
from tests.alerts_support import finding_doc
from triage.alerts.config import RoutesError, load_routes, parse_duration, parse_routes
from triage.alerts.kinds import finding_kind
from triage.alerts.routing import facts, plan
from triage.alerts.throttle import Throttler

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

ROUTES = """
destinations:
  acme-hook: {type: webhook, url: "http://127.0.0.1:1/h", tenants: [acme]}
  globex-slack: {type: slack, url: "http://127.0.0.1:1/s", tenants: [globex]}
  soc-siem: {type: syslog, host: 127.0.0.1, port: 1514, tenants: ["*"]}
routes:
  - name: high-everywhere
    match: {min_level: high}
    destinations: [acme-hook, globex-slack, soc-siem]
  - name: ps-on-workstations
    match: {tags: ["attack.t1059*"], hosts: ["ws-*"], kinds: [sigma]}
    destinations: [acme-hook]
    throttle: {window: 15m, per: [rule, host], max: 1}
  - name: health
    match: {kinds: [sensor_health]}
    destinations: [soc-siem]
silences:
  - id: maint
    match: {hosts: ["WS-0099"]}
    until: "2026-12-06T13:00:00Z"
    reason: patching WS-0099
"""


def routes():
    return parse_routes(ROUTES, "routes.yml")


def test_a_finding_never_reaches_another_tenants_destination() -> None:
    for tenant, allowed in (("acme", "acme-hook"), ("globex", "globex-slack"), ("other", None)):
        _, doc = finding_doc(tenant=tenant, level="critical")
        dests = {s.destination for s in plan(routes(), facts(doc), NOW)}
        expected = {"soc-siem"} | ({allowed} if allowed else set())
        assert dests == expected, tenant
        # Whatever a route says, a destination of another tenant is never planned.
        for other in {"acme-hook", "globex-slack"} - {allowed}:
            assert other not in dests


def test_destination_without_tenants_is_refused_and_star_must_be_explicit() -> None:
    bad = ROUTES.replace("tenants: [acme]}", "}")
    with pytest.raises(RoutesError) as exc:
        parse_routes(bad, "routes.yml")
    assert exc.value.line == 3
    assert "tenants" in exc.value.reason
    assert routes().destinations["soc-siem"].allows("anyone")
    assert not routes().destinations["acme-hook"].allows("globex")


def test_canary_findings_are_never_routed() -> None:
    _, doc = finding_doc(tenant="_canary", level="critical")
    assert plan(routes(), facts(doc), NOW) == []


def test_match_on_level_tags_host_rule_and_kind() -> None:
    _, low = finding_doc(level="low", host="ws-1")
    assert [s.route for s in plan(routes(), facts(low), NOW)] == ["ps-on-workstations"]
    _, server = finding_doc(level="low", host="SRV-1")
    assert plan(routes(), facts(server), NOW) == []
    _, untagged = finding_doc(level="low", host="ws-1", tags=[])
    # ECS threat fields are matched too; without them no tag matches.
    assert plan(routes(), facts(untagged), NOW) == []
    by_rule = parse_routes(
        ROUTES.replace("match: {min_level: high}", "match: {rules: ['*powershell*']}"), "r"
    )
    _, doc = finding_doc(level="low", host="SRV-1", name="Suspicious PowerShell")
    assert {s.route for s in plan(by_rule, facts(doc), NOW)} == {"high-everywhere"}


def test_kinds_come_from_the_table() -> None:
    _, doc = finding_doc()
    assert finding_kind(doc) == "sigma"
    doc["sigstream"]["correlation"] = {"type": "event_count"}
    assert finding_kind(doc) == "correlation"
    _, health = finding_doc(rule_id=HEALTH_RULES["silent"].id)
    assert finding_kind(health) == "sensor_health"
    steps = plan(routes(), facts(health), NOW)
    assert list(dict.fromkeys(s.route for s in steps)) == ["high-everywhere", "health"]
    _, demoted = finding_doc(rule_id=DEMOTION_RULE_ID)
    assert finding_kind(demoted) == "rule_demotion"
    _, not_firing = finding_doc(rule_id=NOT_FIRING_RULE_ID)
    assert finding_kind(not_firing) == "rule_health"
    _, drift = finding_doc(rule_id=FIELD_DRIFT_RULE.id)
    assert finding_kind(drift) == "field_drift"


def test_reserved_tenants_are_never_routed() -> None:
    _, doc = finding_doc(level="critical")
    assert plan(routes(), facts(doc), NOW)
    doc["sigstream"]["tenant_id"] = "_canary"
    assert plan(routes(), facts(doc), NOW) == []
    doc["sigstream"]["tenant_id"] = "_c"
    assert plan(routes(), facts(doc), NOW) == []


def test_silence_in_force_until_its_expiry() -> None:
    _, doc = finding_doc(host="WS-0099", level="critical")
    steps = plan(routes(), facts(doc), NOW)
    assert steps and all(s.action == "silenced" for s in steps)
    assert steps[0].silence is not None and steps[0].silence.reason == "patching WS-0099"
    later = plan(routes(), facts(doc), NOW + timedelta(hours=2))
    assert later and all(s.action == "send" for s in later)


def test_throttle_one_per_rule_and_host_then_a_digest() -> None:
    r = routes().routes[1]
    assert r.throttle is not None and r.throttle.window == 900
    t = Throttler()
    _, a = finding_doc(host="ws-1")
    _, b = finding_doc(host="ws-2")
    _, other_tenant = finding_doc(host="ws-1", tenant="globex")
    assert t.admit(r.name, r.throttle, facts(a), "a1", 0.0)
    assert not t.admit(r.name, r.throttle, facts(a), "a2", 10.0)
    assert not t.admit(r.name, r.throttle, facts(a), "a3", 20.0)
    assert t.admit(r.name, r.throttle, facts(b), "b1", 30.0)
    assert t.admit(r.name, r.throttle, facts(other_tenant), "g1", 40.0)  # own key
    assert t.due(899.0, {r.name}) == []
    digests = t.due(900.0, {r.name})
    assert [(d.count, d.facts.host, d.facts.tenant, d.sample) for d in digests] == [
        (2, "ws-1", "acme", "a3")
    ]
    assert t.admit(r.name, r.throttle, facts(a), "a4", 901.0)  # a new window


def test_bad_files_say_file_line_and_reason(tmp_path: Path) -> None:
    cases = {
        "destinations: [1\n": 2,
        ROUTES.replace("destinations: [acme-hook]\n", "destinations: [nope]\n"): 12,
        ROUTES.replace("window: 15m", "window: soon"): 13,
        ROUTES.replace('until: "2026-12-06T13:00:00Z"', 'until: "2026-12-06T13:00:00"'): 20,
        ROUTES.replace("kinds: [sigma]", "kinds: [sigmaa]"): 11,
        ROUTES.replace("type: webhook", "type: pager"): 3,
        "- just a list\n": 1,
    }
    for i, (text, line) in enumerate(cases.items()):
        path = tmp_path / f"r{i}.yml"
        path.write_text(text)
        with pytest.raises(RoutesError) as exc:
            load_routes(path)
        assert str(exc.value).startswith(f"{path}:{line}: "), (str(exc.value), line)
    bomb = tmp_path / "bomb.yml"
    bomb.write_text("a: &a [x]\n" + "".join(f"b{i}: &b{i} [*a, *a]\n" for i in range(80)))
    with pytest.raises(RoutesError, match=r"aliases|nodes"):
        load_routes(bomb)


def test_durations() -> None:
    assert parse_duration("15m") == 900
    assert parse_duration(90) == 90
    assert parse_duration("1.5h") == 5400
    for bad in ("0s", "-1", "soon", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_warns_when_a_route_names_a_destination_that_refuses_its_tenants() -> None:
    warnings = routes().warnings()
    assert any("'high-everywhere'" in w and "'acme-hook'" in w for w in warnings)
    assert not any("soc-siem" in w for w in warnings)


def test_routes_file_is_hot_reloaded_and_a_bad_version_keeps_the_old(tmp_path: Path) -> None:
    import os

    from triage.alerts.runner import RoutesWatcher

    path = tmp_path / "routes.yml"
    path.write_text(ROUTES)
    watcher = RoutesWatcher(path)
    assert watcher.poll() and watcher.routes is not None and watcher.error is None
    first = watcher.routes
    assert not watcher.poll()  # unchanged: not re-read
    path.write_text(ROUTES.replace("window: 15m", "window: never"))
    os.utime(path, ns=(1, 1))
    assert not watcher.poll()
    assert watcher.routes is first  # the old routes stay in force
    assert watcher.error is not None and watcher.error.startswith(f"{path}:13: ")
    path.write_text(ROUTES.replace("window: 15m", "window: 5m"))
    assert watcher.poll()
    assert watcher.routes is not first and watcher.error is None
    assert watcher.routes.routes[1].throttle is not None
    assert watcher.routes.routes[1].throttle.window == 300


def test_a_fifo_or_an_oversized_routes_file_is_refused_and_the_old_routes_stay(
    tmp_path: Path,
) -> None:
    import os

    from triage.alerts.config import ROUTES_LIMITS
    from triage.alerts.runner import RoutesWatcher

    path = tmp_path / "routes.yml"
    path.write_text(ROUTES)
    watcher = RoutesWatcher(path)
    assert watcher.poll()
    first = watcher.routes
    path.write_bytes(b"#" * (ROUTES_LIMITS.max_bytes + 1))
    assert not watcher.poll()
    assert watcher.routes is first
    assert watcher.error is not None and "content limit" in watcher.error
    path.unlink()
    os.mkfifo(path)  # nobody writes it: reading it must not wait
    assert not watcher.poll()
    assert watcher.routes is first
    assert watcher.error is not None and "not a regular file" in watcher.error
