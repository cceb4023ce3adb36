"""Signed bundles and the deployment store, without services: signing, tamper detection,
refusal keeps the old content, rollback, modes, kill switch and demotion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT
from detections.content.deploy.bundle import BundleError, build_bundle, read_bundle, sign_manifest
from detections.content.deploy.demotion import DemotionPolicy, RuleBatchStats, rules_to_demote
from detections.content.deploy.modes import RuleMode, canary_bucket, parse_mode
from detections.content.deploy.signing import (
    SignatureError,
    generate_keypair,
    load_private_key,
    load_trusted_keys,
)
from detections.content.deploy.store import DeploymentStore
from detections.content.deploy.watcher import DeploymentWatcher

OWN_RULES = PROJECT_ROOT / "detections" / "rules" / "windows"
LSASS = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d01"
ENCODED_PS = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d02"

FILTER = """title: Ignore the backup agent
id: 6a0d5a2e-9f1b-4a53-8d7e-2f1f0e0c0b01
description: exception for a known agent
logsource:
  category: process_access
  product: windows
filter:
  rules:
    - {rule}
  selection:
    SourceImage|endswith: '\\backupagent.exe'
  condition: not selection
"""


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    pair = generate_keypair(tmp_path / "k" / "signing.key", tmp_path / "trusted" / "release.pub")
    other = generate_keypair(tmp_path / "k2" / "rogue.key", tmp_path / "k2" / "rogue.pub")
    return {
        "private": pair.private_path,
        "trusted": tmp_path / "trusted",
        "rogue": other.private_path,
    }


def _rules(tmp_path: Path, names: list[str], name: str = "rules") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for n in names:
        shutil.copy(OWN_RULES / n, folder / n)
    return folder


def _bundle_file(tmp_path: Path, rules: Path, key: Path, name: str, **kw: object) -> Path:
    manifest, _ = build_bundle([rules], **kw)  # type: ignore[arg-type]
    path = tmp_path / f"{name}.bundle.json"
    path.write_text(sign_manifest(manifest, load_private_key(key)).to_json())
    return path


def test_bundle_signs_verifies_and_ships_filters_with_rules(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    rules = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"])
    (rules / "filter_backup.yml").write_text(FILTER.format(rule=LSASS))
    path = _bundle_file(tmp_path, rules, keys["private"], "b1", version="1.0")
    bundle = read_bundle(path)
    trusted = load_trusted_keys([keys["trusted"]])
    assert bundle.verify(trusted) in trusted
    assert sorted(f["role"] for f in bundle.files) == ["filter", "rule"]
    plan = bundle.load_plan(tmp_path / "x")
    assert [str(p.rule.id) for p in plan.rules] == [LSASS]
    assert plan.rules[0].rule.filters  # the exception arrived with its rule


@pytest.mark.parametrize("how", ["content", "mode", "unsigned", "rogue"])
def test_tampered_unsigned_or_untrusted_bundles_fail_verification(
    tmp_path: Path, keys: dict[str, Path], how: str
) -> None:
    rules = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"])
    key = keys["rogue"] if how == "rogue" else keys["private"]
    path = _bundle_file(tmp_path, rules, key, "b")
    doc = json.loads(path.read_text())
    if how == "content":
        entry = doc["bundle"]["files"][0]
        entry["content"] = entry["content"].replace("0x1010", "0x9999")
    elif how == "mode":
        doc["bundle"]["modes"] = {LSASS: {"mode": "disabled"}}
    elif how == "unsigned":
        doc["signature"] = None
    path.write_text(json.dumps(doc))
    with pytest.raises((SignatureError, BundleError)):
        read_bundle(path).verify(load_trusted_keys([keys["trusted"]]))


def test_bundle_refuses_rejected_rules(tmp_path: Path) -> None:
    rules = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"])
    text = (rules / "proc_access_lsass_memory_read.yml").read_text()
    (rules / "bad.yml").write_text(text.replace("d01", "d99").replace("TargetImage", "NoSuchField"))
    with pytest.raises(BundleError, match="rejected"):
        build_bundle([rules])


def test_watcher_follows_deploys_refuses_tampering_and_rolls_back(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    watcher = DeploymentWatcher(store.root, [keys["trusted"]])
    assert watcher.poll() is None  # nothing deployed yet

    one = _bundle_file(
        tmp_path,
        _rules(tmp_path, ["proc_access_lsass_memory_read.yml"], "r1"),
        keys["private"],
        "1",
    )
    two = _bundle_file(
        tmp_path,
        _rules(
            tmp_path,
            ["proc_access_lsass_memory_read.yml", "proc_creation_encoded_powershell.yml"],
            "r2",
        ),
        keys["private"],
        "2",
    )
    trusted = load_trusted_keys([keys["trusted"]])
    store.deploy(one, trusted)
    first = watcher.poll()
    assert first is not None and len(first.plan.rules) == 1
    assert watcher.poll() is None  # unchanged generation: nothing to do

    store.deploy(two, trusted)
    second = watcher.poll()
    assert second is not None and len(second.plan.rules) == 2
    assert second.generation > first.generation

    # A bundle signed by an untrusted key is refused by the CLI check ...
    rogue = _bundle_file(
        tmp_path,
        _rules(tmp_path, ["proc_creation_encoded_powershell.yml"], "r3"),
        keys["rogue"],
        "3",
    )
    with pytest.raises(SignatureError):
        store.deploy(rogue, trusted)
    # ... and by the job when it got into the store anyway: the old content keeps running.
    store.deploy(rogue, None)
    kept = watcher.poll()  # the rogue bundle is not loaded: the running one stays, its modes
    assert kept is not None and kept.digest == second.digest  # re-read
    assert watcher.current is kept
    assert "untrusted key" in store.state()["refusals"][-1]["reason"]

    # Edited on disk after deployment: refused as well.
    store.rollback()  # back to bundle two
    assert (c := watcher.poll()) is not None and c.digest == second.digest
    stored = store.bundle_path(second.digest)
    stored.write_text(stored.read_text().replace("0x1010", "0x1011"))
    watcher2 = DeploymentWatcher(store.root, trusted)
    assert watcher2.poll() is None
    assert "edited on disk" in store.state()["refusals"][-1]["reason"]


def test_rollback_restores_previous_bundle(tmp_path: Path, keys: dict[str, Path]) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    trusted = load_trusted_keys([keys["trusted"]])
    watcher = DeploymentWatcher(store.root, trusted)
    r1 = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"], "r1")
    r2 = _rules(tmp_path, ["proc_creation_encoded_powershell.yml"], "r2")
    store.deploy(_bundle_file(tmp_path, r1, keys["private"], "1", version="v1"), trusted)
    store.deploy(_bundle_file(tmp_path, r2, keys["private"], "2", version="v2"), trusted)
    assert (c := watcher.poll()) is not None and c.version == "v2"
    entry = store.rollback()
    assert entry["version"] == "v1"
    restored = watcher.poll()
    assert restored is not None and restored.version == "v1"
    assert [str(p.rule.id) for p in restored.plan.rules] == [LSASS]
    with pytest.raises(BundleError):
        store.rollback()  # nothing before v1


def test_modes_kill_switch_canary_and_demotion(tmp_path: Path, keys: dict[str, Path]) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    trusted = load_trusted_keys([keys["trusted"]])
    watcher = DeploymentWatcher(store.root, trusted)
    rules = _rules(
        tmp_path, ["proc_access_lsass_memory_read.yml", "proc_creation_encoded_powershell.yml"]
    )
    path = _bundle_file(
        tmp_path, rules, keys["private"], "b", modes={ENCODED_PS: RuleMode(mode="shadow")}
    )
    store.deploy(path, trusted)
    content = watcher.poll()
    assert content is not None
    index = {str(p.rule.id): p.index for p in content.plan.rules}
    assert content.destination(index[LSASS], "t", "s") == "active"
    assert content.destination(index[ENCODED_PS], "t", "s") == "shadow"  # bundle default

    store.set_mode(LSASS, RuleMode(mode="disabled", reason="noisy"))  # kill switch
    killed = watcher.poll()
    assert killed is not None and killed.disabled_indices == {index[LSASS]}
    assert killed.destination(index[LSASS], "t", "s") is None
    assert killed.plan is content.plan  # a mode change does not recompile

    store.set_mode(LSASS, parse_mode("canary:0.5"))
    canary = watcher.poll()
    assert canary is not None
    dest = {canary.destination(index[LSASS], "t", f"sensor-{i}") for i in range(64)}
    assert dest == {"active", "shadow"}
    picked = [canary_bucket(LSASS, f"sensor-{i}") < 0.5 for i in range(200)]
    assert 60 < sum(picked) < 140  # about half, and stable:
    assert picked == [canary_bucket(LSASS, f"sensor-{i}") < 0.5 for i in range(200)]

    store.clear_mode(LSASS)
    policy = DemotionPolicy(max_alert_rate=0.01, min_events=100)
    stats = [RuleBatchStats(LSASS, events=1000, matches=50), RuleBatchStats(ENCODED_PS, 1000, 900)]
    current = watcher.poll()
    assert current is not None
    demote = rules_to_demote(stats, current.modes, policy)
    assert [d.rule_id for d in demote] == [LSASS]  # the shadow rule is not demoted again
    assert "alert rate 5.0%" in demote[0].reason
    watcher.record_demotion(LSASS, demote[0].reason, demote[0].metrics)
    after = watcher.poll()
    assert after is not None and after.mode_of(index[LSASS]).mode == "shadow"
    assert after.mode_of(index[LSASS]).set_by == "auto-demotion"
    assert store.state()["demotions"][-1]["reason"] == demote[0].reason


def test_cost_demotion_and_mode_parsing() -> None:
    policy = DemotionPolicy(max_cost_us_per_event=100)
    out = rules_to_demote([RuleBatchStats("r", 10, 0, cost_us_per_event=250.0)], {}, policy)
    assert out and "250.0 µs/event" in out[0].reason
    assert parse_mode("canary:0.25:tenant") == RuleMode("canary", 0.25, "tenant")
    with pytest.raises(ValueError):
        parse_mode("canary:2")
    with pytest.raises(ValueError):
        parse_mode("loud")


def test_demotion_finding_says_why_and_is_idempotent() -> None:
    from detections.content.deploy.demotion import Demotion, demotion_finding
    from schemas.findings import RuleInfo

    rule = RuleInfo(id=LSASS, name="LSASS Memory Read", level="high")
    demotion = Demotion(LSASS, "alert rate 12.0% of 5,000 events > 5.0%", {"alert_rate": 0.12})
    first = demotion_finding(rule, demotion, generation=7)
    again = demotion_finding(rule, demotion, generation=7)
    doc = first.model_dump(by_alias=True, mode="json")
    assert "alert rate 12.0%" in doc["message"] and LSASS in doc["message"]
    assert doc["sigstream"]["event"]["demoted_rule"]["id"] == LSASS
    assert first.sigstream.finding.id == again.sigstream.finding.id
    assert demotion_finding(rule, demotion, 8).sigstream.finding.id != first.sigstream.finding.id
    # Its own group, the same on a rewrite, so triage (which lists groups) shows it.
    assert first.sigstream.group is not None and again.sigstream.group is not None
    assert first.sigstream.group.id == again.sigstream.group.id
    assert demotion_finding(rule, demotion, 8).sigstream.group.id != first.sigstream.group.id
    assert first.sigstream.tenant_id == "sigstream"  # the default operator tenant
    ops = demotion_finding(rule, demotion, 7, tenant="ops")
    assert ops.sigstream.tenant_id == "ops"
    assert ops.sigstream.finding.id != first.sigstream.finding.id


def test_cli_keygen_bundle_deploy_disable_status_rollback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sigstream.cli import app

    runner = CliRunner()
    key, pub, store = tmp_path / "k.key", tmp_path / "trusted" / "k.pub", tmp_path / "store"

    def run(*args: str) -> str:
        result = runner.invoke(app, ["rules", *args])
        assert result.exit_code == 0, result.output
        return result.output

    run("keygen", "--private", str(key), "--public", str(pub))
    assert runner.invoke(app, ["rules", "keygen", "--private", str(key)]).exit_code == 2
    b1, b2 = tmp_path / "b1.json", tmp_path / "b2.json"
    rules = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"])
    run("bundle", str(rules), "--key", str(key), "--out", str(b1), "--version", "1.0")
    run("bundle", str(OWN_RULES), "--key", str(key), "--out", str(b2), "--version", "2.0")
    assert "generation 1" in run("deploy", str(b1), "--store", str(store), "--trusted", str(pub))
    run("deploy", str(b2), "--store", str(store), "--trusted", str(pub))
    run("disable", LSASS, "--reason", "too noisy", "--store", str(store))
    state = json.loads(run("status", "--json", "--store", str(store)))["deployment"]
    assert state["generation"] == 3 and state["overrides"][LSASS]["mode"] == "disabled"
    assert "rolled back to 1.0" in run("rollback", "--store", str(store))

    doc = json.loads(b2.read_text())
    doc["bundle"]["version"] = "2.0-forged"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    refused = runner.invoke(
        app, ["rules", "deploy", str(forged), "--store", str(store), "--trusted", str(pub)]
    )
    assert refused.exit_code == 1 and "refused" in refused.output
    assert DeploymentStore(store).state()["generation"] == 4  # nothing changed


def test_watcher_survives_a_corrupt_state_file(tmp_path: Path, keys: dict[str, Path]) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    trusted = load_trusted_keys([keys["trusted"]])
    rules = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"])
    store.deploy(_bundle_file(tmp_path, rules, keys["private"], "b"), trusted)
    watcher = DeploymentWatcher(store.root, trusted)
    content = watcher.poll()
    assert content is not None
    store.state_path.write_text("{ half a file")
    assert watcher.poll() is None and watcher.current is content  # job keeps running


def test_bundle_plan_matches_like_the_rules_folder_and_honours_the_kill_switch(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    from detections.compiler.plan import load_plan
    from detections.engine.apply import compile_matcher, match_events
    from sigstream.cli import SAMPLE_EVENTS

    events = [json.loads(line) for line in SAMPLE_EVENTS.read_text().splitlines()]
    store = DeploymentStore(tmp_path / "deploy")
    trusted = load_trusted_keys([keys["trusted"]])
    store.deploy(_bundle_file(tmp_path, OWN_RULES, keys["private"], "own"), trusted)
    watcher = DeploymentWatcher(store.root, trusted)
    content = watcher.poll()
    assert content is not None

    def found(plan, skip=()):  # type: ignore[no-untyped-def]
        pairs = match_events(plan, events, compile_matcher(plan, skip))
        return {(str(plan.rules[r].rule.id), events[e]["event_id"]) for e, r in pairs}

    direct = found(load_plan([OWN_RULES]))
    assert found(content.plan) == direct and (LSASS, "fixture-001") in direct

    store.set_mode(LSASS, RuleMode(mode="disabled"))
    killed = watcher.poll()
    assert killed is not None
    assert found(killed.plan, killed.disabled_indices) == {
        pair for pair in direct if pair[0] != LSASS
    }


def test_watcher_rereads_trusted_keys_so_keys_rotate_without_restart(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    watcher = DeploymentWatcher(store.root, [keys["trusted"]])
    rules = _rules(tmp_path, ["proc_access_lsass_memory_read.yml"])
    store.deploy(_bundle_file(tmp_path, rules, keys["rogue"], "new-key"), None)
    assert watcher.poll() is None  # signed by a key the job does not trust (yet)
    shutil.copy(keys["rogue"].with_suffix(".pub"), keys["trusted"] / "rotated.pub")
    store.deploy(_bundle_file(tmp_path, rules, keys["rogue"], "new-key-2", version="2"), None)
    content = watcher.poll()
    assert content is not None and content.version == "2"
