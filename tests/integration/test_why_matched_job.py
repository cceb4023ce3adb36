"""Why it matched, end to end on the real stack: SigmaHQ regression events through Kafka
and the Spark detection job; the findings in Elasticsearch say which selections held, on
which field and value; ``findings show`` and the API print them, and resolve a
correlation finding's base findings with their match details."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from common.settings import Settings
from detections.compiler.plan import load_plan
from detections.sinks.elasticsearch import connect
from detections.sinks.finding_docs import finding_document
from detections.sinks.groups import sync_groups
from schemas.findings import (
    CorrelationInfo,
    EventInfo,
    Finding,
    FindingState,
    GroupInfo,
    HostInfo,
    RuleInfo,
    SigstreamInfo,
)
from tests.conftest import SHARED_DATA
from tests.e2e.harness import run_detection
from triage.api import create_app
from triage.auth import KeyStore

pytestmark = pytest.mark.integration
CLI = (sys.executable, "-c", "from sigstream.cli import app; app()")

CASES = {
    # rule file (under sigma/rules/windows) -> its regression folder
    "process_creation/proc_creation_win_certutil_download.yml": (
        "rules/windows/process_creation/proc_creation_win_certutil_download"
    ),
    "builtin/security/win_security_explicit_credential_local_logon.yml": (
        "rules/windows/builtin/security/win_security_explicit_credential_local_logon"
    ),
}
CERTUTIL = "19b08b1c-861d-4e75-a1ef-ea0c1baf202b"
LOGON = "e3c6d245-7b8f-4e2a-c17f-a9d0e5b38f62"
CERTUTIL_CLI = (
    "certutil.exe  -urlcache -f https://raw.githubusercontent.com/redcanaryco/"
    "atomic-red-team/refs/heads/master/atomics/T1001.002/T1001.002.yaml atomic.yaml"
)


def _field(name: str, modifier: str, pattern: str, value: str) -> dict[str, Any]:
    return {"field": name, "modifier": modifier, "pattern": pattern, "value": value}


@pytest.fixture(scope="module")
def detected(services: Any, spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    rules = SHARED_DATA / "sigma" / "rules" / "windows"
    corpus = SHARED_DATA / "sigma-regression"
    if not rules.is_dir() or not corpus.is_dir():
        pytest.skip(f"shared corpus not found at {SHARED_DATA}")
    plan = load_plan([rules / name for name in CASES])
    assert len(plan.rules) == len(CASES), plan.rejections
    return run_detection(
        spark,
        inputs=[corpus / folder for folder in CASES.values()],
        rule_paths=[],
        workdir=tmp_path_factory.mktemp("why"),
        plan=plan,
    )


def test_findings_say_which_selection_field_and_value_matched(detected: Any) -> None:
    by_rule = {f["rule"]["id"]: f for f in detected.findings}
    assert set(by_rule) == {CERTUTIL, LOGON}

    certutil = by_rule[CERTUTIL]
    assert certutil["sigstream"]["match"] == {
        "selections": [
            {
                "name": "selection_img",
                "fields": [
                    _field(
                        "Image", "endswith", "\\certutil.exe", "C:\\Windows\\System32\\certutil.exe"
                    ),
                    _field("OriginalFileName", "", "CertUtil.exe", "CertUtil.exe"),
                ],
            },
            {
                "name": "selection_flags",
                "fields": [_field("CommandLine", "contains", "urlcache ", CERTUTIL_CLI)],
            },
            {
                "name": "selection_http",
                "fields": [_field("CommandLine", "contains", "http", CERTUTIL_CLI)],
            },
        ],
        "keywords": [],
    }
    # the values are the event's, exactly as it was stored with the finding
    event = certutil["sigstream"]["event"]
    assert (event["Image"], event["CommandLine"]) == (
        "C:\\Windows\\System32\\certutil.exe",
        CERTUTIL_CLI,
    )
    assert certutil["rule"]["falsepositives"] == ["Unknown"]
    assert certutil["rule"]["description"].startswith("Detects the execution of certutil")
    assert (
        "https://lolbas-project.github.io/lolbas/Binaries/Certutil/"
        in (certutil["rule"]["references"])
    )

    # a Windows Security event: the values come from the event's extra fields
    logon = by_rule[LOGON]["sigstream"]["match"]["selections"]
    assert logon[0] == {
        "name": "selection_eid",
        "fields": [_field("EventID", "", "4648", "4648")],
    }


def _correlation(base: dict[str, Any], missing: str) -> Finding:
    """A correlation finding over the certutil finding (and one never stored)."""
    now = datetime.now(UTC)
    fid = "c" * 40
    return Finding(
        timestamp=now,
        rule=RuleInfo(id="corr-why-test", name="Certutil downloads on one host", level="high"),
        host=HostInfo(name=base["host"]["name"]),
        event=EventInfo(id=fid, category="correlation", created=now),
        sigstream=SigstreamInfo(
            tenant_id=base["sigstream"]["tenant_id"],
            sensor_id=base["sigstream"]["sensor_id"],
            finding=FindingState(id=fid),
            group=GroupInfo(id="d" * 40, window_s=300, first_seen=now, last_seen=now),
            correlation=CorrelationInfo(
                type="event_count",
                group_key=base["host"]["name"],
                window_start=now,
                window_end=now,
                value=2,
                condition="gte 2",
                rules=[CERTUTIL],
                base_findings=[base["_id"], missing],
            ),
        ),
    )


def test_show_and_api_explain_a_finding_and_a_correlations_base_findings(
    detected: Any,
) -> None:
    index = detected.config.findings_index
    base = next(f for f in detected.findings if f["rule"]["id"] == CERTUTIL)
    doc_id, body = finding_document(_correlation(base, "e" * 40))
    es = connect(list(detected.config.es_hosts))
    try:
        es.index(index=index, id=doc_id, document=body, refresh=True)
        sync_groups(es, index, ["d" * 40])
        es.indices.refresh(index=f"{index}*")
    finally:
        es.close()

    env = {**os.environ, "SIGSTREAM_FINDINGS_INDEX": index}

    def show(finding: str, *more: str) -> str:
        out = subprocess.run(
            [*CLI, "findings", "show", finding, *more],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    # the group (what an analyst opens) of the certutil finding
    shown = show(base["sigstream"]["group"]["id"])
    assert "Why it matched" in shown
    assert '  Image|endswith "\\certutil.exe" = "C:\\Windows\\System32\\certutil.exe"' in shown
    assert "selection_http:" in shown
    assert "false positives  Unknown" in shown
    assert "https://attack.mitre.org/techniques/T1105/" in shown

    corr = show("d" * 12)
    assert "event_count gte 2: 2 base finding(s)" in corr
    assert base["_id"][:12] in corr and "Suspicious Download Via Certutil.EXE" in corr
    assert '        Image|endswith "\\certutil.exe"' in corr
    assert "eeeeeeeeeeee  (not stored or not visible)" in corr
    as_json = json.loads(show("d" * 40, "--json"))
    assert as_json["base_findings"][0]["match"] == base["sigstream"]["match"]

    keys = KeyStore(
        {"k": {"tenant": base["sigstream"]["tenant_id"], "role": "analyst", "user": "t"}}
    )
    with TestClient(create_app(Settings(findings_index=index), keys)) as client:
        detail = client.get("/api/findings/" + "d" * 40, headers={"X-API-Key": "k"}).json()
        assert detail["base_findings"] == [
            {
                "id": base["_id"],
                "found": True,
                "finding_id": base["sigstream"]["group"]["id"],
                "rule_id": CERTUTIL,
                "rule": "Suspicious Download Via Certutil.EXE",
                "level": "medium",
                "host": base["host"]["name"],
                "time": base["@timestamp"],
                "event_id": base["event"]["id"],
                "category": base["event"]["category"],
                "process": {
                    "executable": base["process"]["executable"],
                    "command_line": base["process"]["command_line"],
                },
                "match": base["sigstream"]["match"],
                "correlation": False,
            },
            {
                "id": "e" * 40,
                "found": False,
                "finding_id": None,
                "rule_id": None,
                "rule": None,
                "level": None,
                "host": None,
                "time": None,
                "event_id": None,
                "category": None,
                "process": {},
                "match": None,
                "correlation": False,
            },
        ]
        plain = client.get(
            "/api/findings/" + base["sigstream"]["group"]["id"], headers={"X-API-Key": "k"}
        ).json()
        assert plain["base_findings"] == []
        assert plain["finding"]["sigstream"]["match"] == base["sigstream"]["match"]
