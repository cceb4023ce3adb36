"""Every notification format carries what an analyst needs, renders the match details
when the finding has them, leaves them out cleanly when not, and escapes hostile values.
The OCSF record validates against the OCSF 1.5.0 schema (the `ocsf-json-schema`
package's copy of the official export)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from tests.alerts_support import finding_doc
from triage.alerts.destinations.http import sign, verify
from triage.alerts.ocsf import detection_finding
from triage.alerts.render import (
    cef,
    email_message,
    notification,
    slack_payload,
    syslog_5424,
    teams_adaptive,
    teams_messagecard,
    technique_url,
    text,
    webhook_body,
)

BASE = "https://triage.example:8000"


def note(with_match: bool = True, **kw):
    _, doc = finding_doc(with_match=with_match, **kw)
    return notification(doc, BASE, "sigma", "r1"), doc


def _all_renderings(n) -> dict[str, str]:
    msg = email_message(n, "alerts@example.org", ["soc@example.org"], "d" * 40)
    return {
        "text": text(n),
        "webhook": json.dumps(webhook_body(n)),
        "slack": json.dumps(slack_payload(n)),
        "messagecard": json.dumps(teams_messagecard(n)),
        "adaptive": json.dumps(teams_adaptive(n)),
        "email": msg.get_body(("plain",)).get_content() + msg.get_body(("html",)).get_content(),
        "syslog": syslog_5424(n, app_name="sigstream", facility=10, hostname="h").decode(),
        "cef": cef(n),
        "ocsf": json.dumps(detection_finding(n)),
    }


def test_every_format_has_the_essentials() -> None:
    n, doc = note()
    group = doc["sigstream"]["group"]["id"]
    assert n.link == f"{BASE}/#/finding/{group}"
    for name, out in _all_renderings(n).items():
        assert "Suspicious PowerShell" in out, name
        assert "WS-0042" in out, name
        assert "acme" in out, name
        assert "high" in out.lower(), name
        assert n.link.replace("/", "\\/") in out or n.link in out, name
        assert "T1059.001" in out, name
        if name not in ("syslog", "cef"):  # one-line formats keep the link, not the notes
            assert "Administrators running scripts" in out, name
            assert "PowerShell started by an Office application." in out, name
        if name not in ("syslog", "messagecard", "adaptive", "cef"):
            assert "https://attack.mitre.org/techniques/T1059/001/" in out, name
            assert "https://example.org/ps" in out, name
        # The match details: selection, field, modifier, value (keywords too).
        assert "selection_img" in out, name
        assert "endswith" in out, name
        assert "mimikatz" in out, name
        if name == "ocsf":
            assert json.loads(out)["time"] == 1796551200000  # epoch ms of the finding
        else:
            assert "2026-12-06T10:00:00" in out, name


def test_without_match_details_nothing_breaks() -> None:
    n, _ = note(with_match=False)
    assert not n.has_match and n.falsepositives == []
    for name, out in _all_renderings(n).items():
        assert "selection_img" not in out and "Why it matched" not in out, name
    assert webhook_body(n)["match"] is None
    assert "evidences" not in detection_finding(n) or all(
        "selections" not in e.get("data", {}) for e in detection_finding(n)["evidences"]
    )


def test_malformed_match_details_are_left_out() -> None:
    _, doc = finding_doc()
    doc["sigstream"]["match"] = {"selections": ["nonsense", {"name": "s", "fields": [3]}]}
    n = notification(doc, BASE, "sigma")
    assert [s.name for s in n.selections] == ["s"] and n.selections[0].fields == []


def test_technique_links() -> None:
    assert technique_url("T1059") == "https://attack.mitre.org/techniques/T1059/"
    assert technique_url("t1059.001") == "https://attack.mitre.org/techniques/T1059/001/"


def test_only_well_formed_techniques_get_links_in_every_format() -> None:
    n, _ = note()
    n = replace(n, techniques=["T1059.001", "javascript:alert(1)", "T1"])
    assert n.technique_links == [("T1059.001", "https://attack.mitre.org/techniques/T1059/001/")]
    assert technique_url("javascript:alert(1)") is None
    for name, rendered in _all_renderings(n).items():
        assert "techniques/javascript" not in rendered, name
        assert "techniques/T1/" not in rendered, name
    ocsf = detection_finding(n)
    assert [a["technique"]["uid"] for a in ocsf["finding_info"]["attacks"]] == ["T1059"]


def test_hostile_values_are_escaped_and_bounded() -> None:
    _, doc = finding_doc(host="<!channel> evil|host=x]\nnext", name="a|b\\c", with_match=True)
    doc["process"]["command_line"] = "x" * 100_000
    n = notification(doc, BASE, "sigma")
    slack = json.dumps(slack_payload(n))
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack
    for block in slack_payload(n)["blocks"]:
        assert len(json.dumps(block)) < 3500
    c = cef(n)
    assert c.startswith("CEF:0|Sigstream|Sigstream|1|rule-ps|a\\|b\\\\c|8|")
    assert "dhost=<!channel> evil|host\\=x]\\nnext" in c
    line = syslog_5424(n, app_name="sigstream", facility=10, hostname="h")
    assert b"\n" not in line
    sd = re.search(rb'host="([^"]*)"', line)
    assert sd is not None and sd.group(1) == b"<!channel> evil|host=x\\] next"
    html_body = email_message(n, "a@b.c", ["d@e.f"], "id").get_body(("html",)).get_content()
    assert "<!channel>" not in html_body
    assert len(webhook_body(n)["command_line"]) <= 500


def test_rfc5424_header_and_priority() -> None:
    n, _ = note()
    line = syslog_5424(n, app_name="sigstream", facility=10, hostname="collector").decode()
    # <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] BOM MSG; high -> severity 3 (error)
    assert re.match(
        r"^<83>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z collector sigstream - finding "
        r"\[sigstream@32473 finding=\"[0-9a-f]{40}\" rule=\"rule-ps\"",
        line,
    ), line
    assert "\ufeff[HIGH] Suspicious PowerShell on WS-0042" in line


def test_digest_notification_says_how_many() -> None:
    n, _ = note()
    d = replace(n, digest_count=12, digest_window=("t0", "t1"))
    assert d.headline == "12 more: Suspicious PowerShell on WS-0042"
    assert webhook_body(d)["type"] == "digest" and webhook_body(d)["digest_count"] == 12
    assert "cnt=12" in cef(d)
    assert detection_finding(d)["count"] == 12


def test_webhook_signature_is_replay_safe() -> None:
    body = b'{"a":1}'
    headers = {"X-Sigstream-Timestamp": "1000", "X-Sigstream-Signature": sign("k", "1000", body)}
    assert verify("k", headers, body, now=1100)
    assert not verify("other", headers, body, now=1100)
    assert not verify("k", headers, body + b" ", now=1100)
    assert not verify("k", headers, body, now=1000 + 301)  # too old: a replay
    assert not verify("k", {**headers, "X-Sigstream-Timestamp": "1001"}, body, now=1100)


def ocsf_validator():
    pytest.importorskip("jsonschema")
    schema_pkg = pytest.importorskip("ocsf_json_schema")
    import jsonschema

    schema = schema_pkg.OcsfJsonSchemaEmbedded(schema_pkg.get_ocsf_schema(version="1.5.0"))
    name = schema.lookup_class_name_from_uid(class_uid=2004)
    assert name == "detection_finding"
    return jsonschema.Draft202012Validator(schema.get_class_schema(class_name=name, profiles=[]))


def test_ocsf_detection_finding_validates_against_the_schema() -> None:
    validator = ocsf_validator()
    for with_match in (True, False):
        n, _ = note(with_match=with_match)
        for variant in (n, replace(n, digest_count=3), replace(n, techniques=[], level="x")):
            record = detection_finding(variant)
            errors = [e.message for e in validator.iter_errors(record)]
            assert errors == [], errors
            assert record["class_uid"] == 2004 and record["type_uid"] == 200401
    record = detection_finding(note()[0])
    assert record["severity_id"] == 4 and record["finding_info"]["src_url"].startswith(BASE)
    assert record["finding_info"]["attacks"][0]["sub_technique"]["uid"] == "T1059.001"
    # The validator does reject a wrong record (the test can fail).
    assert list(validator.iter_errors({**record, "class_uid": 2003}))
    assert list(validator.iter_errors({**record, "bogus": 1}))
