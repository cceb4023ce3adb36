"""Verdict feedback end to end on real data, real Elasticsearch and Spark (docs/tuning.md).

Two OTRF recordings on which SigmaHQ's "Alternate PowerShell Hosts - PowerShell Module"
fires: Desired State Configuration inside WmiPrvSE on a domain controller (415 matches,
benign noise) and PowerShell injected into notepad (81 matches, the attack). Findings
are written through the production write path, the events archive through the job's
archive writer; an analyst closes them through the API; ``rules tune`` (the CLI, in its
own process with its own Spark) must propose a filter that removes every false positive,
keep every true positive and rule test, and show it on the archive backtest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from common.settings import PROJECT_ROOT, Settings
from detections.compiler.plan import load_plan
from detections.content.workflow.backtest import corpus_events, write_archive
from detections.content.workflow.ruletests import run_tests
from detections.engine.apply import match_events
from detections.sinks.elasticsearch import (
    connect,
    drop_findings_index,
    ensure_findings_index,
    write_findings,
)
from detections.sinks.finding_docs import build_finding
from tests.conftest import SHARED_DATA
from triage.api import create_app
from triage.auth import KeyStore

pytestmark = pytest.mark.integration

HOSTS = Settings().es_hosts
RULE_ID = "64e8e417-c19a-475a-8d19-98ea705394cc"
SIGMA_RULE = SHARED_DATA.joinpath(
    "sigma",
    "rules",
    "windows",
    "powershell",
    "powershell_module",
    "posh_pm_alternate_powershell_hosts.yml",
)
FP_RECORDING = SHARED_DATA.joinpath(
    "otrf", "defense_evasion", "host", "empire_dllinjection_LoadLibrary_CreateRemoteThread.zip"
)
TP_RECORDING = SHARED_DATA.joinpath(
    "otrf", "defense_evasion", "host", "empire_psinject_PEinjection.zip"
)
TESTS = (
    PROJECT_ROOT / "docs" / "examples" / "tuning" / "posh_pm_alternate_powershell_hosts.tests.json"
)
KEYS = KeyStore(
    {
        "k-analyst": {"tenant": "default", "role": "analyst", "user": "alice"},
        "k-other": {"tenant": "other", "role": "read-only", "user": "otto"},
    }
)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    for needed in (SIGMA_RULE, FP_RECORDING, TP_RECORDING):
        if not needed.exists():
            pytest.skip(f"shared corpus missing: {needed} (see ../shared/data/README.md)")
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copyfile(SIGMA_RULE, folder / SIGMA_RULE.name)
    shutil.copyfile(TESTS, folder / TESTS.name)
    return folder


@pytest.fixture
def index(services: dict[str, Any], unique: str) -> Iterator[str]:
    name = f"test-{unique}-findings"
    es = connect(HOSTS)
    try:
        ensure_findings_index(es, name)
        yield name
        drop_findings_index(es, name)
    finally:
        es.close()


def _detect(spark: Any, rules_dir: Path, index: str, archive: Path) -> int:
    """Archive the recordings' events and write the rule's findings; returns matches."""
    events_df, rejected = corpus_events(spark, [FP_RECORDING, TP_RECORDING])
    assert rejected == 0
    write_archive(events_df, archive)
    from ingest.sources import iter_items

    events = [
        i.event.model_dump(mode="json")
        for i in iter_items([FP_RECORDING, TP_RECORDING])
        if i.event is not None
    ]
    plan = load_plan([rules_dir], allow_unknown_fields=True)
    infos = plan.rule_infos()
    pairs = match_events(plan, events)
    es = connect(HOSTS)
    try:
        write_findings(es, index, [build_finding(infos[r], events[e]) for e, r in pairs])
        es.indices.refresh(index=f"{index},{index}-groups")
    finally:
        es.close()
    return len(pairs)


def _close_by_host_application(client: TestClient) -> dict[str, int]:
    """What an analyst does: open each finding, read the host application, decide."""
    h = {"X-API-Key": "k-analyst"}
    found = client.get("/api/findings", params={"rule": RULE_ID, "size": 200}, headers=h).json()
    closed = {"false_positive": 0, "true_positive": 0}
    for f in found["findings"]:
        fid = f["sigstream"]["finding"]["id"]
        detail = client.get(f"/api/findings/{fid}", headers=h).json()
        context = detail["matches"]["items"][0]["sigstream"]["event"]["ContextInfo"]
        verdict = "false_positive" if "wmiprvse.exe" in context else "true_positive"
        r = client.post(f"/api/findings/{fid}/close", json={"resolution": verdict}, headers=h)
        assert r.status_code == 200, r.text
        closed[verdict] += 1
    return closed


def test_tune_removes_the_false_positives_and_keeps_every_true_positive(
    spark: Any, rules_dir: Path, index: str, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    assert _detect(spark, rules_dir, index, archive) == 415 + 81

    settings = Settings(findings_index=index, events_index=f"{index}-events")
    with TestClient(create_app(settings, KEYS)) as client:
        closed = _close_by_host_application(client)
        assert closed["false_positive"] >= 1 and closed["true_positive"] >= 1
        rates = client.get("/api/rules/fp-rate", headers={"X-API-Key": "k-analyst"}).json()
        other = client.get("/api/rules/fp-rate", headers={"X-API-Key": "k-other"}).json()
    (row,) = rates["rules"]
    assert row["rule_id"] == RULE_ID
    assert row["matches"]["false_positive"] == 415 and row["matches"]["true_positive"] == 81
    by_host = {h["host"]: h["fp_rate"] for h in row["hosts"]}
    assert by_host == {"MORDORDC.mordor.local": 1.0, "WORKSTATION5.theshire.local": 0.0}
    assert other == {"rules": []}  # another tenant sees none of it

    out = tmp_path / "tuned"
    env = {
        **os.environ,
        "SIGSTREAM_FINDINGS_INDEX": index,
        "SIGSTREAM_ARCHIVE_DIR": str(archive),
        "SIGSTREAM_SPARK_CONF": json.dumps({"spark.ui.enabled": "false"}),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sigstream.cli import app; app()",
            "rules",
            "tune",
            str(rules_dir / SIGMA_RULE.name),
            "--backtest-since",
            "2019-01-01",
            "--write",
            str(out),
            "--json",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert yaml.safe_load(result["filter"]) == {
        "filter_tune_1": {
            "ContextInfo|contains": "Host Application = C:\\windows\\system32\\wbem\\wmiprvse.exe"
        }
    }
    assert result["false_positives"]["matches"] == 415
    assert result["engine"] == {"fp_before": 415, "fp_after": 0, "tp_before": 83, "tp_after": 83}
    assert result["tests"] == {"tp": 2, "tn": 1, "failures": []}
    backtest = result["backtest"]
    assert (backtest["before"], backtest["after"], backtest["removed"]) == (496, 81, 415)
    assert backtest["events"] == 12_200 + 5_898

    tuned = out / SIGMA_RULE.name
    doc = yaml.safe_load(tuned.read_text())
    assert doc["id"] == RULE_ID
    assert doc["detection"]["condition"].endswith("and not 1 of filter_tune_*")
    assert (rules_dir / SIGMA_RULE.name).read_text() == SIGMA_RULE.read_text()  # not in place
    report = run_tests([out], allow_unknown_fields=True)
    assert report.ok and report.results[0].tp == 2
