"""Hostile content never stops a running job (issue 17): the detect job started on a rule
folder holding an alias bomb, a 100,000-deep document and a wrong-typed correlation next
to good rules runs the good ones; bad bundles dropped into its deployment store while it
runs are refused with reasons, and the findings keep coming, exact counts, on the real
Kafka, Spark and Elasticsearch."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT, get_settings
from detections.compiler.plan import load_plan
from detections.content.deploy.bundle import BundleError, build_bundle, sign_manifest
from detections.content.deploy.signing import generate_keypair, load_private_key
from detections.content.deploy.store import DeploymentStore
from detections.correlation.query import (
    CorrelationConfig,
    feeding,
    load_content,
    start_correlations,
)
from detections.stream.job import JobTotals, start
from infra.kafka import ensure_topics
from ingest.producer import EventProducer
from sigstream.cli import SAMPLE_EVENTS
from tests.e2e.harness import job_config, read_findings

pytestmark = pytest.mark.integration

RULES = PROJECT_ROOT / "detections" / "rules" / "windows"
TAMPERING = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04"  # fires on fixture-006 (WS03), -007 (WS04)
GOOD_CORR = "c0ffee00-0000-4000-8000-000000000001"
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
CORRELATION = """title: {title}
id: {id}
correlation:
  type: event_count
  rules: {rules}
  group-by: [host]
  timespan: 1h
  condition: {{gte: 1}}
  generate: true  # the tampering rule keeps its own findings (Sigma v2)
level: high
"""


def _rule_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(RULES / "proc_creation_sensor_tampering.yml", folder)
    (folder / "good_corr.yml").write_text(
        CORRELATION.format(title="tampering per host", id=GOOD_CORR, rules=f"[{TAMPERING}]")
    )
    (folder / "bomb_corr.yml").write_text(
        LAUGHS + CORRELATION.format(title="bomb", id=str(uuid.uuid4()), rules="*i")
    )
    (folder / "deep_corr.yml").write_text(
        "correlation: " + "[" * 100_000 + "]" * 100_000 + "\ntitle: deep\n"
    )
    (folder / "typed_corr.yml").write_text(
        CORRELATION.format(title="typed", id=str(uuid.uuid4()), rules="[[a, b]]")
    )
    return folder


def _drop_in(store: DeploymentStore, data: bytes) -> None:
    """Make ``data`` the current bundle, as if it got into the store past the CLI."""
    digest = hashlib.sha256(data).hexdigest()
    target = store.bundle_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)

    def mutate(state: dict[str, Any]) -> dict[str, Any]:
        state["stack"].append(digest)
        state["current"] = digest
        return {"bundle": digest}

    store._change("deploy", mutate)


def test_running_job_keeps_its_findings_through_hostile_content(
    services: Any, spark: Any, tmp_path: Path
) -> None:
    folder = _rule_folder(tmp_path)
    content = load_content([folder])  # what `sigstream detect` loads at start
    assert [s.id for s in content.specs] == [GOOD_CORR]
    assert sorted((Path(str(r.path)).name, r.reason) for r in content.rejections) == [
        ("bomb_corr.yml", "parse_error"),
        ("deep_corr.yml", "parse_error"),
        ("typed_corr.yml", "bad_rules"),
    ]
    plan = load_plan([folder])
    assert [str(p.rule.id) for p in plan.rules] == [TAMPERING]

    keys = generate_keypair(tmp_path / "keys" / "k.key", tmp_path / "keys" / "trusted" / "k.pub")
    manifest, _ = build_bundle([folder / "proc_creation_sensor_tampering.yml"])
    good = tmp_path / "v1.bundle.json"
    good.write_text(sign_manifest(manifest, load_private_key(keys.private_path)).to_json())
    store = DeploymentStore(tmp_path / "deploy")
    store.deploy(good, None)

    cfg = job_config(
        tmp_path,
        f"content-{uuid.uuid4().hex[:10]}",
        available_now=False,
        trigger_seconds=1.0,
        deploy_dir=tmp_path / "deploy",
        trusted_keys=tmp_path / "keys" / "trusted",
    )
    ensure_topics(get_settings(), [cfg.events_topic, cfg.dlq_topic], 1)  # no creation race
    producer = EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic)
    # The detection pass feeds the correlation stage (`sigstream detect` wires it so); no
    # timers, so processAllAvailable() returns on the stage.
    query = start(spark, plan, feeding(cfg, content), JobTotals())
    correlate = start_correlations(
        spark, cfg, content, CorrelationConfig(lateness_s=0, timers=False)
    )
    assert correlate is not None
    events = [json.loads(line) for line in SAMPLE_EVENTS.read_text().splitlines() if line.strip()]
    events = [e for e in events if isinstance(e, dict) and "event_id" in e]

    def step(tag: str) -> set[tuple[str, str]]:
        for event in events:
            value = json.dumps({**event, "event_id": f"{event['event_id']}-{tag}"})
            producer.send_raw("fixture", value.encode())
        producer.flush()
        query.processAllAvailable()
        correlate.processAllAvailable()
        return {
            (f["rule"]["id"], f["event"]["id"])
            for f in read_findings(cfg)
            if f["event"]["id"].endswith(f"-{tag}")
        }

    doc = json.loads(good.read_text())
    first = doc["bundle"]["files"][0]
    hostile = {
        "content_int": {**doc, "bundle": {**doc["bundle"], "files": [{**first, "content": 1}]}},
        "files_str": {**doc, "bundle": {**doc["bundle"], "files": ["x"]}},
        "signature_list": {**doc, "signature": ["ed25519"]},
    }
    try:
        assert step("a") == {(TAMPERING, "fixture-006-a"), (TAMPERING, "fixture-007-a")}
        for n, (name, bad) in enumerate(hostile.items()):
            path = tmp_path / f"{name}.bundle.json"
            path.write_text(json.dumps(bad))
            with pytest.raises(BundleError):  # `sigstream rules deploy` refuses it ...
                store.deploy(path, None)
            _drop_in(store, path.read_bytes())  # ... and the job, if it got in anyway
            tag = f"b{n}"
            assert step(tag) == {
                (TAMPERING, f"fixture-006-{tag}"),
                (TAMPERING, f"fixture-007-{tag}"),
            }
        garbage = b"[" * 100_000 + bytes(range(256))
        _drop_in(store, garbage)
        assert step("c") == {(TAMPERING, "fixture-006-c"), (TAMPERING, "fixture-007-c")}

        refusals = store.state()["refusals"]
        assert len(refusals) == len(hostile) + 1
        assert all(
            "not a bundle" in r["reason"] or "not a readable" in r["reason"] for r in refusals
        )
        assert query.isActive and correlate.isActive
        correlated = [f for f in read_findings(cfg) if f["rule"]["id"] == GOOD_CORR]
        hosts = sorted(f["sigstream"]["correlation"]["group_key"] for f in correlated)
        # The windows at 10:00:06 (WS03) and :07 (WS04) fire in step a; later copies of the
        # events fall inside the fired windows and are absorbed, not counted again.
        assert hosts == ["WS03", "WS04"]  # one per host and window, never twice
        detected = [f for f in read_findings(cfg) if f["rule"]["id"] == TAMPERING]
        assert len(detected) == 2 * (len(hostile) + 2)
    finally:
        query.stop()
        correlate.stop()
        producer.close()
