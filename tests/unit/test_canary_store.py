"""The canaries' Elasticsearch edge against an in-memory stand-in: sightings are looked up
by the deterministic finding ids of (the canary's own rule, its event), rule-health
documents are validated one by one, and a long-running runner follows the deployment."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from detections.content.canary.build import CanaryIdentity
from detections.content.canary.evaluate import RuleView, evaluate_rule
from detections.content.canary.store import IDS_CHUNK, find_sightings, read_health
from detections.content.canary.templates import CanaryTemplate, TemplateSet
from detections.sinks.finding_docs import build_finding, finding_document
from schemas.findings import RuleInfo
from schemas.rule_health import RuleHealth

IDENTITY = CanaryIdentity("_canary", "_canary-sensor", "sigstream-canary")
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DEAD = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d02"  # rule A: its canary, it no longer fires
BROAD = "0f2c8a54-5d0e-4c1e-9a8f-6a1d2b3c4d04"  # rule B: matches A's canary anyway
INDICES = {"active": "findings", "shadow": "findings-shadow"}


class FakeEs:
    """``search`` over stored documents: ``ids`` and ``term`` filters, ``size``,
    ``source_includes``; an index that does not exist raises NotFoundError."""

    def __init__(self) -> None:
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.searches: list[dict[str, Any]] = []

    def add(self, index: str, doc_id: str, body: dict[str, Any]) -> None:
        self.indices.setdefault(index, {})[doc_id] = body

    def search(self, *, index: str, size: int, query: dict[str, Any], **kw: Any) -> dict:
        from elasticsearch import NotFoundError

        self.searches.append({"index": index, "size": size, "query": query, **kw})
        if index not in self.indices:
            raise NotFoundError("index_not_found_exception", None, {})  # type: ignore[arg-type]
        hits = [
            {"_id": doc_id, "_source": body}
            for doc_id, body in self.indices[index].items()
            if _matches(doc_id, body, query)
        ]
        return {"hits": {"hits": hits[:size]}}


def _matches(doc_id: str, body: dict[str, Any], query: dict[str, Any]) -> bool:
    if "match_all" in query:
        return True
    for f in query["bool"]["filter"]:
        if "ids" in f and doc_id not in f["ids"]["values"]:
            return False
        if "term" in f:
            ((field, value),) = f["term"].items()
            node: Any = body
            for part in field.split("."):
                node = (node or {}).get(part)
            if node != value:
                return False
        if "terms" in f:
            raise AssertionError("looked up by event id: any rule's finding would match")
    return True


def _finding(es: FakeEs, index: str, rule_id: str, event_id: str, ingested: datetime) -> None:
    """What the job writes when ``rule_id`` matches the canary ``event_id``."""
    event = {
        "event_id": event_id,
        "event_time": T0.isoformat(),
        "event_type": "process_creation",
        "host": IDENTITY.host,
        "tenant_id": IDENTITY.tenant,
        "sensor_id": IDENTITY.sensor,
    }
    finding = build_finding(RuleInfo(id=rule_id, name=rule_id), event, ingested)
    doc_id, body = finding_document(finding)
    es.add(index, doc_id, body)


def _pending(rule_id: str, ids: list[str]) -> RuleHealth:
    return RuleHealth(
        rule_id=rule_id,
        title=rule_id,
        state="pending",
        updated=T0,
        pending_round="r1",
        pending_injected=T0,
        pending_event_ids=ids,
    )


def _sightings(es: FakeEs, pending: dict[str, list[str]]) -> dict:
    seen = T0 + timedelta(seconds=5)
    return find_sightings(cast(Any, es), INDICES, IDENTITY.tenant, IDENTITY.sensor, pending, seen)


def test_another_rules_finding_on_a_canary_event_does_not_prove_its_rule() -> None:
    es = FakeEs()
    _finding(es, "findings", BROAD, "canary-r1-a-0", T0 + timedelta(seconds=1))
    found = _sightings(es, {DEAD: ["canary-r1-a-0"]})
    assert found == {}
    view = RuleView(DEAD, "dead", tests=1)
    late = T0 + timedelta(seconds=301)
    verdict = evaluate_rule(
        _pending(DEAD, ["canary-r1-a-0"]), view, found, late, 300, round_fired=True
    )
    assert verdict.not_firing and verdict.health.last_proven is None

    # the rule's own finding does prove it, with the job's time
    _finding(es, "findings-shadow", DEAD, "canary-r1-a-0", T0 + timedelta(seconds=2))
    found = _sightings(es, {DEAD: ["canary-r1-a-0"]})
    assert list(found) == [(DEAD, "canary-r1-a-0")]
    s = found[(DEAD, "canary-r1-a-0")]
    assert (s.index, s.rule_id, s.ingested) == ("shadow", DEAD, T0 + timedelta(seconds=2))
    now = T0 + timedelta(seconds=5)
    verdict = evaluate_rule(
        _pending(DEAD, ["canary-r1-a-0"]), view, found, now, 300, round_fired=True
    )
    assert not verdict.not_firing and verdict.health.state == "ok"
    assert verdict.health.job_latency_s == 2.0


def test_an_event_many_rules_match_is_found_for_every_rule_asked() -> None:
    """Was ``size=len(ids) * 4``: a canary matched by more than four rules lost hits."""
    es = FakeEs()
    rules = [f"rule-{n}" for n in range(9)]
    for rule_id in rules:
        _finding(es, "findings", rule_id, "shared", T0)
    pending = {rule_id: ["shared"] for rule_id in rules}
    pending["silent"] = ["canary-silent-0"]
    found = _sightings(es, pending)
    assert sorted(found) == sorted((r, "shared") for r in rules)
    assert all(q["size"] <= 2 * IDS_CHUNK <= 10_000 for q in es.searches)


def test_lookups_are_chunked_and_bounded() -> None:
    es = FakeEs()
    ids = [f"canary-{n}" for n in range(IDS_CHUNK + 7)]
    _finding(es, "findings", DEAD, ids[-1], T0)
    found = _sightings(es, {DEAD: ids})
    assert list(found) == [(DEAD, ids[-1])]
    active = [q for q in es.searches if q["index"] == "findings"]
    assert [q["size"] for q in active] == [2 * IDS_CHUNK, 2 * 7]
    assert not [q for q in es.searches if q["index"] == "findings-shadow"][1:]  # 404: stop


def test_one_bad_rule_health_document_is_skipped_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    es = FakeEs()
    good = _pending(DEAD, ["a"]).model_dump(mode="json")
    es.add("health", DEAD, good)
    es.add("health", BROAD, {"rule_id": BROAD, "title": "x", "state": "bogus", "updated": "no"})
    es.add("health", "junk", {"surprise": 1})
    with caplog.at_level(logging.WARNING, logger="detections.content.canary.store"):
        docs = read_health(cast(Any, es), "health")
    assert list(docs) == [DEAD] and docs[DEAD].pending_event_ids == ["a"]
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2
    assert BROAD in skipped[0] and "state" in skipped[0] and "updated" in skipped[0]
    assert "junk" in skipped[1] and "rule_id" in skipped[1]
    assert read_health(cast(Any, FakeEs()), "missing") == {}


def test_a_running_runner_canaries_rules_deployed_after_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`canary run` re-reads the deployment on a new generation, and the canaries with it."""
    import detections.content.canary.templates as templates_mod
    import detections.sinks.elasticsearch as sinks
    from common.settings import Settings
    from sigstream.commands import canary as canaries

    def deployment(generation: int, rule_ids: list[str]) -> SimpleNamespace:
        views = {r: RuleView(r, r) for r in rule_ids}
        plan = SimpleNamespace(
            rules=[SimpleNamespace(rule=SimpleNamespace(id=r)) for r in rule_ids]
        )
        return SimpleNamespace(generation=generation, views=views, plan=plan)

    def load_templates(paths: list[Path], wanted: list[str]) -> TemplateSet:
        out = TemplateSet()
        for r in wanted:
            out.add(CanaryTemplate(r, f"{r}.tests.json#0", {"event_id": r}))
        return out

    store = {"generation": 1, "rules": [DEAD]}
    loads: list[int] = []

    def load_deployment(settings: Settings, rules: list[Path] | None = None) -> Any:
        loads.append(store["generation"])  # type: ignore[arg-type]
        return deployment(store["generation"], store["rules"])  # type: ignore[arg-type]

    monkeypatch.setattr(canaries, "load_deployment", load_deployment)
    monkeypatch.setattr(canaries, "_generation", lambda s: store["generation"])
    monkeypatch.setattr(canaries, "test_paths", lambda s, t=None: [tmp_path])
    monkeypatch.setattr(templates_mod, "load_templates", load_templates)
    monkeypatch.setattr(templates_mod, "select_firing", lambda t, plan: t)
    monkeypatch.setattr(sinks, "connect", lambda hosts: FakeEs())

    runner = canaries.make_runner(Settings(run_dir=tmp_path))
    assert runner.deployment().generation == 1 and list(runner.templates.by_rule) == [DEAD]
    assert runner.deployment() is runner.deployment() and loads == [1]  # unchanged: no re-read

    store.update(generation=2, rules=[DEAD, BROAD])
    deployed = runner.deployment()
    assert deployed.generation == 2 and loads == [1, 2]
    assert sorted(runner.templates.by_rule) == sorted([DEAD, BROAD])
    assert runner.views(deployed)[BROAD].tests == 1
