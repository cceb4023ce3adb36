"""Correlations follow the deployment store like base rules (detections.correlation.modes):
the kill switch, shadow and canary apply to a correlation id, re-read when the store's
generation changes; a broken store keeps the last modes."""

from __future__ import annotations

from pathlib import Path

from detections.content.deploy.modes import RuleMode
from detections.content.deploy.store import DeploymentStore
from detections.correlation.modes import CorrelationModes, destination

CORR = "5b1f2c40-7a3e-4d2b-9c11-0c0f7a1e9a10"


def test_no_store_means_every_correlation_is_active(tmp_path: Path) -> None:
    modes = CorrelationModes(tmp_path / "deploy").current()
    assert destination(modes, CORR, "acme", "s1") == "active"


def test_kill_switch_shadow_and_canary_follow_the_store(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    follower = CorrelationModes(tmp_path / "deploy")
    store.set_mode(CORR, RuleMode(mode="disabled", reason="noisy"))
    assert destination(follower.current(), CORR, "acme", "s1") is None
    assert destination(follower.current(), "other", "acme", "s1") == "active"
    store.set_mode(CORR, RuleMode(mode="shadow"))
    assert destination(follower.current(), CORR, "acme", "s1") == "shadow"
    store.set_mode(CORR, RuleMode(mode="canary", fraction=0.5))
    places = {destination(follower.current(), CORR, "acme", f"s{i}") for i in range(64)}
    assert places == {"active", "shadow"}
    store.clear_mode(CORR)
    assert destination(follower.current(), CORR, "acme", "s1") == "active"


def test_a_broken_store_keeps_the_last_modes(tmp_path: Path) -> None:
    store = DeploymentStore(tmp_path / "deploy")
    follower = CorrelationModes(tmp_path / "deploy")
    store.set_mode(CORR, RuleMode(mode="disabled"))
    assert destination(follower.current(), CORR, "acme", "s1") is None
    store.state_path.write_text("{not json")
    assert destination(follower.current(), CORR, "acme", "s1") is None
