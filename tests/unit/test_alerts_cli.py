"""`sigstream alerts check`: exit 2 with file:line: reason on a bad file; which routes a
finding would match on a good one."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sigstream.cli import app
from tests.alerts_support import finding_doc

GOOD = """destinations:
  hook: {type: webhook, url: "http://127.0.0.1:1/h", secret_env: HOOK_KEY, tenants: [acme]}
  siem: {type: syslog, host: 127.0.0.1, port: 1514, format: cef, tenants: ["*"]}
routes:
  - name: critical
    match: {min_level: critical}
    destinations: [hook, siem]
  - name: all-ps
    match: {tags: ["attack.t1059*"]}
    destinations: [siem]
    throttle: {window: 15m}
silences:
  - {id: lab, match: {hosts: ["LAB-*"]}, until: "2999-01-01T00:00:00Z", reason: lab hosts}
"""


def test_check_bad_file_exits_2_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "routes.yml"
    path.write_text(GOOD.replace("destinations: [hook, siem]", "destinations: [hook, pager]"))
    result = CliRunner().invoke(app, ["alerts", "check", str(path)])
    assert result.exit_code == 2
    assert f"{path}:7: no destination named 'pager'" in " ".join(result.output.split())


def test_check_shows_what_a_finding_would_match(tmp_path: Path) -> None:
    path = tmp_path / "routes.yml"
    path.write_text(GOOD)
    _, doc = finding_doc(level="critical")
    finding = tmp_path / "f.json"
    finding.write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["alerts", "check", str(path), "--finding", str(finding)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ok: 2 routes, 2 destinations, 1 silences" in out
    assert "critical" in out and "all-ps" in out and "throttled" in out
    other = CliRunner().invoke(
        app, ["alerts", "check", str(path), "--finding", str(finding), "--tenant", "globex"]
    )
    # Another tenant: the acme-only webhook is not planned, the global SIEM is.
    rows = [ln for ln in other.output.splitlines() if "│" in ln]
    assert not any(" hook " in r for r in rows) and any(" siem " in r for r in rows)
    lab = CliRunner().invoke(app, ["alerts", "check", str(path), "--sample"])
    assert lab.exit_code == 0 and "all-ps" in lab.output
