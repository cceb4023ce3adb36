"""The project's own correlation rules, end to end without services: events through the
engine's matcher (the code the Spark workers run) and the correlation state machine; plus
the finding a firing becomes and the `rules correlations` command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from typer.testing import CliRunner

from detections.correlation.finding_docs import correlation_finding, late_document
from detections.correlation.offline import correlate_events
from detections.correlation.query import CorrelationContent, load_content
from detections.correlation.state import Firing, Late, Match
from detections.sinks.finding_docs import finding_document
from schemas.events import parse_event
from schemas.findings import Finding, finding_id
from sigstream.commands.correlations import OWN_CORRELATIONS

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def ev(kind: str, seconds: float, eid: str, host: str = "WS1", **fields: Any) -> dict[str, Any]:
    category = None if kind == "windows_event" else kind
    return parse_event(
        {
            "event_type": kind,
            "sensor_id": f"s-{host}",
            "host": host,
            "event_id": eid,
            "event_time": (T0 + timedelta(seconds=seconds)).isoformat(),
            "logsource": {"product": "windows", "category": category}
            | ({"service": "security"} if kind == "windows_event" else {}),
            **fields,
        }
    ).model_dump(mode="json")


def correlate(
    content: CorrelationContent, title: str, events: list[dict[str, Any]]
) -> list[Firing]:
    """Events -> base-rule matches (engine) -> the named correlation's firings."""
    return [f for spec, f in correlate_events(content, events) if spec.title == title]


def own() -> CorrelationContent:
    content = load_content([OWN_CORRELATIONS])
    assert not content.rejections
    return content


def test_failed_logon_burst() -> None:
    content = own()
    title = "Burst Of Failed Logons On One Host"
    fails = [ev("windows_event", i * 30, f"f{i}", EventID=4625) for i in range(5)]
    (firing,) = correlate(content, title, fails)
    assert firing.value == 5
    assert correlate(content, title, fails[:4]) == []  # four is not a burst
    spread = [ev("windows_event", i * 200, f"f{i}", EventID=4625) for i in range(5)]
    assert correlate(content, title, spread) == []  # five, but not within ten minutes
    two_hosts = [ev("windows_event", i, f"f{i}", host=f"H{i % 2}", EventID=4625) for i in range(6)]
    assert correlate(content, title, two_hosts) == []  # three per host


def test_recon_burst_counts_distinct_command_lines() -> None:
    content = own()
    title = "Burst Of Distinct Reconnaissance Commands On One Host"
    cmds = ["whoami /all", "net user", "ipconfig /all", "systeminfo", "nltest /dclist:"]
    images = ["whoami.exe", "net.exe", "ipconfig.exe", "systeminfo.exe", "nltest.exe"]
    burst = [
        ev(
            "process_creation",
            i * 20,
            f"r{i}",
            Image=f"C:\\Windows\\System32\\{img}",
            CommandLine=c,
        )
        for i, (img, c) in enumerate(zip(images, cmds, strict=True))
    ]
    (firing,) = correlate(content, title, burst)
    assert firing.value == 5
    same = [
        ev(
            "process_creation",
            i,
            f"w{i}",
            Image="C:\\Windows\\System32\\whoami.exe",
            CommandLine="whoami",
        )
        for i in range(6)
    ]
    assert correlate(content, title, same) == []


def test_office_powershell_network_needs_the_order() -> None:
    content = own()
    title = "Office Document Launches PowerShell That Connects Out"
    spawn = ev(
        "process_creation",
        0,
        "p1",
        Image="C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        ParentImage="C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
    )
    connect = ev(
        "network_connection",
        30,
        "n1",
        Image="C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        Initiated="true",
        DestinationIp="203.0.113.7",
    )
    (firing,) = correlate(content, title, [spawn, connect])
    assert firing.value == 2
    connect_first = dict(connect, event_time=(T0 - timedelta(seconds=30)).isoformat())
    assert correlate(content, title, [spawn, connect_first]) == []


def test_a_firing_becomes_a_valid_finding_linking_its_base_findings() -> None:
    content = own()
    spec = next(s for s in content.specs if s.type == "event_count")
    matches = tuple(
        Match(1_000 * i, spec.rules[0], f"e{i}", None, "WS1", "s-WS1", "acme") for i in range(1, 6)
    )
    firing = Firing(spec.id, "WS1", 1_000, 601_000, 5, matches)
    finding = correlation_finding(spec, firing)
    fid, body = finding_document(finding)
    assert fid == firing.finding_id == correlation_finding(spec, firing).sigstream.finding.id
    assert Finding.model_validate(body).sigstream.correlation is not None
    corr = body["sigstream"]["correlation"]
    assert corr["base_findings"] == [
        finding_id(spec.rules[0], "acme", "s-WS1", f"e{i}") for i in range(1, 6)
    ]
    assert corr["group_by"] == {"host": "WS1"} and corr["value"] == 5
    assert body["event"]["category"] == "correlation" and body["host"]["name"] == "WS1"
    assert body["sigstream"]["tenant_id"] == "acme"
    assert body["rule"]["id"] == spec.id and body["threat"]["technique"]["id"] == ["T1110.001"]
    other_window = Firing(spec.id, "WS1", 2_000, 602_000, 5, matches)
    assert other_window.finding_id != firing.finding_id
    late_id, late = late_document(spec, "WS1", Late(matches[0], 90_000))
    assert late["lateness_ms"] == 89_000
    assert late["finding_id"] == finding_id(spec.rules[0], "acme", "s-WS1", "e1")
    assert late_id == late_document(spec, "WS1", Late(matches[0], 95_000))[0]


def test_cli_lists_correlations_and_fails_on_quarantined(tmp_path: Any) -> None:
    from sigstream.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["rules", "correlations", str(OWN_CORRELATIONS)])
    assert ok.exit_code == 0, ok.output
    assert "value_count" in ok.output and "3 correlation rule(s)" in ok.output
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "title: Bad\nid: 9f0e0000-0000-4000-8000-000000000001\ncorrelation:\n"
        "  type: event_count\n  rules: missing_rule\n  timespan: 1m\n  condition: {gte: 2}\n"
    )
    refused = runner.invoke(app, ["rules", "correlations", str(OWN_CORRELATIONS), str(bad)])
    assert refused.exit_code == 1 and "unknown_rule" in refused.output


def test_detect_silences_base_rules_that_only_feed_correlations(tmp_path: Any) -> None:
    """`sigstream detect` passes the generate: false base rules to the job as
    silent_rule_ids, and adds the correlation query as a companion."""
    from common.settings import get_settings
    from detections.stream.job import JobConfig
    from sigstream.commands.correlations import with_correlations

    cfg = JobConfig("k:9092", "t", "d", ("http://es:9200",), "f", tmp_path)
    silenced, companions = with_correlations(cfg, [OWN_CORRELATIONS], get_settings())
    titles = {str(p.rule.id): p.rule.title for p in own().plan.rules}
    assert sorted(titles[i] for i in silenced.silent_rule_ids) == [
        "Failed Logon",
        "Reconnaissance Command",
    ]  # the Office -> PowerShell bases feed a generate: true correlation: they still alert
    assert len(companions) == 1
    empty = tmp_path / "none"
    empty.mkdir()
    assert with_correlations(cfg, [empty], get_settings()) == (cfg, [])
