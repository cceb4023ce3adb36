"""Deploying detection content to a running job: signed bundles take effect on the next
micro-batch, an unsigned or tampered bundle is refused while the old content keeps
running, a rollback restores the previous bundle, a kill switch stops a rule, and a rule
deployed in shadow writes to the shadow index only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT
from detections.compiler.plan import load_plan
from detections.content.deploy.bundle import Bundle, build_bundle, sign_manifest
from detections.content.deploy.modes import RuleMode
from detections.content.deploy.signing import generate_keypair, load_private_key
from detections.content.deploy.store import DeploymentStore
from detections.stream.job import JobTotals, start
from ingest.producer import EventProducer
from sigstream.cli import SAMPLE_EVENTS
from tests.e2e.harness import job_config, read_findings

pytestmark = pytest.mark.integration

RULES = PROJECT_ROOT / "detections" / "rules" / "windows"
TAMPERING = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04"  # fires on fixture-006 and fixture-007
OFFICE_SHELL = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d03"  # fires on fixture-005
ENCODED_PS = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d02"  # fires on fixture-003


def _sample_events() -> list[dict[str, Any]]:
    events = []
    for line in SAMPLE_EVENTS.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event_id" in event:
            events.append(event)
    return events


def _send_tagged(producer: EventProducer, query: Any, tag: str) -> None:
    """The sample events again, ids suffixed with ``tag``, processed by the running job."""
    for event in _sample_events():
        value = json.dumps({**event, "event_id": f"{event['event_id']}-{tag}"})
        producer.send_raw("fixture", value.encode())
    producer.flush()
    query.processAllAvailable()


def _bundle(tmp: Path, name: str, files: list[str], key: Any, **kwargs: Any) -> Path:
    manifest, _ = build_bundle([RULES / f for f in files], version=name, **kwargs)
    path = tmp / f"{name}.bundle.json"
    path.write_text(
        sign_manifest(manifest, key).to_json() if key else Bundle(manifest, None).to_json()
    )
    return path


def test_deployments_reach_a_running_job(services: Any, spark: Any, tmp_path: Path) -> None:
    keys = generate_keypair(
        tmp_path / "keys" / "signing.key", tmp_path / "keys" / "trusted" / "k.pub"
    )
    key = load_private_key(keys.private_path)
    store = DeploymentStore(tmp_path / "deploy")
    v1 = _bundle(tmp_path, "v1", ["proc_creation_sensor_tampering.yml"], key)
    v2 = _bundle(
        tmp_path,
        "v2",
        ["proc_creation_sensor_tampering.yml", "proc_creation_office_spawns_shell.yml"],
        key,
    )
    store.deploy(v1, None)

    cfg = job_config(
        tmp_path,
        available_now=False,
        trigger_seconds=1.0,
        deploy_dir=tmp_path / "deploy",
        trusted_keys=tmp_path / "keys" / "trusted",
        shadow_index=f"{job_config(tmp_path).findings_index}-shadow",
    )
    producer = EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic)
    # The job's own rules folder, for the fallback plan it starts with (replaced at once).
    totals = JobTotals()
    query = start(spark, load_plan([RULES]), cfg, totals)

    def step(tag: str) -> set[tuple[str, str]]:
        """Send the sample events with fresh ids; the (rule, event) findings they made."""
        _send_tagged(producer, query, tag)
        return {
            (f["rule"]["id"], f["event"]["id"].rsplit("-", 1)[0])
            for f in read_findings(cfg)
            if f["event"]["id"].endswith(f"-{tag}")
        }

    try:
        # v1: only the tampering rule runs (the job started from the deployed bundle).
        assert step("a") == {(TAMPERING, "fixture-006"), (TAMPERING, "fixture-007")}

        # v2 deployed to the running job: in effect for the next micro-batch.
        store.deploy(v2, None)
        assert step("b") == {
            (TAMPERING, "fixture-006"),
            (TAMPERING, "fixture-007"),
            (OFFICE_SHELL, "fixture-005"),
        }

        # Rollback: v1 again.
        store.rollback()
        assert step("c") == {(TAMPERING, "fixture-006"), (TAMPERING, "fixture-007")}

        # Kill switch: the rule stops producing findings within one micro-batch.
        store.set_mode(TAMPERING, RuleMode("disabled", reason="test kill switch"))
        assert step("d") == set()
        store.clear_mode(TAMPERING)

        # An unsigned and a tampered bundle are refused; v1 keeps running.
        unsigned = _bundle(tmp_path, "v3-unsigned", ["proc_creation_encoded_powershell.yml"], None)
        tampered = _bundle(tmp_path, "v3-tampered", ["proc_creation_sensor_tampering.yml"], key)
        doc = json.loads(tampered.read_text())
        doc["bundle"]["version"] = "v3-tampered-after-signing"
        tampered.write_text(json.dumps(doc))
        store.deploy(unsigned, None)
        assert step("e") == {(TAMPERING, "fixture-006"), (TAMPERING, "fixture-007")}
        store.deploy(tampered, None)
        assert step("f") == {(TAMPERING, "fixture-006"), (TAMPERING, "fixture-007")}
        refusals = store.state().get("refusals", [])
        assert len(refusals) >= 2, refusals

        # Shadow: the encoded-PowerShell rule runs, but its findings go to the shadow index.
        v4 = _bundle(
            tmp_path,
            "v4",
            ["proc_creation_sensor_tampering.yml", "proc_creation_encoded_powershell.yml"],
            key,
            modes={ENCODED_PS: RuleMode("shadow")},
        )
        store.deploy(v4, None)
        assert step("g") == {(TAMPERING, "fixture-006"), (TAMPERING, "fixture-007")}
        assert cfg.shadow_index is not None
        shadow = read_findings(job_config(tmp_path, findings_index=cfg.shadow_index))
        assert {(f["rule"]["id"], f["event"]["id"]) for f in shadow} == {
            (ENCODED_PS, "fixture-003-g")
        }
        assert query.isActive
    finally:
        query.stop()
        producer.close()


def test_a_noisy_rule_is_demoted_to_shadow_with_a_finding_that_says_why(
    services: Any, spark: Any, tmp_path: Path
) -> None:
    from detections.content.deploy.demotion import DEMOTION_RULE_ID, DemotionPolicy

    keys = generate_keypair(
        tmp_path / "keys" / "signing.key", tmp_path / "keys" / "trusted" / "k.pub"
    )
    store = DeploymentStore(tmp_path / "deploy")
    bundle = _bundle(
        tmp_path, "v1", ["proc_creation_sensor_tampering.yml"], load_private_key(keys.private_path)
    )
    store.deploy(bundle, None)
    base = job_config(tmp_path)
    cfg = job_config(
        tmp_path,
        available_now=False,
        trigger_seconds=1.0,
        deploy_dir=tmp_path / "deploy",
        trusted_keys=tmp_path / "keys" / "trusted",
        shadow_index=f"{base.findings_index}-shadow",
        demotion=DemotionPolicy(max_alerts_per_batch=1),  # the rule fires twice per batch
    )
    producer = EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic)
    query = start(spark, load_plan([RULES]), cfg, JobTotals())

    def send(tag: str) -> None:
        _send_tagged(producer, query, tag)

    try:
        send("a")  # judged on this batch: 2 alerts > 1 allowed
        findings = read_findings(cfg)
        assert {f["event"]["id"] for f in findings if f["rule"]["id"] == TAMPERING} == {
            "fixture-006-a",
            "fixture-007-a",
        }
        demoted = [f for f in findings if f["rule"]["id"] == DEMOTION_RULE_ID]
        assert len(demoted) == 1 and TAMPERING in demoted[0]["message"]
        assert store.overrides()[TAMPERING].mode == "shadow"

        send("b")  # from the next batch on, its findings go to the shadow index only
        assert not [f for f in read_findings(cfg) if f["event"]["id"].endswith("-b")]
        assert cfg.shadow_index is not None
        shadow = read_findings(job_config(tmp_path, findings_index=cfg.shadow_index))
        assert {f["event"]["id"] for f in shadow} == {"fixture-006-b", "fixture-007-b"}
    finally:
        query.stop()
        producer.close()
