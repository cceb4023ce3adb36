"""Sigma correlation rules -> :class:`CorrelationSpec`, resolved against the detection plan.

Pure (files in, specs out). A correlation that cannot run (unknown type, a base rule that
is missing or was refused, an extended condition, a cycle of correlations, a correlation
over one that did not load) becomes a :class:`CorrelationRejection` naming its file; the
others are unaffected.

``rules`` may name other correlations (by id or name): a chained correlation. They are
compiled upstream first; see detections/correlation/chain.py for how an upstream firing
becomes a downstream match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule
from sigma.exceptions import SigmaRuleLocation

from common.safe_yaml import ContentError, load_yaml_documents, read_content
from detections.compiler.plan import DetectionPlan, plan_rules
from detections.compiler.sigma_to_ir import rule_files
from detections.correlation.model import (
    CORRELATION_TYPES,
    FIELD_TYPES,
    Condition,
    CorrelationRejection,
    CorrelationSpec,
)

_OPERATORS = ("gt", "gte", "lt", "lte", "eq", "neq")
_HAS_CORRELATION = re.compile(r"^correlation:", re.MULTILINE)
_HAS_NAME = re.compile(r"^name:", re.MULTILINE)


class CorrelationError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CorrelationSet:
    """The correlations that run, and the ones quarantined with their reasons."""

    specs: tuple[CorrelationSpec, ...] = ()
    rejections: tuple[CorrelationRejection, ...] = ()


def _documents(text: str) -> list[dict[str, Any]]:
    """The mapping documents of ``text``, loaded with the bounded loader (ContentError)."""
    return [d for d in load_yaml_documents(text) if isinstance(d, dict)]


def rule_names(paths: Iterable[Path]) -> dict[str, str]:
    """Sigma ``name`` -> rule id, for every rule under ``paths`` that has a name (a
    correlation may reference base rules by name). Only files with a ``name:`` key are
    parsed, so scanning the SigmaHQ corpus costs a text search per file."""
    names: dict[str, str] = {}
    for path in paths:
        try:
            text = read_content(path).decode("utf-8", errors="replace")
        except ContentError:
            continue  # the rule loader reports unreadable files
        names.update(_names_in(text))
    return names


def _names_in(text: str) -> dict[str, str]:
    if not _HAS_NAME.search(text):
        return {}
    try:
        docs = _documents(text)
    except ContentError:
        return {}  # the rule loader reports broken files
    return {
        str(d["name"]): str(d["id"])
        for d in docs
        if isinstance(d.get("name"), str | int) and isinstance(d.get("id"), str | int)
    }


def percentile_from(raw: Any) -> int | None:
    """``condition.percentile`` of the YAML: an integer 0..100 (None when absent). pySigma
    truncates with ``int()`` and rsigma reads only integers (a float becomes its default
    50), so anything but an integer is refused rather than read two ways."""
    if not isinstance(raw, dict) or "percentile" not in raw:
        return None
    value = raw["percentile"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise CorrelationError(
            "bad_condition", f"condition percentile: {value!r} is not an integer 0..100"
        )
    return value


def condition_from(
    raw: Any,
    default: SigmaCorrelationCondition,
    field: str | None,
    percentile: int | None = None,
) -> Condition:
    """The condition of the YAML ``condition`` mapping: pySigma's one operator, or a range
    of a lower and an upper bound (pySigma refuses two operators, Sigma's spec allows it)."""
    if not isinstance(raw, dict):
        return Condition(((default.op.name.lower(), float(default.count)),), field, percentile)
    terms = []
    for op in _OPERATORS:
        if op in raw:
            try:
                terms.append((op, float(raw[op])))
            except (TypeError, ValueError) as exc:
                raise CorrelationError(
                    "bad_condition", f"condition {op}: {raw[op]!r} is not a number"
                ) from exc
    if not terms:
        raise CorrelationError("bad_condition", f"condition {raw!r} has no operator")
    if len(terms) > 1:
        lower = [t for t in terms if t[0] in ("gt", "gte")]
        upper = [t for t in terms if t[0] in ("lt", "lte")]
        if len(lower) != 1 or len(upper) != 1 or len(terms) != 2:
            raise CorrelationError(
                "bad_condition", f"condition {raw!r}: a range is one lower and one upper bound"
            )
    return Condition(tuple(terms), field, percentile)


def _single_operator(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with a range condition cut to its first bound, so pySigma parses it
    (the full range is read from the raw YAML by :func:`condition_from`)."""
    corr = doc.get("correlation")
    cond = corr.get("condition") if isinstance(corr, dict) else None
    if (
        isinstance(corr, dict)
        and isinstance(cond, dict)
        and sum(op in cond for op in _OPERATORS) > 1
    ):
        first = next(op for op in _OPERATORS if op in cond)
        kept = {k: v for k, v in cond.items() if k not in _OPERATORS or k == first}
        doc = {**doc, "correlation": {**corr, "condition": kept}}
    return doc


def correlation_key(rule: SigmaCorrelationRule) -> str:
    """The id a correlation's spec gets: its ``id``, else its ``name``, else its title."""
    return str(rule.id) if rule.id else str(rule.name or rule.title)


class _Resolver:
    """Rule references (id or name) -> ids of base rules the plan runs, or of correlations
    (``correlations`` maps each correlation's id and name to its spec id)."""

    def __init__(
        self, plan: DetectionPlan, names: dict[str, str], correlations: dict[str, str] | None = None
    ) -> None:
        self.ids = {str(p.rule.id) for p in plan.rules}
        self.refused = {r.rule_id: r for r in plan.rejections if r.rule_id}
        self.names = names
        self.correlations = correlations or {}

    def correlation(self, reference: str) -> str | None:
        """The spec id of the correlation ``reference`` names, None for anything else (a
        base rule the plan runs wins over a correlation of the same id or name)."""
        if self.names.get(reference, reference) in self.ids:
            return None
        return self.correlations.get(reference)

    def __call__(self, reference: str, correlation_ids: set[str]) -> str:
        rule_id = self.names.get(reference, reference)
        if rule_id in self.ids:
            return rule_id
        chained = self.correlation(reference)
        if chained is not None:
            return chained
        if rule_id in correlation_ids or reference in correlation_ids:
            raise CorrelationError(
                "unknown_rule", f"correlation {reference} is referenced but not defined"
            )
        if rule_id in self.refused:
            why = self.refused[rule_id]
            raise CorrelationError(
                "base_rule_not_loaded",
                f"base rule {reference} was not loaded: {why.reason}: {why.message}",
            )
        raise CorrelationError("unknown_rule", f"base rule {reference} not found (by id or name)")


def _chain_checks(
    spec: CorrelationSpec, upstream: dict[str, CorrelationSpec], rejected: dict[str, str]
) -> None:
    """A chained correlation's group key and counted field must come from each upstream
    firing, i.e. be among the upstream's group-by fields (through ``aliases``, which may
    map a name per upstream correlation). Raises :class:`CorrelationError`."""
    for ref in spec.upstream:
        if ref not in upstream:
            why = rejected.get(ref, "not loaded")
            raise CorrelationError(
                "upstream_not_loaded", f"upstream correlation {ref} was not loaded: {why}"
            )
        up = upstream[ref]
        for name in spec.group_by:
            target = spec.field_for(ref, name)
            if target not in up.group_by:
                raise CorrelationError(
                    "chain_group_by",
                    f"group-by {name}: upstream correlation {ref} groups by "
                    f"{list(up.group_by)}, not {target}; a chained correlation groups by "
                    "its upstream's group-by fields",
                )
        field = spec.condition.field
        if field and spec.field_for(ref, field) not in up.group_by:
            raise CorrelationError(
                "chain_field",
                f"condition field {field}: upstream correlation {ref} groups by "
                f"{list(up.group_by)}; over a correlation the field must be one of them",
            )


def compile_correlation(
    rule: SigmaCorrelationRule,
    raw: dict[str, Any],
    resolve: _Resolver,
    correlation_ids: set[str],
    upstream: dict[str, CorrelationSpec] | None = None,
    rejected: dict[str, str] | None = None,
) -> CorrelationSpec:
    """One parsed correlation rule -> spec; raises :class:`CorrelationError`. ``upstream``:
    the correlations already compiled (a chained one needs its upstream's group-by),
    ``rejected``: spec id -> why, for those that were not."""
    if rule.errors:
        raise CorrelationError("parse_error", str(rule.errors[0]))
    kind = str(rule.type.name).lower() if rule.type is not None else ""
    if kind not in CORRELATION_TYPES:
        raise CorrelationError(
            "unsupported_type", f"correlation type {kind or '?'} is not supported"
        )
    if not isinstance(rule.condition, SigmaCorrelationCondition):
        raise CorrelationError(
            "unsupported_condition", "extended (boolean) conditions are not supported"
        )
    refs = [r.reference for r in rule.rules or []]
    if not refs:
        raise CorrelationError("no_rules", "the correlation references no rules")
    odd = [r for r in refs if not isinstance(r, str)]
    if odd:
        raise CorrelationError(
            "bad_rules",
            f"correlation.rules lists rule ids or names, not {type(odd[0]).__name__} {odd[0]!r}"[
                :300
            ],
        )
    rules = tuple(resolve(r, correlation_ids) for r in refs)
    chained = tuple(
        dict.fromkeys(x for r, x in zip(refs, rules, strict=True) if resolve.correlation(r))
    )
    field = rule.condition.fieldref
    if isinstance(field, list):
        if len(field) != 1:
            raise CorrelationError("bad_condition", f"{kind} takes the values of one field")
        field = field[0]
    if kind in FIELD_TYPES and not field:
        raise CorrelationError("bad_condition", f"{kind} needs condition.field")
    raw_condition = (raw.get("correlation") or {}).get("condition")
    condition = condition_from(
        raw_condition,
        rule.condition,
        field if kind in FIELD_TYPES else None,
        percentile_from(raw_condition) if kind == "value_percentile" else None,
    )
    aliases = []
    for alias in rule.aliases:
        mapping = tuple(
            sorted((resolve(ref.reference, correlation_ids), f) for ref, f in alias.mapping.items())
        )
        aliases.append((alias.alias, mapping))
    spec = CorrelationSpec(
        id=correlation_key(rule),
        title=rule.title,
        type=kind,
        rules=rules,
        group_by=tuple(rule.group_by or ()),
        timespan_s=int(rule.timespan.seconds),
        condition=condition,
        generate=bool(rule.generate),
        level=str(rule.level) if rule.level is not None else None,
        tags=tuple(str(t) for t in rule.tags),
        description=rule.description,
        author=rule.author,
        path=str(rule.source.path) if rule.source is not None else None,
        references=tuple(str(r) for r in (rule.references or ())),
        falsepositives=tuple(str(f) for f in (rule.falsepositives or ()) if f is not None),
        rule_fields=tuple(aliases),
        upstream=chained,
    )
    if chained:
        _chain_checks(spec, upstream or {}, rejected or {})
    return spec


def _correlation_docs(
    text: str, where: str
) -> tuple[list[tuple[SigmaCorrelationRule, dict[str, Any]]], list[CorrelationRejection]]:
    found: list[tuple[SigmaCorrelationRule, dict[str, Any]]] = []
    rejected: list[CorrelationRejection] = []
    try:
        docs = _documents(text)
    except ContentError as exc:
        return [], [CorrelationRejection(where, None, "parse_error", f"{where}: {exc}")]
    for doc in docs:
        if "correlation" not in doc:
            continue
        try:
            rule = SigmaCorrelationRule.from_dict(
                _single_operator(doc), collect_errors=True, source=SigmaRuleLocation(Path(where))
            )
        except Exception as exc:  # a broken correlation must not stop the others
            rejected.append(
                CorrelationRejection(
                    where, str(doc.get("id") or "") or None, "parse_error", f"{where}: {exc}"
                )
            )
            continue
        found.append((rule, doc))
    return found, rejected


def compile_correlations(
    sources: Sequence[tuple[str, str]], plan: DetectionPlan, names: dict[str, str] | None = None
) -> CorrelationSet:
    """Correlations of ``sources`` ((where, YAML text) pairs) resolved against ``plan``."""
    parsed: list[tuple[SigmaCorrelationRule, dict[str, Any]]] = []
    rejections: list[CorrelationRejection] = []
    for where, text in sources:
        if not _HAS_CORRELATION.search(text):
            continue
        found, rejected = _correlation_docs(text, where)
        parsed += found
        rejections += rejected
    local_names = dict(names or {})
    for _where, text in sources:
        local_names.update(_names_in(text))
    correlation_ids = {str(r.id) for r, _ in parsed if r.id} | {
        str(r.name) for r, _ in parsed if r.name
    }
    refs: dict[str, str] = {}  # a correlation's id and name -> its spec id (first wins)
    for rule, _raw in parsed:
        for ref in (rule.id, rule.name):
            if ref:
                refs.setdefault(str(ref), correlation_key(rule))
    resolve = _Resolver(plan, local_names, refs)
    order, cycles = _chain_order(parsed, resolve)
    specs: dict[int, CorrelationSpec] = {}
    loaded: dict[str, CorrelationSpec] = {}
    why_not: dict[str, str] = {}  # spec id -> why it was refused
    for i in order:
        rule, raw = parsed[i]
        location = str(rule.source.path) if rule.source is not None else None
        rule_id = str(rule.id) if rule.id else None
        key = correlation_key(rule)
        try:
            if i in cycles:
                raise CorrelationError("correlation_cycle", f"correlation cycle {cycles[i]}")
            spec = compile_correlation(rule, raw, resolve, correlation_ids, loaded, why_not)
        except CorrelationError as exc:
            rejections.append(
                CorrelationRejection(location, rule_id, exc.reason, f"{location}: {exc.message}")
            )
            why_not.setdefault(key, f"{exc.reason}: {exc.message}")
            continue
        except Exception as exc:  # wrong types pySigma let through: refuse this one only
            message = f"{location}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            rejections.append(
                CorrelationRejection(location, rule_id, "invalid_correlation", message)
            )
            why_not.setdefault(key, f"invalid_correlation: {message}")
            continue
        if spec.id in loaded:
            rejections.append(
                CorrelationRejection(
                    location,
                    rule_id,
                    "duplicate_id",
                    f"{location}: correlation id {spec.id} is already loaded",
                )
            )
            continue
        loaded[spec.id] = spec
        specs[i] = spec
    # upstream before downstream, else in file order
    return CorrelationSet(tuple(specs[i] for i in order if i in specs), tuple(rejections))


def _chain_order(
    parsed: Sequence[tuple[SigmaCorrelationRule, dict[str, Any]]], resolve: _Resolver
) -> tuple[list[int], dict[int, str]]:
    """Indexes of ``parsed`` with every correlation after the correlations it references
    (file order otherwise), and the members of reference cycles -> the cycle, written
    ``a -> b -> a``. Pure graph work on the references; nothing is compiled here."""
    index: dict[str, int] = {}
    for i, (rule, _raw) in enumerate(parsed):
        index.setdefault(correlation_key(rule), i)
    edges: list[list[int]] = []
    for rule, _raw in parsed:
        targets = []
        for ref in rule.rules or []:
            target = resolve.correlation(ref.reference) if isinstance(ref.reference, str) else None
            if target is not None and target in index:
                targets.append(index[target])
        edges.append(targets)
    order: list[int] = []
    cycles: dict[int, str] = {}
    state = [0] * len(parsed)  # 0 new, 1 on the path, 2 done
    path: list[int] = []

    def visit(node: int) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges[node]:
            if state[nxt] == 1:
                loop = path[path.index(nxt) :]
                text = " -> ".join(correlation_key(parsed[j][0]) for j in [*loop, nxt])
                for j in loop:
                    cycles.setdefault(j, text)
            elif state[nxt] == 0:
                visit(nxt)
        path.pop()
        state[node] = 2
        order.append(node)

    for i in range(len(parsed)):
        if state[i] == 0:
            visit(i)
    return order, cycles


def load_correlations(paths: Sequence[Path], plan: DetectionPlan) -> CorrelationSet:
    """Every correlation rule under ``paths`` (the job's rule folders), against ``plan``."""
    sources = []
    for path in rule_files(paths):
        try:
            sources.append((str(path), read_content(path).decode("utf-8")))
        except (ContentError, UnicodeDecodeError):
            continue  # the rule loader reports unreadable files
    return compile_correlations(sources, plan)


def correlation_only_rule_ids(specs: Sequence[CorrelationSpec]) -> frozenset[str]:
    """Ids of base rules that must not write findings of their own: referenced by a
    correlation with ``generate: false`` and by none with ``generate: true`` (Sigma v2).
    Quarantined correlations are not in ``specs``, so their base rules keep alerting.
    The job takes these as ``JobConfig.silent_rule_ids``."""
    silent = {r for s in specs if not s.generate for r in s.rules}
    loud = {r for s in specs if s.generate for r in s.rules}
    return frozenset(silent - loud)


def correlation_only_rules(plan: DetectionPlan, specs: Sequence[CorrelationSpec]) -> set[int]:
    """:func:`correlation_only_rule_ids` as indexes of ``plan``."""
    ids = correlation_only_rule_ids(specs)
    return {p.index for p in plan.rules if str(p.rule.id) in ids}


def base_plan(plan: DetectionPlan, specs: Sequence[CorrelationSpec]) -> DetectionPlan:
    """A plan of only the rules correlations reference (indexes renumbered)."""
    wanted = {r for s in specs for r in s.rules}
    return plan_rules([p.rule for p in plan.rules if str(p.rule.id) in wanted])
