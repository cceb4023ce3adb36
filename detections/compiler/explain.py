"""What a rule's findings say about *why* they matched: the rule's selections as the
engine sees them.

The IR of a rule is one boolean tree: selection names and Sigma modifiers are gone. To
tell an analyst which selection matched, on which field and value, the compiler also
keeps, beside the IR, every selection the condition references *positively* (a selection
under ``not`` is a filter: it never explains a match) with, for each value as written in
the rule, the IR of that value. These are built by the same compiler from the same
pySigma objects, so their predicates are the very predicates of the rule's IR: the
engine answers them from the results it already computed for the match (see
``detections.engine.why``). No second evaluator.

Plain, frozen, picklable data that round-trips through JSON, like the IR.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from sigma.conditions import (
    ConditionIdentifier,
    ConditionItem,
    ConditionNOT,
    ConditionSelector,
    SigmaCondition,
)
from sigma.modifiers import SigmaRegularExpressionModifier, reverse_modifier_mapping
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaDetections
from sigma.types import SigmaBool, SigmaNull, SigmaString, SigmaType

from detections.compiler import ir


@dataclass(frozen=True, slots=True)
class ExplainItem:
    """One value of a detection item as written, and its IR."""

    field: str | None  # None: a keyword (field-less) value
    modifier: str  # the modifier chain as written: "contains|all", "re", "" for equals
    pattern: str | None  # the value as written in the rule (None for ``null``)
    node: ir.Node


@dataclass(frozen=True, slots=True)
class ExplainSelection:
    """A selection the condition references positively: its IR and its values."""

    name: str
    node: ir.Node
    items: tuple[ExplainItem, ...]


#: A rule's explanation: its positively referenced selections, in condition order.
Explanation: TypeAlias = tuple[ExplainSelection, ...]


# --- building (from pySigma objects, with the compiler's own value mapping) -----------------

FieldIR = Callable[[str | None, SigmaType], ir.Node]
ConditionIR = Callable[[Any], ir.Node]


def positive_selections(detections: SigmaDetections) -> list[str]:
    """Names of the detections the conditions reference outside any ``not``, in order."""
    names: dict[str, None] = {}
    for condition in detections.parsed_condition:
        for name, positive in _references(condition, detections):
            if positive:
                names.setdefault(name, None)
    return list(names)


def _references(
    condition: SigmaCondition, detections: SigmaDetections
) -> Iterator[tuple[str, bool]]:
    stack: list[tuple[Any, bool]] = [(condition.parse(postprocess=False), True)]
    while stack:
        node, positive = stack.pop()
        if isinstance(node, ConditionIdentifier):
            yield node.identifier, positive
        elif isinstance(node, ConditionSelector):
            for found in node.resolve_referenced_detections(detections):
                yield found.identifier, positive
        elif isinstance(node, ConditionNOT):
            stack.extend((arg, not positive) for arg in reversed(node.args))
        elif isinstance(node, ConditionItem):  # reversed: names come out in condition order
            stack.extend((arg, positive) for arg in reversed(node.args))


def explanation(
    detections: SigmaDetections, field_ir: FieldIR, condition_ir: ConditionIR
) -> Explanation:
    """The explanation of a detection section (see the module docstring). ``field_ir``
    maps a (field or None, value) to IR, ``condition_ir`` a pySigma condition tree."""
    out: list[ExplainSelection] = []
    for name in positive_selections(detections):
        detection = detections.detections[name]
        node = condition_ir(detection.postprocess(detections))
        items = tuple(_items(detection, field_ir))
        out.append(ExplainSelection(name, node, items))
    return tuple(out)


def _items(detection: SigmaDetection, field_ir: FieldIR) -> Iterator[ExplainItem]:
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            yield from _items(item, field_ir)
            continue
        modifier = "|".join(reverse_modifier_mapping[m.__name__] for m in item.modifiers)
        for written, values in _per_written_value(item):
            nodes = [field_ir(item.field, value) for value in values]
            node = ir.or_(*nodes) if nodes else ir.Pred(item.field, ir.NULL, None)
            if item.negated:
                node = ir.not_(node)
            regex = SigmaRegularExpressionModifier in item.modifiers
            yield ExplainItem(item.field, modifier, pattern_text(written, regex), node)


def _per_written_value(
    item: SigmaDetectionItem,
) -> Iterator[tuple[SigmaType | None, list[SigmaType]]]:
    """(value as written, the values the modifiers made of it) for each written value."""
    written = list(item.original_value or [])
    if not item.value:
        yield (written[0] if written else None), []
        return
    if len(written) == len(item.value):
        for original, value in zip(written, item.value, strict=True):
            yield original, [value]
        return
    split: list[tuple[SigmaType | None, list[SigmaType]]] = []
    try:  # a modifier made several values of one (windash, base64offset): apply it per value
        for original in written:
            one = SigmaDetectionItem(item.field, item.modifiers, [original], source=item.source)
            split.append((original, list(one.value)))
    except Exception:  # could not split: each value stands for itself
        split = [(value, [value]) for value in item.value]
    yield from split


def pattern_text(value: SigmaType | None, regex: bool = False) -> str | None:
    """A Sigma value as written in the rule (``null`` -> None); ``regex``: the value of a
    ``|re`` item, whose ``?`` and ``*`` are regex syntax, not escaped wildcards."""
    if value is None or isinstance(value, SigmaNull):
        return None
    if isinstance(value, SigmaBool):
        return "true" if value.boolean else "false"
    if isinstance(value, SigmaString):
        return value.to_plain(regex=regex)
    try:
        plain = value.to_plain()
    except Exception:
        return str(value)
    return None if plain is None else str(plain)


# --- serialisation --------------------------------------------------------------------------


def to_dicts(explained: Explanation) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "node": s.node.to_dict(),
            "items": [
                {
                    "field": i.field,
                    "modifier": i.modifier,
                    "pattern": i.pattern,
                    "node": i.node.to_dict(),
                }
                for i in s.items
            ],
        }
        for s in explained
    ]


def from_dicts(docs: Any) -> Explanation:
    if not isinstance(docs, list):
        raise ir.IRError("an explanation is a list of selections")
    return tuple(
        ExplainSelection(
            str(doc["name"]),
            ir.node_from_dict(doc["node"]),
            tuple(
                ExplainItem(
                    i["field"], str(i["modifier"]), i["pattern"], ir.node_from_dict(i["node"])
                )
                for i in doc["items"]
            ),
        )
        for doc in docs
    )
