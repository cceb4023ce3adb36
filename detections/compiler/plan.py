"""The detection plan: compiled rules grouped by route, the artefact the Spark job executes.

Building a plan is pure (no Spark): it compiles rules, assigns each a stable index, routes
it by logsource and records every rejected rule with its reason. Its ``version`` is a hash
of the rules' compiled form, so two jobs running the same plan provably agree.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.safe_yaml import ContentError, expect_mapping, load_yaml_file
from detections.compiler import (
    DEFAULT_CONFIG,
    CompiledRule,
    CompilerConfig,
    Rejection,
    compile_path,
    ir,
)
from detections.compiler.logsources import Route, UncoveredLogsource, field_source, route_for
from schemas.findings import RuleInfo


@dataclass(frozen=True)
class PlannedRule:
    index: int
    rule: CompiledRule
    route: Route

    @property
    def info(self) -> RuleInfo:
        r = self.rule
        return RuleInfo(
            id=str(r.id),
            name=r.title,
            level=r.level,
            tags=list(r.tags),
            author=r.author,
            description=r.description,
            status=r.status,
            references=list(getattr(r, "references", ()) or ()),
            falsepositives=list(getattr(r, "falsepositives", ()) or ()),
        )


@dataclass(frozen=True)
class DetectionPlan:
    rules: tuple[PlannedRule, ...]
    rejections: tuple[Rejection, ...] = ()
    routes: dict[Route, tuple[int, ...]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        for planned in self.rules:
            digest.update(
                json.dumps(
                    [str(planned.rule.id), planned.rule.ir.to_dict()], sort_keys=True, default=str
                ).encode()
            )
        return digest.hexdigest()[:16]

    def rule_infos(self) -> dict[int, RuleInfo]:
        return {p.index: p.info for p in self.rules}


def unknown_fields(rule: CompiledRule, route: Route) -> list[str]:
    """Fields the rule reads that no event of its route can carry.

    Only routes of typed event categories have a closed field set; service logs
    (Security, System, ...) keep all their fields in ``extra`` and accept any name.
    """
    if not route.event_types:
        return []
    return sorted(f for f in ir.fields(rule.ir) if field_source(route, f) == "extra")


def plan_rules(
    rules: Sequence[CompiledRule],
    rejections: Iterable[Rejection] = (),
    *,
    allow_unknown_fields: bool = False,
) -> DetectionPlan:
    """Route compiled rules. Rejected, each with its reason: rules whose logsource no event
    can have, duplicate ids, and (unless allowed) rules naming fields the schema lacks."""
    planned: list[PlannedRule] = []
    rejected = list(rejections)
    seen_ids: set[str] = set()
    for rule in rules:
        ls = rule.logsource
        if str(rule.id) in seen_ids:
            rejected.append(
                Rejection(
                    path=rule.path,
                    rule_id=str(rule.id),
                    reason="duplicate_id",
                    message=f"rule id {rule.id} is already loaded",
                )
            )
            continue
        try:
            route = route_for(ls.category, ls.product, ls.service)
        except UncoveredLogsource as exc:
            rejected.append(
                Rejection(
                    path=rule.path,
                    rule_id=str(rule.id),
                    reason="logsource_not_covered",
                    message=str(exc),
                )
            )
            continue
        missing = unknown_fields(rule, route)
        if missing and not allow_unknown_fields:
            types = ", ".join(route.event_types or ())
            rejected.append(
                Rejection(
                    path=rule.path,
                    rule_id=str(rule.id),
                    reason="unknown_field",
                    message=f"field(s) {', '.join(missing)} not in the schema for {types}",
                )
            )
            continue
        seen_ids.add(str(rule.id))
        planned.append(PlannedRule(index=len(planned), rule=rule, route=route))
    routes: dict[Route, list[int]] = defaultdict(list)
    for p in planned:
        routes[p.route].append(p.index)
    return DetectionPlan(
        rules=tuple(planned),
        rejections=tuple(rejected),
        routes={r: tuple(ix) for r, ix in sorted(routes.items(), key=lambda kv: kv[0].describe())},
    )


def load_placeholders(path: Path | None) -> CompilerConfig:
    """Compiler configuration with ``|expand`` placeholder values from a YAML mapping
    (``name: [value, ...]``), the site-specific part of Sigma rules. Anything else (a
    bomb, a list, nested values) is a :class:`ContentError` naming the file."""
    if path is None:
        return DEFAULT_CONFIG
    try:
        data = expect_mapping(load_yaml_file(path), "placeholders")
        values: dict[str, list[str]] = {}
        for name, given in data.items():
            items = given if isinstance(given, list) else [given]
            odd = [v for v in items if not isinstance(v, str | int | float | bool)]
            if odd or not isinstance(name, str | int):
                raise ContentError(
                    f"placeholder {str(name)[:80]!r}: values are text or numbers, "
                    f"not {type(odd[0] if odd else name).__name__}"
                )
            values[str(name)] = [str(v) for v in items]
    except ContentError as exc:
        raise ContentError(f"{path}: {exc}") from None
    return CompilerConfig(placeholders=values)


def load_plan(
    paths: Sequence[Path],
    *,
    allow_unknown_fields: bool = False,
    config: CompilerConfig = DEFAULT_CONFIG,
) -> DetectionPlan:
    """Compile every rule under ``paths`` and plan them."""
    rules, rejections = compile_path(paths, config)
    return plan_rules(rules, rejections, allow_unknown_fields=allow_unknown_fields)
