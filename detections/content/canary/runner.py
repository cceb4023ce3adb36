"""Canary rounds: what is deployed, inject a round, evaluate, write health and findings.

``CanaryRunner.tick()`` evaluates what is in flight and, when a round is due, injects the
next one; ``run()`` repeats it on a schedule (``sigstream canary run``); ``prove()``
injects one round for some rules and waits for its verdicts (the deployment gate:
``rules deploy`` and promotions out of canary mode). All state lives in the rule-health
index, so a restarted runner (or ``canary run --once`` from cron) judges the round an
earlier process injected.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from common.metrics import forget_canary, set_canary
from detections.compiler.plan import DetectionPlan, PlannedRule, load_plan
from detections.content.canary.build import CanaryEvent, CanaryIdentity, build_round, round_id
from detections.content.canary.evaluate import (
    RuleView,
    Verdict,
    derived_state,
    diagnose_canary,
    evaluate_rule,
)
from detections.content.canary.finding_docs import not_firing_finding
from detections.content.canary.inject import GatewayTarget, Injection, inject
from detections.content.canary.store import (
    ensure_health_index,
    find_sightings,
    read_health,
    write_findings,
    write_health,
)
from detections.content.canary.templates import CanaryTemplate, TemplateSet
from detections.stream.status import quarantined_reasons
from schemas.rule_health import RuleHealth

log = logging.getLogger(__name__)


# --- what is deployed ------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """The rules the job runs, with each one's mode and the job's view of it."""

    plan: DetectionPlan
    views: dict[str, RuleView]
    generation: int | None = None  # the deployment store's; None: rules from paths
    version: str | None = None

    def planned(self, rule_id: str) -> PlannedRule | None:
        return next((p for p in self.plan.rules if str(p.rule.id) == rule_id), None)


def job_view(status: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(quarantined, refused at load): rule id -> reason, from the job's status file."""
    if not status:
        return {}, {}
    quarantined = quarantined_reasons(status)
    refused = {
        str(r.get("rule_id")): f"{r.get('reason')} {r.get('message') or ''}".strip()
        for r in status.get("rejected") or []
        if isinstance(r, dict) and r.get("rule_id")
    }
    return quarantined, refused


def deployment_from_store(
    deploy_dir: Path,
    trusted_keys: Path,
    status: Mapping[str, Any] | None = None,
    work_dir: Path | None = None,
) -> Deployment | None:
    """The current bundle of the deployment store (verified) as a plan with modes; None
    when nothing is deployed."""
    from detections.content.deploy.signing import load_trusted_keys
    from detections.content.deploy.store import DeploymentStore
    from detections.content.deploy.watcher import ACTIVE

    store = DeploymentStore(deploy_dir)
    state = store.state()
    bundle = store.current_bundle()
    if bundle is None:
        return None
    bundle.verify(load_trusted_keys([trusted_keys]) if trusted_keys.exists() else {})
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        plan = bundle.load_plan(Path(tmp))
    overrides = store.overrides()
    defaults = bundle.default_modes
    quarantined, refused = job_view(status)
    views: dict[str, RuleView] = {}
    for p in plan.rules:
        rid = str(p.rule.id)
        mode = overrides.get(rid) or defaults.get(rid) or ACTIVE
        views[rid] = RuleView(
            rid, p.rule.title, mode.mode, mode.reason, quarantined.get(rid), refused.get(rid)
        )
    return Deployment(plan, views, int(state["generation"]), bundle.version)


def deployment_from_paths(
    paths: Sequence[Path], status: Mapping[str, Any] | None = None, **kwargs: Any
) -> Deployment:
    """Rules the job was started with (``detect --rules``) when nothing is deployed."""
    plan = load_plan(list(paths), **kwargs)
    quarantined, refused = job_view(status)
    views = {
        str(p.rule.id): RuleView(
            str(p.rule.id),
            p.rule.title,
            quarantined=quarantined.get(str(p.rule.id)),
            refused=refused.get(str(p.rule.id)),
        )
        for p in plan.rules
    }
    return Deployment(plan, views)


# --- the runner ------------------------------------------------------------------------


def _differs(old: RuleHealth, new: RuleHealth) -> bool:
    """Whether anything but the ``updated`` stamp changed."""
    return old.model_dump(exclude={"updated"}) != new.model_dump(exclude={"updated"})


@dataclass(frozen=True)
class CanaryConfig:
    identity: CanaryIdentity
    findings_index: str
    health_index: str
    operator_tenant: str
    shadow_index: str | None = None
    timeout_s: float = 300.0
    interval_s: float = 300.0
    poll_s: float = 1.0


@dataclass
class RoundReport:
    """What one tick did: injected events and rules, and verdicts reached."""

    round_name: str | None = None
    injected: int = 0
    rules: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    findings: int = 0
    #: Every deployed rule when this report was made (an evaluation's), None when not
    #: known (an injection's): whose canary series may be forgotten.
    deployed: frozenset[str] | None = None

    @property
    def proven(self) -> list[RuleHealth]:
        return [v.health for v in self.verdicts if v.round_name and not v.not_firing]

    @property
    def not_firing(self) -> list[RuleHealth]:
        return [v.health for v in self.verdicts if v.not_firing]


#: Rules this process has canary series for (``publish_metrics``).
_PUBLISHED: set[str] = set()


def publish_metrics(report: RoundReport) -> None:
    """The canary gauges (common.metrics) of the rules this tick judged: last proven
    firing, latency, not firing. Rules without canary tests have no series. A tick judges
    only some rules, so a series is dropped only for a rule no longer deployed (known from
    an evaluation's report) or judged with no tests left, never for one merely not judged."""
    for verdict in report.verdicts:
        health = verdict.health
        if health.tests:
            set_canary(
                health.rule_id,
                health.last_proven,
                health.latency_s,
                not_firing=health.state == "not_firing",
            )
            _PUBLISHED.add(health.rule_id)
        elif health.rule_id in _PUBLISHED:
            forget_canary(health.rule_id)
            _PUBLISHED.discard(health.rule_id)
    if report.deployed is not None:
        for rule_id in _PUBLISHED - report.deployed:
            forget_canary(rule_id)
        _PUBLISHED.intersection_update(report.deployed)


class CanaryRunner:
    def __init__(
        self,
        es: Elasticsearch,
        cfg: CanaryConfig,
        target: GatewayTarget | None,
        templates: TemplateSet,
        deployment: Callable[[], Deployment],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.es = es
        self.cfg = cfg
        self.target = target
        self.templates = templates
        self.deployment = deployment
        self.clock = clock
        self._ready = False

    def _setup(self) -> None:
        if not self._ready:
            from detections.sinks.elasticsearch import ensure_findings_index

            ensure_health_index(self.es, self.cfg.health_index)
            ensure_findings_index(self.es, self.cfg.findings_index)
            self._ready = True

    def _indices(self) -> dict[str, str]:
        out = {"active": self.cfg.findings_index}
        if self.cfg.shadow_index:
            out["shadow"] = self.cfg.shadow_index
        return out

    def _tests(self, rule_id: str) -> list[CanaryTemplate]:
        return self.templates.by_rule.get(rule_id, [])

    def views(self, deployed: Deployment) -> dict[str, RuleView]:
        return {rid: replace(v, tests=len(self._tests(rid))) for rid, v in deployed.views.items()}

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self, deployed: Deployment | None = None) -> RoundReport:
        """Look for the findings of every pending canary; judge rules past the timeout;
        write their health, and a "rule not firing" finding per failed rule."""
        self._setup()
        deployed = deployed or self.deployment()
        views = self.views(deployed)
        docs = read_health(self.es, self.cfg.health_index)
        now = self.clock()
        pending = {rid: d.pending_event_ids for rid, d in docs.items() if d.pending_event_ids}
        identity = self.cfg.identity
        sightings = (
            find_sightings(self.es, self._indices(), identity.tenant, identity.sensor, pending, now)
            if pending
            else {}
        )
        fired_since = [
            d.pending_injected
            for rid, d in docs.items()
            if d.pending_injected and any((rid, i) in sightings for i in d.pending_event_ids or [])
        ]
        proven_at = [d.last_proven for d in docs.values() if d.last_proven]
        report = RoundReport(deployed=frozenset(views))
        changed: list[RuleHealth] = []
        for rid, view in views.items():
            doc = docs.get(rid) or RuleHealth(
                rule_id=rid, title=view.title, state="pending", updated=now
            )
            injected = doc.pending_injected
            round_fired = injected is not None and (
                any(t >= injected for t in fired_since) or any(t >= injected for t in proven_at)
            )
            verdict = evaluate_rule(
                doc,
                view,
                sightings,
                now,
                self.cfg.timeout_s,
                round_fired=round_fired,
                diagnose=partial(self._diagnose, deployed, rid),
            )
            if rid not in docs or _differs(docs[rid], verdict.health):
                changed.append(verdict.health)  # a poll that changes nothing writes nothing
            if verdict.round_name:
                report.verdicts.append(verdict)
        if changed:
            write_health(self.es, self.cfg.health_index, changed)
        failed = [
            not_firing_finding(
                v.health.rule_id,
                v.health.title,
                v.round_name or "",
                v.health.cause or "unknown",
                tenant=self.cfg.operator_tenant,
                at=now,
                injected=docs[v.health.rule_id].pending_injected,
                mode=v.health.mode,
            )
            for v in report.verdicts
            if v.not_firing
        ]
        report.findings = write_findings(self.es, self.cfg.findings_index, failed)
        for v in report.verdicts:
            if v.not_firing:
                log.warning(
                    "rule %s (%s) not firing: %s", v.health.title, v.health.rule_id, v.health.cause
                )
        return report

    def _diagnose(self, deployed: Deployment, rule_id: str) -> str | None:
        """Run the rule's canaries through the rule here: route empty, field missing."""
        events = [self._canary_body(t) for t in self._tests(rule_id)]
        try:
            return diagnose_canary(deployed.planned(rule_id), events)
        except Exception as exc:  # a diagnosis must never stop the evaluation
            return f"the canary could not be checked locally: {type(exc).__name__}: {exc}"

    def _canary_body(self, template: CanaryTemplate) -> dict[str, Any]:
        ident = self.cfg.identity
        (event,) = build_round({template.rule_id: [template]}, ident, self.clock(), "diagnose")
        return event.event

    # -- injection ----------------------------------------------------------------------

    def inject(
        self, rule_ids: Iterable[str] | None = None, deployed: Deployment | None = None
    ) -> RoundReport:
        """Inject a round for ``rule_ids`` (default: every deployed rule with tests and
        no round in flight) and record it as pending."""
        if self.target is None:
            raise RuntimeError("no canary gateway configured (SIGSTREAM_CANARY_GATEWAY_URL)")
        self._setup()
        deployed = deployed or self.deployment()
        docs = read_health(self.es, self.cfg.health_index)
        wanted = set(rule_ids) if rule_ids is not None else None
        chosen = {
            rid: self._tests(rid)
            for rid in deployed.views
            if self._tests(rid)
            and (wanted is None or rid in wanted)
            and (wanted is not None or not (docs.get(rid) and docs[rid].pending_round))
        }
        now = self.clock()
        name = round_id(now)
        events = build_round(chosen, self.cfg.identity, now, name)
        report = RoundReport(round_name=name, rules=sorted(chosen))
        if not events:
            return report
        result = inject(self.target, events)
        report.injected = result.accepted
        report.rejected = result.rejected
        write_health(
            self.es, self.cfg.health_index, self._pending(docs, deployed, events, result, name)
        )
        return report

    def _pending(
        self,
        docs: Mapping[str, RuleHealth],
        deployed: Deployment,
        events: Sequence[CanaryEvent],
        result: Injection,
        name: str,
    ) -> list[RuleHealth]:
        by_rule: dict[str, list[CanaryEvent]] = {}
        for e in events:
            by_rule.setdefault(e.rule_id, []).append(e)
        views = self.views(deployed)
        out = []
        for rid, evs in by_rule.items():
            refused = [result.rejected[e.event_id] for e in evs if e.event_id in result.rejected]
            doc = docs.get(rid) or RuleHealth(
                rule_id=rid, title=views[rid].title, state="pending", updated=result.injected
            )
            doc = doc.model_copy(
                update={
                    "tests": len(evs),
                    "updated": result.injected,
                    "last_injected": result.injected,
                    "pending_round": name,
                    "pending_injected": result.injected,
                    "pending_event_ids": [e.event_id for e in evs],
                    # Judged at once only when the gateway took none of the rule's canaries.
                    "pending_rejected": refused[0] if len(refused) == len(evs) else None,
                }
            )
            out.append(doc.model_copy(update={"state": derived_state(views[rid], doc)}))
        return out

    # -- schedules ----------------------------------------------------------------------

    def tick(self, inject_due: bool) -> tuple[RoundReport, RoundReport | None]:
        """Evaluate what is in flight; inject a new round when due."""
        deployed = self.deployment()
        evaluated = self.evaluate(deployed)
        injected = self.inject(deployed=deployed) if inject_due else None
        return evaluated, injected

    def run(
        self,
        rounds: int | None = None,
        on_report: Callable[[RoundReport, RoundReport | None], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Inject a round every ``interval_s`` and evaluate every ``poll_s`` in between
        (so latencies are measured to about ``poll_s``). ``rounds``: stop after that many
        rounds have been injected and judged (None: forever)."""
        injected = 0
        next_round = time.monotonic()
        while True:
            due = time.monotonic() >= next_round and (rounds is None or injected < rounds)
            evaluated, new = self.tick(due)
            if due:
                injected += 1
                next_round += self.cfg.interval_s
            if on_report is not None and (new is not None or evaluated.verdicts):
                on_report(evaluated, new)
            if rounds is not None and injected >= rounds and not self.in_flight():
                return
            sleep(self.cfg.poll_s)

    def in_flight(self) -> bool:
        return any(d.pending_round for d in read_health(self.es, self.cfg.health_index).values())

    def prove(
        self,
        rule_ids: Iterable[str],
        timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, RuleHealth]:
        """One round for ``rule_ids``, waited for: each rule's health once judged (proven,
        or not firing with the cause). Rules without tests come back as ``no_tests``."""
        wanted = list(dict.fromkeys(rule_ids))
        deployed = self.deployment()
        self.inject(wanted, deployed)
        limit = time.monotonic() + (timeout_s or self.cfg.timeout_s) + 30
        verdicts: dict[str, RuleHealth] = {}
        with_tests = {r for r in wanted if self._tests(r) and r in deployed.views}
        while True:
            report = self.evaluate(deployed)
            verdicts.update({v.health.rule_id: v.health for v in report.verdicts})
            if with_tests <= set(verdicts) or time.monotonic() > limit:
                break
            sleep(self.cfg.poll_s)
        docs = read_health(self.es, self.cfg.health_index)
        for rid in wanted:
            if rid not in verdicts and rid in docs:
                verdicts[rid] = docs[rid]
        return verdicts
