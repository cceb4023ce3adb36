"""Canaries without services: building a round's events from rule tests, judging a round
and naming the cause of a silence, the "rule not firing" finding, the changed rules a
deployment proves, the reserved canary tenant (enrollment, settings) and triage leaving
canary findings out of customers' views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.settings import Settings
from detections.compiler.plan import load_plan
from detections.content.canary.build import CanaryIdentity, build_round, round_id
from detections.content.canary.changes import changed_rule_ids, rule_ids_in
from detections.content.canary.evaluate import (
    RuleView,
    Sighting,
    attribute_cause,
    diagnose_canary,
    evaluate_rule,
    required_fields,
)
from detections.content.canary.finding_docs import NOT_FIRING_RULE_ID, not_firing_finding
from detections.content.canary.templates import (
    CanaryTemplate,
    TemplateSet,
    from_regression,
    load_templates,
    select_firing,
)
from detections.content.defaults import OWN_RULES
from detections.engine.apply import match_events
from schemas.events import parse_event
from schemas.rule_health import RuleHealth
from tests.conftest import shared_path
from triage.auth import Caller
from triage.queries import summary_query
from triage.store import ListFilters, list_query, tenant_filter, tenant_filter_plain

ENCODED_PS = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d02"
TAMPERING = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04"
IDENTITY = CanaryIdentity("_canary", "_canary-sensor", "sigstream-canary")
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def own() -> tuple[object, dict[str, list[CanaryTemplate]]]:
    plan = load_plan([OWN_RULES])
    templates = select_firing(load_templates([OWN_RULES]), plan)
    assert not templates.errors, templates.errors
    return plan, templates.by_rule


# --- building -----------------------------------------------------------------------------


def test_every_own_rule_gets_canaries_from_its_true_positive_tests(own: tuple) -> None:
    plan, by_rule = own
    assert set(by_rule) == {str(p.rule.id) for p in plan.rules}
    assert all(1 <= len(t) <= 3 for t in by_rule.values())


def test_a_round_is_restamped_for_the_canary_tenant_with_fresh_ids_and_current_time(
    own: tuple,
) -> None:
    plan, by_rule = own
    first = build_round(by_rule, IDENTITY, T0)
    later = build_round(by_rule, IDENTITY, T0 + timedelta(minutes=5))
    ids = [e.event_id for e in first]
    assert len(set(ids)) == len(ids) == sum(len(t) for t in by_rule.values())
    assert not set(ids) & {e.event_id for e in later}  # gateway dedupe cannot swallow round 2
    for canary in first:
        event = canary.event
        assert (event["tenant_id"], event["sensor_id"], event["host"]) == (
            "_canary",
            "_canary-sensor",
            "sigstream-canary",
        )
        assert event["event_time"] == "2026-12-06T12:00:00Z"
        assert not {"seq", "received_time", "sent_time"} & set(event)
        parse_event(event)  # still a schema event
    # and each rule still fires on its own canaries, with the engine's matcher
    hits = match_events(plan, [e.event for e in first])
    index = {str(p.rule.id): p.index for p in plan.rules}
    for rule_id in by_rule:
        positions = [n for n, e in enumerate(first) if e.rule_id == rule_id]
        assert any((n, index[rule_id]) in hits for n in positions), rule_id


def test_test_events_the_rule_matches_are_chosen_first(own: tuple) -> None:
    plan, by_rule = own
    good = by_rule[TAMPERING][0]
    benign = CanaryTemplate(TAMPERING, "benign", {**good.event, "CommandLine": "notepad.exe"})
    chosen = select_firing(TemplateSet({TAMPERING: [benign, benign, benign, good]}), plan)
    assert chosen.by_rule[TAMPERING] == [good] and not chosen.errors
    stuck = select_firing(TemplateSet({TAMPERING: [benign]}), plan)
    assert stuck.by_rule[TAMPERING] == [benign]  # kept: its canary will fail with a cause
    assert "none of its 1 test events matches it" in stuck.errors[0]


def test_round_names_sort_by_time() -> None:
    assert round_id(T0) < round_id(T0 + timedelta(seconds=1))


def test_regression_cases_become_templates_by_rule_id() -> None:
    root = shared_path("sigma-regression")
    info = next(root.rglob("info.yml"))
    rule_id = info.read_text().split("rule_metadata:")[1].split("id:")[1].split()[0]
    found = from_regression(root, [rule_id])
    assert list(found.by_rule) == [rule_id]
    event = found.by_rule[rule_id][0].event
    assert event["event_type"] and event["logsource"]["product"] == "windows"


# --- judging ------------------------------------------------------------------------------


def _pending(ids: list[str], rejected: str | None = None) -> RuleHealth:
    return RuleHealth(
        rule_id=ENCODED_PS,
        title="Encoded PowerShell",
        state="pending",
        updated=T0,
        pending_round="r1",
        pending_injected=T0,
        pending_event_ids=ids,
        pending_rejected=rejected,
    )


VIEW = RuleView(ENCODED_PS, "Encoded PowerShell", tests=2)


def test_a_canary_finding_proves_the_rule_with_its_latency() -> None:
    seen = T0 + timedelta(seconds=4.5)
    sighting = Sighting("a", "active", seen, T0 + timedelta(seconds=2))
    sightings = {(ENCODED_PS, "a"): sighting}
    v = evaluate_rule(_pending(["a", "b"]), VIEW, sightings, seen, 300, round_fired=True)
    assert not v.not_firing and v.round_name == "r1"
    h = v.health
    assert (h.state, h.last_proven, h.latency_s, h.job_latency_s) == ("ok", seen, 4.5, 2.0)
    assert h.pending_round is None and h.rounds == 1 and h.failures == 0


def test_a_shadow_rule_that_fires_is_proven_in_state_shadow() -> None:
    view = RuleView(ENCODED_PS, "x", mode="shadow", tests=1)
    s = Sighting("a", "shadow", T0 + timedelta(seconds=3))
    v = evaluate_rule(_pending(["a"]), view, {(ENCODED_PS, "a"): s}, s.seen, 300, round_fired=True)
    assert v.health.state == "shadow" and not v.not_firing


def test_another_rules_finding_on_the_canary_does_not_prove_the_rule() -> None:
    """A broad rule B matching rule A's canary event says nothing about A: A stays
    pending, and past the timeout it is not firing."""
    seen = T0 + timedelta(seconds=4)
    other = Sighting("a", "active", seen, T0 + timedelta(seconds=1), rule_id=TAMPERING)
    sightings = {(TAMPERING, "a"): other}
    v = evaluate_rule(_pending(["a"]), VIEW, sightings, seen, 300, round_fired=True)
    assert v.round_name is None and v.health.state == "pending" and v.health.last_proven is None
    late = T0 + timedelta(seconds=301)
    v = evaluate_rule(_pending(["a"]), VIEW, sightings, late, 300, round_fired=True)
    assert v.not_firing and v.health.state == "not_firing" and v.health.last_proven is None


def test_silence_within_the_timeout_is_still_pending() -> None:
    v = evaluate_rule(
        _pending(["a"]), VIEW, {}, T0 + timedelta(seconds=299), 300, round_fired=False
    )
    assert v.round_name is None and v.health.pending_round == "r1"
    assert v.health.state == "pending"


def test_silence_past_the_timeout_is_not_firing_with_a_cause() -> None:
    v = evaluate_rule(
        _pending(["a"]),
        VIEW,
        {},
        T0 + timedelta(seconds=301),
        300,
        round_fired=True,
        diagnose=lambda: "field missing: the canary event lacks CommandLine, which the rule reads",
    )
    assert v.not_firing and v.health.state == "not_firing" and v.health.failures == 1
    assert v.health.cause and "CommandLine" in v.health.cause
    assert v.health.pending_round is None


def test_a_gateway_refusal_is_judged_at_once() -> None:
    v = evaluate_rule(_pending(["a"], "schema: bad"), VIEW, {}, T0, 300, round_fired=False)
    assert v.not_firing and v.health.cause == "gateway rejected the canary: schema: bad"


@pytest.mark.parametrize(
    ("view", "kwargs", "expected"),
    [
        (
            RuleView("r", "t", mode="disabled", mode_reason="noisy"),
            {},
            "killed: the kill switch is on (noisy)",
        ),
        (RuleView("r", "t", quarantined="budget"), {}, "quarantined at run time: budget"),
        (RuleView("r", "t", refused="unknown_field X"), {}, "refused by the detection job at load"),
        (RuleView("r", "t"), {"local": "route empty: x"}, "route empty: x"),
        (RuleView("r", "t"), {"round_fired": False}, "no canary of this round made a finding"),
        (RuleView("r", "t"), {}, "although the rule matches its canary locally"),
        (
            RuleView("r", "t", mode="disabled"),
            {"rejected": "401"},
            "gateway rejected the canary: 401",
        ),
    ],
)
def test_cause_attribution_most_specific_first(view: RuleView, kwargs: dict, expected: str) -> None:
    args = {"rejected": None, "local": None, "round_fired": True, "timeout_s": 300.0, **kwargs}
    assert expected in attribute_cause(view, **args)


def test_killed_and_quarantined_rules_keep_their_state_but_still_raise() -> None:
    killed = RuleView(ENCODED_PS, "x", mode="disabled", tests=1)
    v = evaluate_rule(_pending(["a"]), killed, {}, T0 + timedelta(hours=1), 300, round_fired=True)
    assert v.not_firing and v.health.state == "killed" and "kill switch" in (v.health.cause or "")


def test_a_rule_without_tests_is_no_tests() -> None:
    doc = RuleHealth(rule_id="r", title="t", state="pending", updated=T0)
    v = evaluate_rule(doc, RuleView("r", "t"), {}, T0, 300, round_fired=False)
    assert v.health.state == "no_tests" and v.round_name is None


# --- local diagnosis ----------------------------------------------------------------------


def test_diagnosis_names_a_missing_field_and_an_empty_route(own: tuple) -> None:
    plan, by_rule = own
    planned = next(p for p in plan.rules if str(p.rule.id) == ENCODED_PS)
    assert required_fields(planned.rule.ir) == {"CommandLine"}  # Image OR OriginalFileName
    events = [e.event for e in build_round({ENCODED_PS: by_rule[ENCODED_PS]}, IDENTITY, T0)]
    assert diagnose_canary(planned, events) is None
    renamed = []
    for e in events:
        e = dict(e)
        e["extra"] = {"CommandLineText": e.pop("CommandLine")}
        renamed.append(e)
    cause = diagnose_canary(planned, renamed)
    assert cause == "field missing: the canary event lacks CommandLine, which the rule reads"
    other_route = [
        {
            **e,
            "event_type": "file_event",
            "logsource": {"product": "windows", "category": "file_event"},
        }
        for e in events
    ]
    assert (diagnose_canary(planned, other_route) or "").startswith("route empty")
    assert (diagnose_canary(None, events) or "").startswith("route empty")


# --- the finding --------------------------------------------------------------------------


def test_not_firing_finding_is_under_the_operator_tenant_one_group_per_rule() -> None:
    a = not_firing_finding("rule-a", "A", "r1", "killed", tenant="sigstream", at=T0)
    again = not_firing_finding("rule-a", "A", "r1", "killed", tenant="sigstream", at=T0)
    next_round = not_firing_finding("rule-a", "A", "r2", "killed", tenant="sigstream", at=T0)
    b = not_firing_finding("rule-b", "B", "r1", "killed", tenant="sigstream", at=T0)
    assert a.rule.id == NOT_FIRING_RULE_ID and a.sigstream.tenant_id == "sigstream"
    assert a.sigstream.finding.id == again.sigstream.finding.id != next_round.sigstream.finding.id
    assert a.sigstream.group and b.sigstream.group and next_round.sigstream.group
    assert a.sigstream.group.id == next_round.sigstream.group.id != b.sigstream.group.id
    assert a.sigstream.event["cause"] == "killed" and "'A' (rule-a)" in (a.message or "")


# --- deployments ----------------------------------------------------------------------------


def test_changed_rules_of_a_deployment() -> None:
    rule = "title: x\nid: 1111\nlogsource: {}\n---\ntitle: y\nid: '2222'\n"
    assert rule_ids_in(rule) == ["1111", "2222"]
    old = [
        {"path": "rules/a.yml", "role": "rule", "sha256": "1", "content": "id: a\n"},
        {"path": "rules/b.yml", "role": "rule", "sha256": "2", "content": "id: b\n"},
        {"path": "placeholders.yml", "role": "placeholders", "sha256": "p"},
    ]
    new = [
        {"path": "moved/a.yml", "role": "rule", "sha256": "1", "content": "id: a\n"},
        {"path": "rules/b.yml", "role": "rule", "sha256": "3", "content": "id: b\n"},
        {"path": "rules/moved/c.yml", "role": "rule", "sha256": "4", "content": "id: c\n"},
        {"path": "placeholders.yml", "role": "placeholders", "sha256": "p"},
    ]
    assert changed_rule_ids(new, old) == ["b", "c"]
    assert changed_rule_ids(new, None) == ["a", "b", "c"]
    new[-1] = {**new[-1], "sha256": "q"}  # placeholders changed: every rule may behave anew
    assert changed_rule_ids(new, old) == ["a", "b", "c"]


# --- the reserved tenant -----------------------------------------------------------------


def test_canary_tenant_setting_must_be_reserved() -> None:
    assert Settings().canary_tenant == "_canary"
    with pytest.raises(ValueError, match="reserved"):
        Settings(canary_tenant="canary")


def test_customers_cannot_enroll_the_canary_tenant(tmp_path: Path) -> None:
    from ingest.gateway.credentials import CredentialError, CredentialStore

    store = CredentialStore(tmp_path / "creds.json")
    with pytest.raises(CredentialError):
        store.enroll("_canary", "_canary-sensor")
    with pytest.raises(CredentialError):
        store.enroll("acme", "ws01", reserved=True)  # reserved means a "_" tenant
    _, token = store.enroll("_canary", "_canary-sensor", reserved=True)
    cred = store.verify(token)
    assert cred is not None and cred.tenant_id == "_canary"


def test_triage_leaves_the_canary_tenant_out_unless_asked() -> None:
    everyone = Caller("ops", "analyst", None)
    hidden = [{"bool": {"must_not": [{"prefix": {"sigstream.tenant_id": "_"}}]}}]
    assert tenant_filter(everyone) == hidden
    assert tenant_filter_plain(everyone) == [
        {"bool": {"must_not": [{"prefix": {"tenant_id": "_"}}]}}
    ]
    assert hidden[0] in list_query(ListFilters(), everyone)["query"]["bool"]["filter"]
    assert tenant_filter(Caller("ops", "analyst", None, include_reserved=True)) == []
    assert tenant_filter(Caller("ops", "analyst", "_canary")) == [
        {"term": {"sigstream.tenant_id": "_canary"}}
    ]
    assert tenant_filter(Caller("a", "analyst", "acme")) == [
        {"term": {"sigstream.tenant_id": "acme"}}
    ]
    assert summary_query() == {"bool": {"must_not": [{"prefix": {"sigstream.tenant_id": "_"}}]}}
    assert summary_query(include_reserved=True) == {"match_all": {}}


# --- the promotion gate (CLI) -------------------------------------------------------------


def test_promotion_out_of_canary_mode_requires_the_canary_to_fire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rules mode RULE active` from canary runs a canary round first and refuses when the
    rule does not fire (unless --force); without a canary gateway it says so and goes on.
    The round itself (gateway, Kafka, job, Elasticsearch) is tests/integration's job."""
    from typer.testing import CliRunner

    from common.settings import get_settings
    from detections.content.deploy.modes import RuleMode
    from detections.content.deploy.store import DeploymentStore
    from sigstream.cli import app
    from sigstream.commands import canary as canaries

    store_dir = tmp_path / "deploy"
    store = DeploymentStore(store_dir)
    store.set_mode(ENCODED_PS, RuleMode("canary", fraction=0.5))
    asked: list[list[str]] = []
    verdict: dict[str, RuleHealth] = {}

    def gate(settings: Settings, rule_ids: list[str], **_: object) -> dict[str, RuleHealth]:
        asked.append(rule_ids)
        return verdict

    def mode(*extra: str) -> tuple[int, str]:
        get_settings.cache_clear()
        result = CliRunner().invoke(
            app, ["rules", "mode", ENCODED_PS, "active", "--store", str(store_dir), *extra]
        )
        return result.exit_code, result.output

    dead = RuleHealth(
        rule_id=ENCODED_PS, title="t", state="not_firing", cause="field missing: x", updated=T0
    )
    monkeypatch.setattr(canaries, "gate", gate)
    verdict[ENCODED_PS] = dead
    code, out = mode()
    assert code == 1 and "its canary did not fire" in out and "field missing: x" in out
    assert asked == [[ENCODED_PS]] and store.overrides()[ENCODED_PS].mode == "canary"
    code, _ = mode("--force")
    assert code == 0 and store.overrides()[ENCODED_PS].mode == "active"

    store.set_mode(ENCODED_PS, RuleMode("canary", fraction=0.5))
    verdict[ENCODED_PS] = dead.model_copy(update={"state": "ok", "cause": None, "latency_s": 1.0})
    code, out = mode()
    assert code == 0 and "proven" in out and store.overrides()[ENCODED_PS].mode == "active"

    # active -> shadow is no promotion: no canary round
    asked.clear()
    get_settings.cache_clear()
    CliRunner().invoke(app, ["rules", "mode", ENCODED_PS, "shadow", "--store", str(store_dir)])
    assert asked == []

    monkeypatch.setattr(canaries, "gate", lambda *a, **k: None)  # no gateway configured
    code, out = mode()
    assert code == 0 and "no canary round" in out
