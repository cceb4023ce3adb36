"""Compile pySigma rule objects into the intermediate form of :mod:`detections.compiler.ir`.

pySigma does the parsing: it applies the value modifiers (contains, windash, base64offset,
re, cidr, ...) into typed values and expands the condition (``1 of selection_*``,
``all of them``, ``not``, parentheses) into a tree whose leaves are field/value pairs. This
module walks that tree and maps each pySigma value type onto IR predicates; it adds no
modifier logic of its own beyond placeholder expansion, which pySigma delegates to the tool.

Nothing here imports pyspark: compiling is pure and runs in CI without a JVM.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma import exceptions as sx
from sigma.collection import SigmaCollection
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionSelector,
    ConditionValueExpression,
    SigmaCondition,
)
from sigma.correlations import SigmaCorrelationRule
from sigma.filters import SigmaFilter
from sigma.modifiers import SigmaWideModifier, modifier_mapping
from sigma.rule import SigmaDetections, SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SigmaType,
    SpecialChars,
)

from common.safe_yaml import ContentError, load_yaml_documents, read_content
from detections.compiler import explain, ir
from detections.compiler.regex import UNSUPPORTED_REGEX, regex_refusal

# The Sigma specification names ``utf16le`` as the canonical spelling of ``wide``; pySigma
# only knows ``wide``. Registering the alias is idempotent and changes nothing else.
modifier_mapping.setdefault("utf16le", SigmaWideModifier)

# --- public data types -----------------------------------------------------------------


@dataclass(frozen=True)
class CompilerConfig:
    """What the compiler needs from the environment; immutable, passed in explicitly.

    ``placeholders`` resolves ``|expand`` placeholders (``%Admins%`` -> values). Each value is
    a Sigma string, so ``*`` / ``?`` in it are wildcards. ``strict_metadata`` turns metadata
    problems pySigma reports (bad date, malformed tag, ...) into rejections instead of
    warnings on the compiled rule.
    """

    placeholders: Mapping[str, Sequence[str]] = field(default_factory=dict)
    strict_metadata: bool = False


DEFAULT_CONFIG = CompilerConfig()


class CompileError(Exception):
    """A rule that cannot be compiled: a machine-readable reason and a message naming the file."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class LogSource:
    category: str | None = None
    product: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to deploy: its metadata, its logsource and its detection as IR."""

    id: str | None
    title: str
    level: str | None
    status: str | None
    author: str | None
    description: str | None
    tags: tuple[str, ...]
    references: tuple[str, ...]
    logsource: LogSource
    ir: ir.Node
    path: str | None = None
    filters: tuple[str, ...] = ()  # ids (or titles) of the meta filters applied to it
    warnings: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    # The selections that can explain a match (detections.compiler.explain); not hashed
    # into the plan version: the IR alone decides what matches.
    explanation: explain.Explanation = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the deployable artefact)."""
        return {
            "ir_version": ir.IR_VERSION,
            "id": self.id,
            "title": self.title,
            "level": self.level,
            "status": self.status,
            "author": self.author,
            "description": self.description,
            "tags": list(self.tags),
            "references": list(self.references),
            "logsource": {
                "category": self.logsource.category,
                "product": self.logsource.product,
                "service": self.logsource.service,
            },
            "ir": self.ir.to_dict(),
            "path": self.path,
            "filters": list(self.filters),
            "warnings": list(self.warnings),
            "falsepositives": list(self.falsepositives),
            "explanation": explain.to_dicts(self.explanation),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CompiledRule:
        if doc.get("ir_version") != ir.IR_VERSION:
            raise ir.IRError(f"unsupported IR version {doc.get('ir_version')!r}")
        return cls(
            id=doc["id"],
            title=doc["title"],
            level=doc.get("level"),
            status=doc.get("status"),
            author=doc.get("author"),
            description=doc.get("description"),
            tags=tuple(doc.get("tags", ())),
            references=tuple(doc.get("references", ())),
            logsource=LogSource(**doc["logsource"]),
            ir=ir.node_from_dict(doc["ir"]),
            path=doc.get("path"),
            filters=tuple(doc.get("filters", ())),
            warnings=tuple(doc.get("warnings", ())),
            falsepositives=tuple(doc.get("falsepositives", ())),
            explanation=explain.from_dicts(doc.get("explanation", [])),
        )


@dataclass(frozen=True)
class Rejection:
    """A rule (or file) that did not compile, and why."""

    path: str | None
    rule_id: str | None
    reason: str
    message: str


# --- error classification --------------------------------------------------------------

# pySigma errors about metadata only: the detection itself is fine.
_METADATA_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(sx, name)
    for name in (
        "SigmaAuthorError",
        "SigmaDateError",
        "SigmaDescriptionError",
        "SigmaFalsePositivesError",
        "SigmaFieldsError",
        "SigmaIdentifierError",
        "SigmaLevelError",
        "SigmaLicenseError",
        "SigmaModifiedError",
        "SigmaNameError",
        "SigmaReferencesError",
        "SigmaRelatedError",
        "SigmaScopeError",
        "SigmaStatusError",
        "SigmaTagError",
        "SigmaTaxonomyError",
        "SigmaTitleError",
    )
    if hasattr(sx, name)
)


def reason_for(exc: BaseException) -> str:
    """Short reason code for a pySigma (or YAML) exception."""
    text = str(exc)
    if isinstance(exc, CompileError):
        return exc.reason
    if isinstance(exc, yaml.YAMLError | ContentError):
        return "parse_error"
    if isinstance(exc, sx.SigmaRegularExpressionError):
        return _regex_error_reason(text)
    if isinstance(exc, sx.SigmaPlaceholderError):
        return "unresolved_placeholder"
    if isinstance(exc, sx.SigmaConditionError):
        return "condition_error"
    if isinstance(exc, sx.SigmaTypeError):
        return "invalid_cidr" if "CIDR" in text else "modifier_type_error"
    if isinstance(exc, sx.SigmaModifierError):
        return "unsupported_modifier" if "Unknown modifier" in text else "invalid_modifier"
    if "windash" in text:  # pySigma 2 reports too many windash dashes this way
        return "invalid_modifier"
    if isinstance(exc, sx.SigmaLogsourceError):
        return "invalid_logsource"
    if isinstance(exc, sx.SigmaDetectionError):
        return "invalid_detection"
    if isinstance(exc, sx.SigmaValueError):
        return "invalid_value"
    if isinstance(exc, _METADATA_ERRORS):
        return "invalid_metadata"
    return "parse_error"


_PYSIGMA_REGEX_ERROR = re.compile(r"^Regular expression '(?P<pattern>.*)' is invalid: ", re.S)


def _regex_error_reason(text: str) -> str:
    """``unsupported_regex`` for a pattern that is valid (Python's ``re`` reads it) but that
    RE2 cannot run: pySigma's default (safe) policy checks regexes with RE2, as the engine
    runs them. ``invalid_regex`` for a pattern no engine reads."""
    found = _PYSIGMA_REGEX_ERROR.match(text)
    if found is None:
        return "invalid_regex"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(found["pattern"])
    except (re.error, RecursionError, OverflowError):
        return "invalid_regex"
    return "unsupported_regex"


def _where(rule: Any) -> str:
    source = getattr(rule, "source", None)
    path = getattr(source, "path", None)
    return str(path) if path is not None else "<inline rule>"


def _fail(rule: Any, reason: str, message: str) -> CompileError:
    return CompileError(reason, f"{_where(rule)}: {message}")


def _wrap(rule: Any, exc: BaseException) -> CompileError:
    """A pySigma exception as a CompileError naming the rule file (once)."""
    if isinstance(exc, CompileError):
        return exc
    message, reason = str(exc), reason_for(exc)
    if _where(rule) not in message:
        message = f"{_where(rule)}: {message}"
    if reason == "unsupported_regex":
        message += f" ({UNSUPPORTED_REGEX})"
    return CompileError(reason, message)


# --- values -> predicates ----------------------------------------------------------------


class _Values:
    """Maps pySigma value objects onto IR predicates for one rule."""

    def __init__(self, rule: Any, config: CompilerConfig) -> None:
        self.rule = rule
        self.config = config

    # field-bound values

    def field(self, name: str, value: SigmaType) -> ir.Node:
        handler = self._field_handler(value)
        if handler is None:
            raise _fail(
                self.rule,
                "unsupported_value_type",
                f"field {name!r}: values of type {type(value).__name__} are not supported",
            )
        return handler(name, value)

    def _field_handler(self, value: SigmaType) -> Callable[[str, Any], ir.Node] | None:
        # Order matters: subclasses before their bases.
        table: list[tuple[type, Callable[[str, Any], ir.Node]]] = [
            (SigmaExpansion, self._expansion),
            (SigmaCasedString, lambda f, v: self._string(f, v, cased=True)),
            (SigmaString, lambda f, v: self._string(f, v, cased=False)),
            (SigmaRegularExpression, self._regex),
            (SigmaCIDRExpression, self._cidr),
            (SigmaCompareExpression, self._compare),
            (SigmaTimestampPart, self._unsupported_timestamp),
            (SigmaBool, lambda f, v: ir.Pred(f, ir.EQ, bool(v.boolean))),
            (SigmaNumber, lambda f, v: ir.Pred(f, ir.EQ, v.number)),
            (SigmaNull, lambda f, v: ir.Pred(f, ir.NULL, None)),
            (SigmaExists, lambda f, v: ir.Pred(f, ir.EXISTS, bool(v.exists))),
            (SigmaFieldReference, self._fieldref),
        ]
        for kind, handler in table:
            if isinstance(value, kind):
                return handler
        return None

    def _expansion(self, name: str, value: SigmaExpansion) -> ir.Node:
        # Values expanded by a modifier (windash, base64offset) are OR-linked, even under |all.
        for item in value.values:
            if isinstance(item, SigmaString) and not any(isinstance(p, str) for p in item.s):
                # e.g. base64offset of a one-byte value: a variant with no fixed text would
                # match every event.
                raise _fail(
                    self.rule,
                    "invalid_value",
                    f"field {name!r}: a modifier expanded the value into the match-all "
                    f"pattern {item.to_plain()!r}; the value is too short",
                )
        return ir.or_(*(self.field(name, item) for item in value.values))

    def _string(self, name: str | None, value: SigmaString, cased: bool) -> ir.Node:
        if value.contains_placeholder():
            return ir.or_(*(self._string(name, s, cased) for s in self._expand(value)))
        parts = _collapse_wildcards(value.s)
        if name is None:
            return ir.Pred(None, ir.KEYWORD, _keyword_glob(parts, cased), cased)
        op, text = _classify(parts, cased)
        return ir.Pred(name, op, text, cased)

    def _regex(self, name: str | None, value: SigmaRegularExpression) -> ir.Node:
        if value.regexp.contains_placeholder():
            expanded = value.replace_placeholders(self._placeholder_values)
            return ir.or_(*(self._regex(name, item) for item in expanded))
        flags = value.flags
        pred = ir.Pred(
            name,
            ir.REGEX,
            str(value.regexp),
            cased=SigmaRegularExpressionFlag.IGNORECASE not in flags,
            flags=("m" if SigmaRegularExpressionFlag.MULTILINE in flags else "")
            + ("s" if SigmaRegularExpressionFlag.DOTALL in flags else ""),
        )
        # Refused here, where every path that compiles rules passes (check, validate,
        # bundle build); deploy and job start compile the IR again and refuse it too.
        refusal = regex_refusal(str(pred.value), pred.cased, pred.flags)
        if refusal is not None:
            where = f"field {name!r}" if name is not None else "keyword"
            raise _fail(self.rule, "unsupported_regex", f"{where}: {refusal}")
        return pred

    def _cidr(self, name: str, value: SigmaCIDRExpression) -> ir.Node:
        try:
            network = ipaddress.ip_network(value.cidr, strict=False)
        except ValueError as exc:
            raise _fail(self.rule, "invalid_cidr", f"field {name!r}: {exc}") from exc
        return ir.Pred(name, ir.CIDR, str(network))

    def _compare(self, name: str, value: SigmaCompareExpression) -> ir.Node:
        number = value.number.number
        ops = {
            CompareOperators.GT: ir.GT,
            CompareOperators.GTE: ir.GTE,
            CompareOperators.LT: ir.LT,
            CompareOperators.LTE: ir.LTE,
        }
        if value.op in ops:
            return ir.Pred(name, ops[value.op], number)
        if value.op.name == "NEQ":  # present and different
            return ir.and_(ir.Pred(name, ir.EXISTS, True), ir.not_(ir.Pred(name, ir.EQ, number)))
        raise _fail(self.rule, "unsupported_value_type", f"comparison {value.op} on {name!r}")

    def _unsupported_timestamp(self, name: str, value: SigmaTimestampPart) -> ir.Node:
        raise _fail(
            self.rule,
            "unsupported_modifier",
            f"field {name!r}: time-part modifiers ({value.timestamp_part.name.lower()}) "
            "need typed timestamps and are not supported",
        )

    def _fieldref(self, name: str, value: SigmaFieldReference) -> ir.Node:
        starts, ends = getattr(value, "starts_with", False), getattr(value, "ends_with", False)
        op = {
            (False, False): ir.FIELDREF,
            (True, True): ir.FIELDREF_CONTAINS,
            (True, False): ir.FIELDREF_STARTSWITH,
            (False, True): ir.FIELDREF_ENDSWITH,
        }[(starts, ends)]
        return ir.Pred(name, op, value.field)

    # field-less (keyword) values

    def keyword(self, value: SigmaType) -> ir.Node:
        if isinstance(value, SigmaExpansion):
            return ir.or_(*(self.keyword(item) for item in value.values))
        if isinstance(value, SigmaString):
            return self._string(None, value, cased=isinstance(value, SigmaCasedString))
        if isinstance(value, SigmaRegularExpression):
            return self._regex(None, value)
        if isinstance(value, SigmaNumber) and not isinstance(value, SigmaTimestampPart):
            return ir.Pred(None, ir.KEYWORD, ir.escape_glob(str(value.number)))
        raise _fail(
            self.rule,
            "unsupported_value_type",
            f"keyword values of type {type(value).__name__} are not supported",
        )

    # placeholders (|expand)

    def _placeholder_values(self, placeholder: Placeholder) -> Iterator[SigmaString]:
        values = self.config.placeholders.get(placeholder.name)
        if values is None:
            raise _fail(
                self.rule,
                "unresolved_placeholder",
                f"placeholder %{placeholder.name}% has no values in the compiler configuration",
            )
        for item in values:
            yield SigmaString(item)

    def _expand(self, value: SigmaString) -> list[SigmaString]:
        try:
            return value.replace_placeholders(self._placeholder_values)
        except sx.SigmaError as exc:
            raise _wrap(self.rule, exc) from exc


def _collapse_wildcards(parts: Iterable[Any]) -> list[Any]:
    """Merge adjacent literal parts and runs of ``*`` (``**`` matches what ``*`` does)."""
    out: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += part
                continue
        elif part is SpecialChars.WILDCARD_MULTI and out and out[-1] is SpecialChars.WILDCARD_MULTI:
            continue
        out.append(part)
    return out


def _glob(parts: Sequence[Any], cased: bool) -> str:
    """Canonical glob text of string parts (literals escaped, lower-cased unless cased)."""
    text: list[str] = []
    for part in parts:
        if isinstance(part, str):
            text.append(ir.escape_glob(part if cased else part.lower()))
        elif part is SpecialChars.WILDCARD_MULTI:
            text.append("*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            text.append("?")
        else:  # an unexpanded Placeholder cannot reach here: _string expands first
            raise TypeError(f"unexpected string part {part!r}")
    return "".join(text)


def _classify(parts: list[Any], cased: bool) -> tuple[str, str]:
    """Pick the cheapest operator that means the same as the wildcard pattern."""
    multi = SpecialChars.WILDCARD_MULTI
    literal = [p for p in parts if isinstance(p, str)]
    specials = [p for p in parts if not isinstance(p, str)]

    def lit(text: str) -> str:
        return text if cased else text.lower()

    if not specials:
        return ir.EQ, lit(literal[0] if literal else "")
    if len(parts) == 3 and parts[0] is multi and parts[2] is multi and literal:
        return ir.CONTAINS, lit(literal[0])
    if len(parts) == 2 and parts[1] is multi and literal:
        return ir.STARTSWITH, lit(parts[0])
    if len(parts) == 2 and parts[0] is multi and literal:
        return ir.ENDSWITH, lit(parts[1])
    return ir.WILDCARD, _glob(parts, cased)


def _keyword_glob(parts: list[Any], cased: bool) -> str:
    """Keyword search is a substring search, so leading / trailing ``*`` are implied."""
    multi = SpecialChars.WILDCARD_MULTI
    start, end = 0, len(parts)
    while start < end and parts[start] is multi:
        start += 1
    while end > start and parts[end - 1] is multi:
        end -= 1
    return _glob(parts[start:end], cased)


# --- the condition tree --------------------------------------------------------------------


def _condition_to_ir(node: Any, values: _Values) -> ir.Node:
    """Walk pySigma's post-processed condition tree."""
    if isinstance(node, ConditionAND):
        return ir.and_(*(_condition_to_ir(arg, values) for arg in node.args))
    if isinstance(node, ConditionOR):
        return ir.or_(*(_condition_to_ir(arg, values) for arg in node.args))
    if isinstance(node, ConditionNOT):
        return ir.not_(_condition_to_ir(node.args[0], values))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return values.field(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        return values.keyword(node.value)
    raise _fail(values.rule, "condition_error", f"unexpected condition element {node!r}")


def _check_selectors(condition: SigmaCondition, detections: SigmaDetections, rule: Any) -> None:
    """Reject ``1 of x*`` selectors that match no detection (pySigma < 2 drops them silently)."""
    stack: list[Any] = [condition.parse(postprocess=False)]
    while stack:
        node = stack.pop()
        if isinstance(node, ConditionSelector):
            if not node.resolve_referenced_detections(detections):
                raise _fail(
                    rule,
                    "condition_error",
                    f"selector '{node.args[0]} of {node.pattern}' matches no detection",
                )
        elif isinstance(node, ConditionItem):
            stack.extend(arg for arg in node.args if isinstance(arg, ConditionItem))


def detection_to_ir(
    detections: SigmaDetections, config: CompilerConfig = DEFAULT_CONFIG, rule: Any = None
) -> ir.Node:
    """IR of a detection section; several conditions are OR-linked (Sigma's list form)."""
    values = _Values(rule if rule is not None else detections, config)
    alternatives: list[ir.Node] = []
    for condition in detections.parsed_condition:
        try:
            _check_selectors(condition, detections, values.rule)
            parsed = condition.parsed
        except sx.SigmaError as exc:
            raise _wrap(values.rule, exc) from exc
        if parsed is None:
            message = f"condition {condition.condition!r} is empty"
            raise _fail(values.rule, "condition_error", message)
        alternatives.append(_condition_to_ir(parsed, values))
    if not alternatives:
        raise _fail(values.rule, "condition_error", "detection has no condition")
    return ir.or_(*alternatives)


# --- rules ----------------------------------------------------------------------------------


def _rule_id(rule: Any) -> str | None:
    return str(rule.id) if getattr(rule, "id", None) is not None else None


def _fatal_errors(rule: SigmaRule, config: CompilerConfig) -> tuple[list[Exception], list[str]]:
    """Split pySigma's collected errors into fatal ones and warnings."""
    fatal: list[Exception] = []
    warnings: list[str] = []
    for error in rule.errors:
        if isinstance(error, _METADATA_ERRORS) and not config.strict_metadata:
            warnings.append(f"{type(error).__name__}: {error}")
        else:
            fatal.append(error)
    if not rule.detection.detections and rule.errors:
        # The detection failed to parse; its error is the last one pySigma appended.
        fatal = [rule.errors[-1]]
    return fatal, warnings


def compile_rule(
    rule: SigmaRule, config: CompilerConfig = DEFAULT_CONFIG, filters: Sequence[str] = ()
) -> CompiledRule:
    """Compile one parsed rule; raises :class:`CompileError` with a reason code."""
    if isinstance(rule, SigmaCorrelationRule):
        raise _fail(rule, "correlation_rule", "correlation rules run in the correlation stage")
    if isinstance(rule, SigmaFilter):
        raise _fail(rule, "filter_rule", "meta filters are applied to the rules they name")
    fatal, warnings = _fatal_errors(rule, config)
    if fatal:
        raise _wrap(rule, fatal[0])
    logsource = rule.logsource
    detection = detection_to_ir(rule.detection, config, rule)
    explained, problem = rule_explanation(rule.detection, config, rule)
    if problem:
        warnings.append(problem)
    return CompiledRule(
        id=_rule_id(rule),
        title=rule.title,
        level=str(rule.level) if rule.level is not None else None,
        status=str(rule.status) if rule.status is not None else None,
        author=rule.author,
        description=rule.description,
        tags=tuple(str(tag) for tag in rule.tags),
        references=tuple(rule.references),
        logsource=LogSource(logsource.category, logsource.product, logsource.service),
        ir=detection,
        path=str(rule.source.path) if rule.source is not None else None,
        filters=tuple(filters),
        warnings=tuple(warnings),
        falsepositives=tuple(str(fp) for fp in (rule.falsepositives or ()) if fp is not None),
        explanation=explained,
    )


def rule_explanation(
    detections: SigmaDetections, config: CompilerConfig = DEFAULT_CONFIG, rule: Any = None
) -> tuple[explain.Explanation, str | None]:
    """The rule's explanation (detections.compiler.explain), built with this compiler's
    value mapping so its predicates are the IR's. A rule whose explanation cannot be
    built still runs: its findings say no more than before, and a warning says why."""
    values = _Values(rule if rule is not None else detections, config)

    def field_ir(name: str | None, value: SigmaType) -> ir.Node:
        return values.field(name, value) if name is not None else values.keyword(value)

    try:
        return explain.explanation(
            detections, field_ir, lambda node: _condition_to_ir(node, values)
        ), None
    except Exception as exc:
        return (), f"no match explanation: {type(exc).__name__}: {exc}"


# --- loading files and applying meta filters ------------------------------------------------


@dataclass
class _Loaded:
    rules: list[SigmaRule] = field(default_factory=list)
    filters: list[SigmaFilter] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _load_text(text: str | bytes, path: Path | None, loaded: _Loaded) -> None:
    """Parse every YAML document of one file into ``loaded``; never raises for bad input.
    The bounded loader refuses bombs, deep nesting (which crashed libyaml's composer) and
    duplicate keys (as pySigma's own loader does) before pySigma sees anything."""
    where = str(path) if path is not None else "<inline rule>"
    try:
        documents = load_yaml_documents(text)
        source = sx.SigmaRuleLocation(path) if path is not None else None
        collection = SigmaCollection.from_dicts(
            documents,
            collect_errors=True,
            source=source,
            collect_filters=True,
            resolve_references=False,
        )
    except Exception as exc:  # one broken file must not stop the others
        loaded.rejections.append(Rejection(where, None, reason_for(exc), f"{where}: {exc}"))
        return
    per_rule = {id(e) for item in (*collection.rules, *collection.filters) for e in item.errors}
    for error in collection.errors:
        if id(error) not in per_rule:  # rule errors are reported when the rule is compiled
            message = f"{where}: {error}"
            loaded.rejections.append(Rejection(where, None, reason_for(error), message))
    for item in collection.rules:
        if isinstance(item, SigmaCorrelationRule):
            loaded.rejections.append(
                Rejection(
                    where,
                    _rule_id(item),
                    "correlation_rule",
                    f"{where}: correlation rule '{item.title}' runs in the correlation stage",
                )
            )
        else:
            loaded.rules.append(item)
    loaded.filters.extend(collection.filters)


def _valid_filters(
    filters: Sequence[SigmaFilter], config: CompilerConfig
) -> tuple[list[SigmaFilter], list[Rejection]]:
    """Filters whose own detection compiles; the others become rejections."""
    valid: list[SigmaFilter] = []
    rejections: list[Rejection] = []
    for meta in filters:
        try:
            if meta.errors:
                raise _wrap(meta, meta.errors[0])
            detection_to_ir(meta.filter, config, meta)
        except CompileError as exc:
            rejections.append(
                Rejection(_where(meta), _rule_id(meta), exc.reason, f"meta filter: {exc.message}")
            )
            continue
        valid.append(meta)
    return valid, rejections


def _apply_filters(rule: SigmaRule, filters: Sequence[SigmaFilter]) -> list[str]:
    """Apply every matching meta filter to ``rule`` in place (pySigma ANDs its condition)."""
    applied: list[str] = []
    for meta in filters:
        before = list(rule.detection.condition)
        meta.apply_on_rule(rule)
        if rule.detection.condition != before:
            applied.append(_rule_id(meta) or meta.title)
    return applied


def _compile_loaded(
    loaded: _Loaded, config: CompilerConfig
) -> tuple[list[CompiledRule], list[Rejection]]:
    filters, rejections = _valid_filters(loaded.filters, config)
    rejections = loaded.rejections + rejections
    compiled: list[CompiledRule] = []
    seen: dict[str, str] = {}
    for rule in loaded.rules:
        rule_id, where = _rule_id(rule), _where(rule)
        if rule_id is not None and rule_id in seen:
            rejections.append(
                Rejection(
                    where,
                    rule_id,
                    "duplicate_id",
                    f"{where}: rule id {rule_id} is already used by {seen[rule_id]}",
                )
            )
            continue
        try:
            applied = _apply_filters(rule, filters) if filters else []
            compiled.append(compile_rule(rule, config, applied))
        except CompileError as exc:
            rejections.append(Rejection(where, rule_id, exc.reason, exc.message))
            continue
        except Exception as exc:  # pySigma bug or unforeseen input: reject, never crash
            rejections.append(Rejection(where, rule_id, "internal_error", f"{where}: {exc!r}"))
            continue
        if rule_id is not None:
            seen[rule_id] = where
    return compiled, rejections


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``.yml`` / ``.yaml`` file under ``paths`` (files or directories), sorted."""
    found: set[Path] = set()
    for entry in map(Path, paths):
        if entry.is_dir():
            found.update(p for p in entry.rglob("*") if p.suffix in (".yml", ".yaml"))
        else:
            found.add(entry)
    return sorted(found)


def compile_path(
    paths: Iterable[str | Path], config: CompilerConfig = DEFAULT_CONFIG
) -> tuple[list[CompiledRule], list[Rejection]]:
    """Compile every rule under ``paths``; bad rules become rejections, nothing raises.

    Meta filters found anywhere under ``paths`` are applied to the rules they name;
    correlation rules are reported as ``correlation_rule`` rejections (they are evaluated
    by the correlation stage over the matches of the rules they reference).
    """
    loaded = _Loaded()
    for path in rule_files(paths):
        try:
            data = read_content(path)
        except ContentError as exc:
            loaded.rejections.append(Rejection(str(path), None, "parse_error", f"{path}: {exc}"))
            continue
        _load_text(data, path, loaded)
    return _compile_loaded(loaded, config)


def compile_yaml(
    text: str, config: CompilerConfig = DEFAULT_CONFIG, path: str | Path | None = None
) -> tuple[list[CompiledRule], list[Rejection]]:
    """Like :func:`compile_path` for YAML text (one or more documents, filters included)."""
    loaded = _Loaded()
    _load_text(text, Path(path) if path is not None else None, loaded)
    return _compile_loaded(loaded, config)
