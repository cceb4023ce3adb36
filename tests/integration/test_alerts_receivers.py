"""Alert delivery to real receivers on loopback: SMTP with STARTTLS and authentication
(aiosmtpd), syslog RFC 5424 over TCP and CEF over UDP (Debian's rsyslog, run as our own
process writing what it parsed to a file), and OCSF Detection Findings on a real Kafka
topic, consumed back and validated against the OCSF 1.5.0 schema."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from common.settings import get_settings
from ingest.gateway.tls import generate_self_signed
from tests.alerts_support import finding_doc
from tests.integration.alerts_support import alert_config, make_runner, run_once, write_findings

pytestmark = pytest.mark.integration

RSYSLOG_ROOT = Path(os.environ.get("SIGSTREAM_RSYSLOG_ROOT", "/opt/rsyslog-private"))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(tool: str, found: bool, hint: str) -> None:
    if found:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{tool} not installed ({hint}): .ci/run installs it")
    pytest.skip(f"{tool} not installed ({hint})")


def test_email_over_starttls_with_auth(services: Any, unique: str, tmp_path: Path) -> None:
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    generate_self_signed(cert, key, ["127.0.0.1", "localhost"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    received: list[Any] = []
    logins: list[tuple[str, bool]] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"alerts",
            b"s3cret",
        )
        logins.append((mechanism, ok))
        return AuthResult(success=ok)

    port = free_port()
    controller = aiosmtpd.Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
        server_hostname="localhost",
    )
    routes = tmp_path / "routes.yml"
    routes.write_text(
        f"""
destinations:
  soc-mail:
    type: email
    host: 127.0.0.1
    port: {port}
    username: alerts
    password_env: SMTP_PASSWORD
    ca_file: {cert}
    from: sigstream@example.org
    to: [soc@example.org, oncall@example.org]
    tenants: [acme]
routes:
  - {{name: mail-high, match: {{min_level: high}}, destinations: [soc-mail]}}
"""
    )
    write_findings(unique, [finding_doc(event_id="m1"), finding_doc(event_id="m2", level="low")])
    controller.start()
    try:
        run_once(make_runner(alert_config(unique), routes, {"SMTP_PASSWORD": "s3cret"}))
    finally:
        controller.stop()
    assert logins and all(ok for _, ok in logins)
    assert len(received) == 1  # the low finding matches no route
    envelope = received[0]
    assert envelope.mail_from == "sigstream@example.org"
    assert sorted(envelope.rcpt_tos) == ["oncall@example.org", "soc@example.org"]
    msg = message_from_bytes(envelope.original_content, policy=policy.default)
    assert msg["Subject"] == "[HIGH] Suspicious PowerShell on WS-0042"
    assert len(msg["X-Sigstream-Delivery"]) == 40
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for part in (plain, html):
        assert "Tenant" in part and "acme" in part
        assert "PowerShell started by an Office application." in part
        assert "https://attack.mitre.org/techniques/T1059/001/" in part
        assert "http://triage.test:8000/#/finding/" in part


def rsyslogd() -> Path | None:
    binary = RSYSLOG_ROOT / "usr" / "sbin" / "rsyslogd"
    return binary if binary.is_file() else None


def test_syslog_rfc5424_and_cef_to_rsyslog(services: Any, unique: str, tmp_path: Path) -> None:
    binary = rsyslogd()
    need("rsyslog", binary is not None, f"Debian's rsyslog unpacked in {RSYSLOG_ROOT}")
    assert binary is not None
    modules = binary.parent.parent / "lib" / "x86_64-linux-gnu" / "rsyslog"
    run = tmp_path / "rsyslog"
    run.mkdir()
    out = run / "received.log"
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    config = run / "rsyslog.conf"
    # What rsyslog parsed from each message (its RFC 5424 parser), one line each.
    config.write_text(
        f"""global(workDirectory="{run}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
template(name="parsed" type="list") {{
  property(name="inputname") constant(value="|")
  property(name="pri") constant(value="|")
  property(name="protocol-version") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg" droplastlf="on") constant(value="\\n")
}}
ruleset(name="siem") {{ action(type="omfile" file="{out}" template="parsed") }}
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="siem")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="siem")
"""
    )
    log = run / "rsyslogd.log"
    proc = subprocess.Popen(
        [str(binary), "-n", "-f", str(config), "-i", str(run / "pid"), "-M", str(modules)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", tcp), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        routes = tmp_path / "routes.yml"
        routes.write_text(
            f"""
destinations:
  siem-5424: {{type: syslog, host: 127.0.0.1, port: {tcp}, protocol: tcp, tenants: ["*"]}}
  siem-cef: {{type: syslog, host: 127.0.0.1, port: {udp}, protocol: udp, format: cef,
             tenants: ["*"]}}
routes:
  - {{name: siem, destinations: [siem-5424, siem-cef]}}
"""
        )
        write_findings(
            unique, [finding_doc(event_id="s1"), finding_doc(event_id="s2", tenant="globex")]
        )
        run_once(make_runner(alert_config(unique), routes))
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = out.read_text().splitlines() if out.exists() else []
            if len(lines) >= 4:
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(20)
    assert len(lines) == 4, (lines, log.read_text())
    tcp_lines = [ln.split("|", 6) for ln in lines if ln.startswith("imtcp|")]
    udp_lines = [ln.split("|", 6) for ln in lines if ln.startswith("imudp|")]
    assert len(tcp_lines) == 2 and len(udp_lines) == 2
    for _, pri, version, app, msgid, sd, msg in tcp_lines:
        assert (pri, version, app, msgid) == ("83", "1", "sigstream", "finding")  # authpriv.err
        assert sd.startswith("[sigstream@32473 finding=")
        assert 'rule="rule-ps"' in sd and 'host="WS-0042"' in sd and 'level="high"' in sd
        assert 'link="http://triage.test:8000/#/finding/' in sd
        assert "[HIGH] Suspicious PowerShell on WS-0042" in msg
    assert {t for t in ("acme", "globex") for row in tcp_lines if f'tenant="{t}"' in row[5]} == {
        "acme",
        "globex",
    }
    for row in udp_lines:
        assert row[4] == "cef"
        cef = "|".join(row[6:])
        assert cef.lstrip("\ufeff").startswith(
            "CEF:0|Sigstream|Sigstream|0.1.0|rule-ps|Suspicious PowerShell|8|"
        ), cef
        assert "dhost=WS-0042" in cef and "cs2=T1059.001" in cef


def test_ocsf_findings_on_kafka(services: Any, unique: str, tmp_path: Path) -> None:
    from confluent_kafka import Consumer

    from tests.unit.test_alerts_render import ocsf_validator

    validator = ocsf_validator()
    topic = f"test.{unique}.ocsf"
    routes = tmp_path / "routes.yml"
    routes.write_text(
        f"""
destinations:
  soar: {{type: kafka, topic: "{topic}", tenants: ["*"]}}
routes:
  - {{name: soar, destinations: [soar]}}
"""
    )
    docs = [finding_doc(event_id=f"k{i}", host=f"H{i}") for i in range(3)]
    write_findings(unique, docs)
    run_once(make_runner(alert_config(unique), routes))
    consumer = Consumer(
        {
            "bootstrap.servers": get_settings().kafka_bootstrap,
            "group.id": f"test-{unique}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                records.append(msg)
    finally:
        consumer.close()
    assert len(records) == 3
    ids = {d[1]["sigstream"]["finding"]["id"] for d in docs}
    assert {m.key().decode() for m in records} == ids
    for m in records:
        record = json.loads(m.value())
        assert [e.message for e in validator.iter_errors(record)] == []
        assert record["class_uid"] == 2004 and record["metadata"]["tenant_uid"] == "acme"
        assert record["device"]["hostname"] in {"H0", "H1", "H2"}
        assert dict(m.headers())["sigstream.delivery"]
