"""The intermediate form of one rule's detection: a small, immutable boolean expression tree.

This is the artefact that is hashed, signed and deployed, so it is plain data: frozen,
hashable dataclasses that round-trip through JSON (``to_dict`` / ``from_dict``) without
loss. It knows nothing about pySigma or Spark; ``sigma_to_ir`` produces it and
``to_spark`` executes it.

Value conventions (the contract both sides rely on):

* String predicates with ``cased=False`` store their value lower-cased, so two predicates
  that match the same events compare equal (the planner shares them across rules).
* ``wildcard`` and ``keyword`` values are glob patterns in canonical escaped form: ``*``
  (any run) and ``?`` (one character) are wildcards; a literal ``*``, ``?`` or ``\\`` is
  always written ``\\*``, ``\\?``, ``\\\\``. A ``keyword`` matches when its pattern occurs
  anywhere in one of the event's string fields (implicit leading and trailing ``*``).
* ``regex`` values are the pattern as written in the rule (unanchored search); ``cased``
  is False for the ``i`` flag and ``flags`` holds ``m`` / ``s``.
* ``field`` is None only for field-less (keyword) searches and the constants.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

#: Bump when the meaning or shape of the serialised form changes.
IR_VERSION: Final = 1

Scalar: TypeAlias = str | int | float | bool | None

# Operators and what their ``value`` is.
EQ: Final = "eq"  # str | int | float | bool, whole-value equality
CONTAINS: Final = "contains"  # str, literal substring
STARTSWITH: Final = "startswith"  # str, literal prefix
ENDSWITH: Final = "endswith"  # str, literal suffix
WILDCARD: Final = "wildcard"  # str, canonical glob matched against the whole value
REGEX: Final = "regex"  # str, pattern; flags in Pred.flags, case in Pred.cased
CIDR: Final = "cidr"  # str, normalised network ("10.0.0.0/8", "fe80::/10")
EXISTS: Final = "exists"  # bool, field present (True) or absent (False)
NULL: Final = "null"  # None, field absent or null
GT: Final = "gt"  # int | float
GTE: Final = "gte"
LT: Final = "lt"
LTE: Final = "lte"
FIELDREF: Final = "fieldref"  # str, other field's name: values equal
FIELDREF_CONTAINS: Final = "fieldref_contains"  # this field contains the other's value
FIELDREF_STARTSWITH: Final = "fieldref_startswith"
FIELDREF_ENDSWITH: Final = "fieldref_endswith"
KEYWORD: Final = "keyword"  # str, canonical glob searched in every string field
TRUE: Final = "true"  # constant, field and value None
FALSE: Final = "false"

STRING_OPS: Final = frozenset({EQ, CONTAINS, STARTSWITH, ENDSWITH, WILDCARD, KEYWORD})
COMPARE_OPS: Final = frozenset({GT, GTE, LT, LTE})
FIELDREF_OPS: Final = frozenset(
    {FIELDREF, FIELDREF_CONTAINS, FIELDREF_STARTSWITH, FIELDREF_ENDSWITH}
)
CONST_OPS: Final = frozenset({TRUE, FALSE})
OPS: Final = (
    STRING_OPS | COMPARE_OPS | FIELDREF_OPS | CONST_OPS | frozenset({REGEX, CIDR, EXISTS, NULL})
)
REGEX_FLAGS: Final = frozenset("ms")


class IRError(ValueError):
    """A node or serialised document that violates the IR contract."""


class _NodeMethods:
    """Serialisation shared by every node class (the functions below do the work)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return node_to_dict(self)  # type: ignore[arg-type]

    @staticmethod
    def from_dict(doc: Any) -> Node:
        return node_from_dict(doc)

    def canonical_json(self) -> str:
        return canonical_json(self)  # type: ignore[arg-type]

    def digest(self) -> str:
        return digest(self)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, eq=False)
class Pred(_NodeMethods):
    """One predicate on one field (or on every string field when ``field`` is None)."""

    field: str | None
    op: str
    value: Scalar
    cased: bool = False
    flags: str = ""

    def _key(self) -> tuple[Any, ...]:
        # The value's type is part of the identity: 1, 1.0 and True are equal in Python
        # but "1", "1.0" and "true" are different Sigma values.
        return (self.field, self.op, type(self.value).__name__, self.value, self.cased, self.flags)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pred) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise IRError(f"unknown operator {self.op!r}")
        if self.flags and (self.op != REGEX or set(self.flags) - REGEX_FLAGS):
            raise IRError(f"flags {self.flags!r} not allowed on {self.op!r}")
        if self.field is None and self.op not in CONST_OPS | {KEYWORD, REGEX}:
            raise IRError(f"operator {self.op!r} needs a field")
        if self.op == KEYWORD and self.field is not None:
            raise IRError("keyword predicates are field-less")


@dataclass(frozen=True, slots=True)
class And(_NodeMethods):
    """All items match. Build with :func:`and_` to get the normalised form."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(_NodeMethods):
    """At least one item matches. Build with :func:`or_` to get the normalised form."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(_NodeMethods):
    """The item does not match (a missing field makes the inner predicate false)."""

    item: Node


Node: TypeAlias = And | Or | Not | Pred

TRUE_NODE: Final = Pred(None, TRUE, None)
FALSE_NODE: Final = Pred(None, FALSE, None)


# --- smart constructors: flatten, drop neutral constants, deduplicate ------------------


def _flatten(kind: type[And] | type[Or], items: Iterable[Node]) -> Iterator[Node]:
    for item in items:
        if isinstance(item, kind):
            yield from item.items
        else:
            yield item


def _combine(kind: type[And] | type[Or], items: Iterable[Node]) -> Node:
    neutral, absorbing = (TRUE_NODE, FALSE_NODE) if kind is And else (FALSE_NODE, TRUE_NODE)
    unique: dict[Node, None] = {}
    for item in _flatten(kind, items):
        if item == absorbing:
            return absorbing
        if item != neutral:
            unique.setdefault(item, None)
    if not unique:
        return neutral
    if len(unique) == 1:
        return next(iter(unique))
    return kind(tuple(unique))


def and_(*items: Node) -> Node:
    """Conjunction, flattened; ``and_()`` is true, duplicates and ``true`` are dropped."""
    return _combine(And, items)


def or_(*items: Node) -> Node:
    """Disjunction, flattened; ``or_()`` is false, duplicates and ``false`` are dropped."""
    return _combine(Or, items)


def not_(item: Node) -> Node:
    """Negation with double negation and constants folded away."""
    if isinstance(item, Not):
        return item.item
    if item == TRUE_NODE:
        return FALSE_NODE
    if item == FALSE_NODE:
        return TRUE_NODE
    return Not(item)


# --- glob helpers shared by the compiler and the Spark translation ---------------------


def escape_glob(text: str) -> str:
    """Literal text as a canonical glob: escape ``\\``, ``*`` and ``?``."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def parse_glob(pattern: str) -> list[tuple[bool, str]]:
    """Split a canonical glob into (is_wildcard, text) tokens; literals are merged."""
    tokens: list[tuple[bool, str]] = []
    literal: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise IRError(f"dangling escape at end of glob {pattern!r}")
            literal.append(escaped)
        elif char in "*?":
            if literal:
                tokens.append((False, "".join(literal)))
                literal = []
            tokens.append((True, char))
        else:
            literal.append(char)
    if literal:
        tokens.append((False, "".join(literal)))
    return tokens


# --- walking ------------------------------------------------------------------------


def iter_preds(node: Node) -> Iterator[Pred]:
    """Every predicate in the tree, depth first, in order."""
    if isinstance(node, Pred):
        yield node
    elif isinstance(node, Not):
        yield from iter_preds(node.item)
    else:
        for item in node.items:
            yield from iter_preds(item)


def fields(node: Node) -> frozenset[str]:
    """Field names the tree reads (including fields named by field references)."""
    names: set[str] = set()
    for pred in iter_preds(node):
        if pred.field is not None:
            names.add(pred.field)
        if pred.op in FIELDREF_OPS and isinstance(pred.value, str):
            names.add(pred.value)
    return frozenset(names)


# --- serialisation -------------------------------------------------------------------


def node_to_dict(node: Node) -> dict[str, Any]:
    """Plain JSON-able form: ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}``, or a
    predicate ``{"field", "op", "value", "cased"[, "flags"]}``."""
    if isinstance(node, And):
        return {"and": [node_to_dict(item) for item in node.items]}
    if isinstance(node, Or):
        return {"or": [node_to_dict(item) for item in node.items]}
    if isinstance(node, Not):
        return {"not": node_to_dict(node.item)}
    doc: dict[str, Any] = {
        "field": node.field,
        "op": node.op,
        "value": node.value,
        "cased": node.cased,
    }
    if node.flags:
        doc["flags"] = node.flags
    return doc


def node_from_dict(doc: Any) -> Node:
    """Inverse of :func:`node_to_dict`; validates the shape and raises :class:`IRError`."""
    if not isinstance(doc, dict):
        raise IRError(f"IR node must be an object, got {type(doc).__name__}")
    if "and" in doc or "or" in doc:
        kind: type[And] | type[Or] = And if "and" in doc else Or
        items = doc["and" if kind is And else "or"]
        if len(doc) != 1 or not isinstance(items, list):
            raise IRError(f"malformed {kind.__name__} node: {doc!r}")
        return kind(tuple(node_from_dict(item) for item in items))
    if "not" in doc:
        if len(doc) != 1:
            raise IRError(f"malformed Not node: {doc!r}")
        return Not(node_from_dict(doc["not"]))
    unknown = set(doc) - {"field", "op", "value", "cased", "flags"}
    if unknown or "op" not in doc:
        raise IRError(f"malformed predicate: {doc!r}")
    value = doc.get("value")
    if not isinstance(value, str | int | float | bool | None):
        raise IRError(f"predicate value must be a scalar: {doc!r}")
    return Pred(
        field=doc.get("field"),
        op=doc["op"],
        value=value,
        cased=bool(doc.get("cased", False)),
        flags=str(doc.get("flags", "")),
    )


def canonical_json(node: Node) -> str:
    """Deterministic JSON text of the tree (sorted keys, no whitespace): what gets hashed."""
    return json.dumps(node_to_dict(node), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(node: Node) -> str:
    """SHA-256 of :func:`canonical_json`, hex encoded."""
    return hashlib.sha256(canonical_json(node).encode("utf-8")).hexdigest()
