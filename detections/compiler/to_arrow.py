"""IR -> rule programs that run over Arrow batches: where a Sigma value semantic becomes code.

The engine evaluates rules inside Spark's Python workers on Arrow record batches (see
``detections.engine.matcher``). This module decides how each IR predicate is computed:

* **Literal predicates** (``eq``, ``contains``, ``startswith``, ``endswith`` on a field, and
  literal keywords) are never evaluated one by one. All literals on one field of one route
  go into one Aho-Corasick automaton (whole values into a hash map); each *distinct* value
  of the field in the batch is scanned once and yields every literal predicate it
  satisfies. Cost grows with the data, not with the number of rules; a predicate whose
  literal occurs nowhere in the batch costs nothing.
* Everything else (regexes and wildcards on RE2, linear in the text; see
  ``detections.compiler.regex``, CIDR, numeric comparisons, field references,
  existence) is a small function over the distinct values of a field.

Results are numpy boolean arrays over the rows of a route, or ``None`` for "false for every
row", which lets ``and`` stop at its first all-false item (items are ordered cheapest
first) and lets rules whose literals are absent cost one dictionary lookup.

Null semantics, as in Sigma: a predicate on a missing (null) field is false, never unknown,
so ``not selection`` is true for an event without the field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detections.compiler import explain, ir
from detections.compiler.regex import EngineRegex, compile_glob, compile_regex

__all__ = [
    "FieldKey",
    "Program",
    "ProgramBuilder",
    "Result",
    "Rows",
    "engine_regex",
    "glob_regex",
]

#: Joins the field values of an event for keyword searches; no literal crosses it.
KEYWORD_SEPARATOR = "\x01"

#: A predicate's value per row of a route: a boolean array, or None when false everywhere.
Result = np.ndarray | None

#: Where a field's values come from for one route: (source, name, cased). ``source`` is
#: ``col`` / ``extra`` / ``either`` (see ``detections.compiler.logsources.field_source``);
#: ``cased=False`` means the values are lower-cased.
FieldKey = tuple[str, str, bool]


class Distinct(Protocol):
    """The distinct values of a field over a route's rows."""

    array: pa.Array  # distinct values (lower-cased unless cased), without nulls
    positions: np.ndarray  # per row: index into ``array``; len(array) for a null

    def pylist(self) -> list[str | None]:
        """``array`` as Python strings plus a trailing None (what ``positions`` of a null
        points at)."""


class Rows(Protocol):
    """The rows of one route in one batch, as the predicates see them."""

    n: int

    def distinct(self, key: FieldKey) -> Distinct:
        """Distinct values of a field and, per row, the position of its value."""

    def present(self, source: str, name: str) -> np.ndarray:
        """Per row: the field has a value."""

    def keyword_text(self, cased: bool) -> Distinct:
        """The text a field-less (keyword) search looks in: per row, every string field
        of the route and every ``extra`` value joined by ``KEYWORD_SEPARATOR``."""

    def literal_hits(self, index: int) -> dict[int, np.ndarray]:
        """Slots of literal index ``index`` that hold on some row -> their row results."""


# --- the evaluation tree ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """A distinct predicate of a route; ``literal`` is the literal index it is answered by."""

    id: int
    cost: float
    literal: int | None = None
    evaluate: Callable[[Rows], Result] | None = None


@dataclass(frozen=True, slots=True)
class PredNode:
    slot: int
    cost: float


@dataclass(frozen=True, slots=True)
class AndNode:
    items: tuple[ExecNode, ...]
    cost: float


@dataclass(frozen=True, slots=True)
class OrNode:
    items: tuple[ExecNode, ...]
    cost: float


@dataclass(frozen=True, slots=True)
class NotNode:
    item: ExecNode
    cost: float


ExecNode = PredNode | AndNode | OrNode | NotNode


@dataclass
class LiteralIndex:
    """Every literal predicate on one field (or on the keyword columns) of a route.

    ``scan`` answers all of them in one pass over a batch's distinct values: whole-value
    literals by a vectorised lookup, the others by one multi-pattern search per value
    (RE2's ``Set``, an Aho-Corasick automaton as the fallback). When there is a lot of
    text (long script blocks, keyword searches over every field) a vectorised RE2
    prefilter first drops the values that contain none of the literals.
    """

    key: FieldKey | None  # None: keyword search over every string field
    cased: bool = False
    equals: dict[str, list[int]] = field(default_factory=dict)
    # needle -> (length, [(slot, op)]) with op one of contains / startswith / endswith
    needles: dict[str, tuple[int, list[tuple[int, str]]]] = field(default_factory=dict)
    _compiled: Any = None

    def add(self, slot: int, op: str, needle: str) -> None:
        if op == ir.EQ:
            self.equals.setdefault(needle, []).append(slot)
        else:
            self.needles.setdefault(needle, (len(needle), []))[1].append((slot, op))

    def scan(self, values: Any) -> dict[int, list[int]]:
        """Slot -> positions of the values (a pyarrow string array, already lower-cased
        unless ``cased``) that satisfy it."""
        compiled = self._compile()
        hits: dict[int, list[int]] = {}
        if self.equals:
            found = pc.index_in(values, value_set=compiled.equal_keys)
            found_np = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
            for position in np.flatnonzero(found_np >= 0).tolist():
                for slot in compiled.equal_slots[found_np[position]]:
                    hits.setdefault(slot, []).append(position)
        if not self.needles or not len(values):
            return hits
        candidates = compiled.prefilter(values)
        texts = values.take(pa.array(candidates)) if candidates is not None else values
        positions = candidates.tolist() if candidates is not None else range(len(values))
        for position, text in zip(positions, texts.to_pylist(), strict=True):
            if text is None:
                continue
            for slot in compiled.search(text):
                hits.setdefault(slot, []).append(position)
        return hits

    def _compile(self) -> _CompiledLiterals:
        if self._compiled is None:
            self._compiled = _CompiledLiterals(self.equals, self.needles)
        return self._compiled


class _CompiledLiterals:
    """The search structures of a LiteralIndex, built once per worker process."""

    #: Patterns per RE2 set / prefilter regex: keeps each automaton's memory bounded.
    CHUNK = 1500
    #: Prefilter only when the values hold at least this much text per literal (below,
    #: compiling the prefilter regex costs more than it saves).
    PREFILTER_BYTES_PER_PATTERN = 2048

    def __init__(
        self,
        equals: dict[str, list[int]],
        needles: dict[str, tuple[int, list[tuple[int, str]]]],
    ) -> None:
        import ahocorasick
        import re2

        keys = list(equals)
        self.equal_keys = pa.array(keys, pa.string())
        self.equal_slots = [equals[k] for k in keys]
        by_pattern: dict[str, list[int]] = {}
        for needle, (_, entries) in needles.items():
            for slot, op in entries:
                pattern = _re2_literal(needle)
                if op == ir.STARTSWITH:
                    pattern = r"\A" + pattern
                elif op == ir.ENDSWITH:
                    pattern += r"\z"
                by_pattern.setdefault(pattern, []).append(slot)
        self.patterns = list(by_pattern)
        self.pattern_slots = [by_pattern[p] for p in self.patterns]
        options = re2.Options()
        options.max_mem = 256 << 20
        options.log_errors = False
        self.sets = []
        for start in range(0, len(self.patterns), self.CHUNK):
            chunk = re2.Set.SearchSet(options)
            for pattern in self.patterns[start : start + self.CHUNK]:
                chunk.Add(pattern)
            chunk.Compile()
            self.sets.append((start, chunk))
        self.alternations = [
            "|".join(self.patterns[start : start + self.CHUNK])
            for start in range(0, len(self.patterns), self.CHUNK)
        ]
        self.automaton = ahocorasick.Automaton()
        for needle, entry in needles.items():
            self.automaton.add_word(needle, entry)
        self.automaton.make_automaton()

    def prefilter(self, values: Any) -> np.ndarray | None:
        """Positions of the values that may contain a literal (None: all of them)."""
        size = pc.sum(pc.binary_length(values)).as_py() or 0
        if size < self.PREFILTER_BYTES_PER_PATTERN * max(len(self.patterns), 16):
            return None
        maybe = None
        for alternation in self.alternations:
            found = pc.match_substring_regex(values, alternation)
            maybe = found if maybe is None else pc.or_(maybe, found)
        return np.flatnonzero(pc.fill_null(maybe, False).to_numpy(zero_copy_only=False))

    def search(self, text: str) -> list[int]:
        """Slots whose literal the text satisfies."""
        slots: list[int] = []
        for start, chunk in self.sets:
            found = chunk.Match(text)
            if found is None:
                # No match, or RE2 ran out of memory (it cannot tell which): a text that
                # matters must never be missed, so ask the automaton for this chunk.
                return self._search_automaton(text)
            for pattern in found:
                slots.extend(self.pattern_slots[start + pattern])
        return slots

    def _search_automaton(self, text: str) -> list[int]:
        slots: list[int] = []
        last = len(text) - 1
        for end, (length, entries) in self.automaton.iter(text):
            for slot, op in entries:
                if (
                    op == ir.CONTAINS
                    or (op == ir.STARTSWITH and end + 1 == length)
                    or (op == ir.ENDSWITH and end == last)
                ):
                    slots.append(slot)
        return slots


def _re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern that matches exactly it."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if code >= 128 or char.isalnum() or char == "_":  # RE2 refuses "\\_"
            out.append(char)
        elif 33 <= code <= 126:
            out.append("\\" + char)
        else:
            out.append(f"\\x{{{code:x}}}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ExplainValue:
    """One value of a selection as written (``explain.ExplainItem``), as a tree over the
    route's slots; ``key`` is where the event's value of ``field`` is read (cased)."""

    field: str | None
    modifier: str
    pattern: str | None
    node: ExecNode
    key: FieldKey | None


@dataclass(frozen=True, slots=True)
class ExplainSelection:
    name: str
    node: ExecNode
    values: tuple[ExplainValue, ...]


@dataclass
class Program:
    """The rules of one route, ready to run over that route's rows."""

    slots: list[Slot]
    literals: list[LiteralIndex]
    rules: dict[int, ExecNode]  # rule index -> tree
    errors: dict[int, str]  # rule index -> why it could not be compiled
    # rule index -> its selections over the same slots (detections.engine.why)
    explain: dict[int, tuple[ExplainSelection, ...]] = field(default_factory=dict)


def run(node: ExecNode, rows: Rows, memo: dict[int, Result], slots: list[Slot]) -> Result:
    """Evaluate a tree; ``memo`` shares slot results across the route's rules."""
    if isinstance(node, PredNode):
        if node.slot not in memo:
            memo[node.slot] = _evaluate_slot(slots[node.slot], rows)
        return memo[node.slot]
    if isinstance(node, AndNode):
        result: np.ndarray | None = None
        for item in node.items:
            value = run(item, rows, memo, slots)
            if value is None:
                return None
            result = value.copy() if result is None else np.logical_and(result, value, out=result)
            if not result.any():
                return None
        return result
    if isinstance(node, OrNode):
        result = None
        for item in node.items:
            value = run(item, rows, memo, slots)
            if value is not None:
                result = (
                    value.copy() if result is None else np.logical_or(result, value, out=result)
                )
        return result
    inner = run(node.item, rows, memo, slots)
    if inner is None:
        return np.ones(rows.n, dtype=bool)
    negated = ~inner
    return negated if negated.any() else None


def _evaluate_slot(slot: Slot, rows: Rows) -> Result:
    if slot.literal is not None:
        return rows.literal_hits(slot.literal).get(slot.id)
    assert slot.evaluate is not None
    return slot.evaluate(rows)


# --- compiling ------------------------------------------------------------------------------

FieldSource = Callable[[str], str]

# Relative cost of a predicate, so that ``and`` evaluates its cheapest items first.
_COST = {
    ir.EQ: 1.0,
    ir.CONTAINS: 1.0,
    ir.STARTSWITH: 1.0,
    ir.ENDSWITH: 1.0,
    ir.EXISTS: 0.5,
    ir.NULL: 0.5,
    ir.TRUE: 0.0,
    ir.FALSE: 0.0,
    ir.KEYWORD: 4.0,
    ir.GT: 3.0,
    ir.GTE: 3.0,
    ir.LT: 3.0,
    ir.LTE: 3.0,
    ir.CIDR: 8.0,
    ir.WILDCARD: 10.0,
    ir.REGEX: 20.0,
    ir.FIELDREF: 30.0,
    ir.FIELDREF_CONTAINS: 30.0,
    ir.FIELDREF_STARTSWITH: 30.0,
    ir.FIELDREF_ENDSWITH: 30.0,
}


class ProgramBuilder:
    """Compiles the rules of one route; predicates shared by several rules get one slot."""

    def __init__(self, source: FieldSource, keyword_columns: bool = True) -> None:
        self._source = source
        self._keyword_columns = keyword_columns
        self._slots: list[Slot] = []
        self._by_pred: dict[ir.Pred, int] = {}
        self._literals: list[LiteralIndex] = []
        self._literal_by_key: dict[object, int] = {}
        self._rules: dict[int, ExecNode] = {}
        self._errors: dict[int, str] = {}
        self._explain: dict[int, tuple[ExplainSelection, ...]] = {}

    def add_rule(self, index: int, node: ir.Node, explained: explain.Explanation = ()) -> None:
        try:
            self._rules[index] = self._build(node)
        except Exception as exc:  # one bad rule never stops the others
            self._errors[index] = f"cannot compile for the engine: {type(exc).__name__}: {exc}"
            return
        if explained:
            # The same builder: a selection's predicates get the slots the rule's tree
            # uses, so explaining a match reads results the match already computed.
            try:
                self._explain[index] = tuple(
                    ExplainSelection(
                        s.name,
                        self._build(s.node),
                        tuple(
                            ExplainValue(
                                i.field,
                                i.modifier,
                                i.pattern,
                                self._build(i.node),
                                (self._source(i.field), i.field, True) if i.field else None,
                            )
                            for i in s.items
                        ),
                    )
                    for s in explained
                )
            except Exception:  # the rule still runs; its findings just say less
                self._explain.pop(index, None)

    def program(self) -> Program:
        return Program(self._slots, self._literals, self._rules, self._errors, self._explain)

    # tree

    def _build(self, node: ir.Node) -> ExecNode:
        if isinstance(node, ir.And):
            items = sorted((self._build(i) for i in node.items), key=lambda n: n.cost)
            return AndNode(tuple(items), sum(i.cost for i in items))
        if isinstance(node, ir.Or):
            items = [self._build(i) for i in node.items]
            return OrNode(tuple(items), sum(i.cost for i in items))
        if isinstance(node, ir.Not):
            item = self._build(node.item)
            return NotNode(item, item.cost + 0.5)
        slot = self._slot(node)
        return PredNode(slot.id, slot.cost)

    def _slot(self, pred: ir.Pred) -> Slot:
        if pred in self._by_pred:
            return self._slots[self._by_pred[pred]]
        slot_id = len(self._slots)
        cost = _COST[pred.op]
        literal = self._literal(pred)
        if literal is not None:
            index, needle = literal
            self._literals[index].add(slot_id, pred.op, needle)
            slot = Slot(slot_id, cost, literal=index)
        else:
            slot = Slot(slot_id, cost, evaluate=self._evaluator(pred))
        self._slots.append(slot)
        self._by_pred[pred] = slot_id
        return slot

    def _literal_index(self, field_key: FieldKey | None, cased: bool) -> int:
        key = (field_key, cased)
        if key not in self._literal_by_key:
            self._literal_by_key[key] = len(self._literals)
            self._literals.append(LiteralIndex(field_key, cased))
        return self._literal_by_key[key]

    def _literal(self, pred: ir.Pred) -> tuple[int, str] | None:
        """(literal index, needle) if the predicate is answered by a literal scan."""
        value = pred.value
        if pred.op == ir.KEYWORD:
            tokens = ir.parse_glob(_string(pred))
            if any(wild for wild, _ in tokens) or not self._keyword_columns:
                return None
            needle = "".join(text for _, text in tokens)
            if not needle or KEYWORD_SEPARATOR in needle:
                return None
            return self._literal_index(None, pred.cased), needle
        if pred.field is None or pred.op not in (ir.EQ, ir.CONTAINS, ir.STARTSWITH, ir.ENDSWITH):
            return None
        if pred.op == ir.EQ:
            if isinstance(value, bool):
                needle, cased = ("true" if value else "false"), False
            elif isinstance(value, int):
                needle, cased = str(value), True
            elif isinstance(value, str):
                needle, cased = value, pred.cased
            else:
                return None  # floats compare as numbers
        else:
            needle, cased = _string(pred), pred.cased
            if not needle:
                return None  # the empty literal: "has a value", handled as a function
        key: FieldKey = (self._source(pred.field), pred.field, cased)
        return self._literal_index(key, cased), needle

    # functions over distinct values

    def _evaluator(self, pred: ir.Pred) -> Callable[[Rows], Result]:
        op = pred.op
        if op in (ir.TRUE, ir.FALSE):
            truth = op == ir.TRUE
            return lambda rows: np.ones(rows.n, dtype=bool) if truth else None
        if op == ir.KEYWORD:
            return self._keyword(pred)
        if op == ir.REGEX:
            pattern = engine_regex(_string(pred), pred.cased, pred.flags)
            if pred.field is None:  # a regex must not match across two fields
                return _keyword_test(
                    lambda text: any(map(pattern.search, text.split(KEYWORD_SEPARATOR))),
                    cased=True,
                )
            return self._values_test(pred.field, True, pattern.search)
        name = _field(pred)
        source = self._source(name)
        if op in (ir.CONTAINS, ir.STARTSWITH, ir.ENDSWITH):  # the empty literal
            return lambda rows: _nonempty(rows.present(source, name))
        if op == ir.EQ:  # a float: numeric equality
            number = float(pred.value)  # type: ignore[arg-type]
            return self._values_test(name, True, lambda v: _number(v) == number)
        if op == ir.WILDCARD and _string(pred) == "*":  # any value at all
            return lambda rows: _nonempty(rows.present(source, name))
        if op == ir.WILDCARD:
            glob = glob_regex(_string(pred))
            return self._values_test(name, pred.cased, glob.fullmatch)
        if op == ir.CIDR:
            networks = [ipaddress.ip_network(_string(pred), strict=False)]
            return self._values_test(name, True, lambda v: _ip_in(v, networks))
        if op in (ir.GT, ir.GTE, ir.LT, ir.LTE):
            if isinstance(pred.value, bool) or not isinstance(pred.value, int | float):
                raise ir.IRError(f"{op} needs a number, got {pred.value!r}")
            limit = float(pred.value)
            compare = _COMPARE[op]
            return self._values_test(name, True, lambda v: _compare(v, limit, compare))
        if op == ir.EXISTS:
            want = bool(pred.value)
            return lambda rows: _nonempty(rows.present(source, name) == want)
        if op == ir.NULL:
            return lambda rows: _nonempty(~rows.present(source, name))
        if op in ir.FIELDREF_OPS:
            return self._fieldref(pred)
        raise ir.IRError(f"no engine translation for operator {op!r}")

    def _values_test(
        self, name: str, cased: bool, test: Callable[[str], object]
    ) -> Callable[[Rows], Result]:
        key: FieldKey = (self._source(name), name, cased)

        def evaluate(rows: Rows) -> Result:
            distinct = rows.distinct(key)
            values, positions = distinct.pylist(), distinct.positions
            truth = np.fromiter(
                (value is not None and bool(test(value)) for value in values),
                dtype=bool,
                count=len(values),
            )
            if not truth.any():
                return None
            return _nonempty(truth[positions])

        return evaluate

    def _keyword(self, pred: ir.Pred) -> Callable[[Rows], Result]:
        if not self._keyword_columns:
            return lambda rows: None
        glob = ir.parse_glob(_string(pred))
        if not any(wild for wild, _ in glob):  # the empty keyword: any value at all
            return _keyword_test(bool, pred.cased)
        pattern = glob_regex(_string(pred), within_field=True)
        return _keyword_test(pattern.search, pred.cased)

    def _fieldref(self, pred: ir.Pred) -> Callable[[Rows], Result]:
        this: FieldKey = (self._source(_field(pred)), _field(pred), pred.cased)
        other: FieldKey = (self._source(_string(pred)), _string(pred), pred.cased)
        test = {
            ir.FIELDREF: lambda a, b: a == b,
            ir.FIELDREF_CONTAINS: lambda a, b: b in a,
            ir.FIELDREF_STARTSWITH: lambda a, b: a.startswith(b),
            ir.FIELDREF_ENDSWITH: lambda a, b: a.endswith(b),
        }[pred.op]

        def evaluate(rows: Rows) -> Result:
            a, b = rows.distinct(this), rows.distinct(other)
            a_values, a_pos, b_values, b_pos = a.pylist(), a.positions, b.pylist(), b.positions
            truth = np.fromiter(
                (
                    a_values[i] is not None
                    and b_values[j] is not None
                    and test(a_values[i], b_values[j])
                    for i, j in zip(a_pos.tolist(), b_pos.tolist(), strict=True)
                ),
                dtype=bool,
                count=rows.n,
            )
            return _nonempty(truth)

        return evaluate


def _keyword_test(test: Callable[[str], object], cased: bool) -> Callable[[Rows], Result]:
    """The row's keyword text passes ``test``."""

    def evaluate(rows: Rows) -> Result:
        text = rows.keyword_text(cased)
        values = text.pylist()
        truth = np.fromiter(
            (value is not None and bool(test(value)) for value in values),
            dtype=bool,
            count=len(values),
        )
        return _nonempty(truth[text.positions]) if truth.any() else None

    return evaluate


def _nonempty(result: np.ndarray) -> Result:
    return result if result.any() else None


def _field(pred: ir.Pred) -> str:
    if pred.field is None:
        raise ir.IRError(f"operator {pred.op!r} needs a field")
    return pred.field


def _string(pred: ir.Pred) -> str:
    if not isinstance(pred.value, str):
        raise ir.IRError(f"{pred.op} needs a string value, got {pred.value!r}")
    return pred.value


# --- values ---------------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ir.GT: lambda a, b: a > b,
    ir.GTE: lambda a, b: a >= b,
    ir.LT: lambda a, b: a < b,
    ir.LTE: lambda a, b: a <= b,
}


def _number(value: str) -> float | None:
    try:
        return float(value.strip())
    except ValueError:
        return None


def _compare(value: str, limit: float, compare: Callable[[float, float], bool]) -> bool:
    number = _number(value)
    return number is not None and compare(number, limit)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip_in(text: str, networks: Sequence[Network]) -> bool:
    """Whether an IP address held as text lies in any of ``networks``: dotted-quad IPv4,
    IPv4-mapped IPv6 (``::ffff:10.1.2.3`` is in ``10.0.0.0/8``, as Elasticsearch's ``ip``
    type has it), any RFC 4291 IPv6 text form, with or without a ``%zone``. Anything else
    is false."""
    text = text.strip().split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        mapped = address.ipv4_mapped
        return any(mapped in n or address in n for n in networks)
    if isinstance(address, ipaddress.IPv4Address):
        as_v6 = ipaddress.IPv6Address(int(address) | 0xFFFF00000000)
        return any(address in n or as_v6 in n for n in networks)
    return any(address in n for n in networks)


def glob_regex(glob: str, *, within_field: bool = False) -> Any:
    """A canonical IR glob as a compiled RE2 regex (``fullmatch`` = the whole value,
    ``search`` = anywhere; both say True / False); ``*`` and ``?`` also match line
    breaks. ``within_field``: they never match the keyword separator, so a match stays
    inside one field. RE2, not Python's ``re``: ``*a*a*a*`` backtracks polynomially in
    ``re`` and runs in linear time here, with the same answers."""
    any_char = "[^\x01]" if within_field else "."
    parts = [
        (any_char + "*" if text == "*" else any_char) if wild else _re2_literal(text)
        for wild, text in ir.parse_glob(glob)
    ]
    return compile_glob("".join(parts))


def engine_regex(pattern: str, cased: bool = True, flags: str = "") -> EngineRegex:
    """A rule's regex with its flags (``i`` unless cased, ``m`` / ``s`` as written) on
    RE2; raises ``RegexRefused`` (with the reason) for a pattern RE2 cannot run."""
    return compile_regex(pattern, cased, flags)
