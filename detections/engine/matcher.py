"""The rule engine: a detection plan applied to Arrow record batches of parsed events.

Pure (pyarrow + numpy, no Spark, no I/O), so the streaming job, the rule tests and the
benchmarks run the very same code: the job calls it inside Spark's Python workers
(``mapInArrow``), ``detections.engine.apply.match_events`` calls it directly.

Per batch: each route's rows are found from ``event_type`` and ``logsource``; each route's
rules run over those rows only (see ``detections.compiler.to_arrow`` for how); a rule that
raises is reported with its error and skipped while every other rule carries on; the
time spent in each rule is measured so that costly content can be found, demoted, or
quarantined when it exceeds its time budget (``detections.stream.worker``). A rule's seconds are
its own work: the route's shared work (distinct values, keyword text, the literal scans
every rule of the route shares) is measured apart, so the rule that happens to ask first
is not charged for it.
"""

from __future__ import annotations

import gc
import hashlib
import pickle
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detections.compiler import explain, ir
from detections.compiler.logsources import Route, field_source
from detections.compiler.to_arrow import (
    KEYWORD_SEPARATOR,
    FieldKey,
    Program,
    ProgramBuilder,
    run,
)
from detections.engine.why import explain_rows
from schemas.events import MODEL_BY_TYPE, Envelope
from schemas.generate import event_columns

#: (rule index, route, detection) -- all the engine needs to know about a rule.
RuleSpec = tuple[int, Route, ir.Node]


@dataclass
class MatchResult:
    """Matches of one batch as parallel arrays (sorted by row, then rule), plus the rules
    that failed on this batch (index -> error), the seconds each rule took and the number
    of events each rule was evaluated on (its route's rows)."""

    rows: np.ndarray
    rules: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    evaluated: dict[int, int] = field(default_factory=dict)
    shared_seconds: float = 0.0  # work the rules of a route share, charged to none
    # Per match (parallel to rows/rules): why it matched (detections.engine.why), when
    # the matcher has explanations and was asked for them; else None.
    details: list[dict[str, Any]] | None = None
    explain_seconds: float = 0.0  # of which spent explaining matches

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.rows.tolist(), self.rules.tolist(), strict=True))


class Matcher:
    """Compiled rules, grouped by route. Build once, match many batches."""

    def __init__(
        self,
        rules: Iterable[RuleSpec],
        explanations: Mapping[int, explain.Explanation] | None = None,
    ) -> None:
        """``explanations`` (rule index -> its selections, ``CompiledRule.explanation``)
        make ``match`` say why each match matched (``MatchResult.details``)."""
        by_route: dict[Route, list[tuple[int, ir.Node]]] = {}
        for index, route, node in rules:
            by_route.setdefault(route, []).append((index, node))
        self.programs: dict[Route, Program] = {}
        self.errors: dict[int, str] = {}  # rules that could not be compiled
        self.explains = bool(explanations)
        explanations = explanations or {}
        for route, members in by_route.items():
            builder = ProgramBuilder(lambda name, r=route: field_source(r, name))
            for index, node in members:
                builder.add_rule(index, node, explanations.get(index, ()))
            program = builder.program()
            self.programs[route] = program
            self.errors.update(program.errors)

    @property
    def rule_count(self) -> int:
        return sum(len(p.rules) for p in self.programs.values())

    def match(
        self, batch: pa.RecordBatch | pa.Table, skip: Collection[int] = (), explain: bool = True
    ) -> MatchResult:
        """Every (row, rule) match of ``batch``; rules in ``skip`` are not evaluated. With
        ``explain`` (and explanations given), ``details`` says why each matched."""
        view = _BatchView(batch)
        found_rows: list[np.ndarray] = []
        found_rules: list[np.ndarray] = []
        details: list[dict[str, Any]] | None = [] if explain and self.explains else None
        errors: dict[int, str] = {}
        seconds: dict[int, float] = {}
        evaluated: dict[int, int] = {}
        shared = explaining = 0.0
        for route, program in self.programs.items():
            rows = np.flatnonzero(view.route_mask(route))
            if not rows.size:
                continue
            route_rows = _RouteRows(view, rows, program, keyword_columns(route))
            memo: dict[int, np.ndarray | None] = {}
            for index, tree in program.rules.items():
                if index in skip:
                    continue
                evaluated[index] = evaluated.get(index, 0) + int(rows.size)
                started, shared_before = time.perf_counter(), route_rows.shared_s
                try:
                    result = run(tree, route_rows, memo, program.slots)
                except Exception as exc:  # a misbehaving rule never stops the others
                    errors[index] = f"rule evaluation failed: {type(exc).__name__}: {exc}"
                    continue
                finally:
                    own = time.perf_counter() - started - (route_rows.shared_s - shared_before)
                    seconds[index] = seconds.get(index, 0.0) + max(own, 0.0)
                if result is not None:
                    hit = rows[result]
                    found_rows.append(hit)
                    found_rules.append(np.full(hit.size, index, dtype=np.int32))
                    if details is not None:
                        started = time.perf_counter()
                        details += _explain(program, index, route_rows, memo, result)
                        explaining += time.perf_counter() - started
            shared += route_rows.shared_s
        if not found_rows:
            empty = np.zeros(0, dtype=np.int64)
            return MatchResult(
                empty, empty.astype(np.int32), errors, seconds, evaluated, shared, details
            )
        all_rows = np.concatenate(found_rows).astype(np.int64)
        all_rules = np.concatenate(found_rules)
        order = np.lexsort((all_rules, all_rows))
        if details is not None:
            details = [details[i] for i in order.tolist()]
        return MatchResult(
            all_rows[order],
            all_rules[order],
            errors,
            seconds,
            evaluated,
            shared,
            details,
            explaining,
        )


def _explain(
    program: Program,
    index: int,
    rows: _RouteRows,
    memo: dict[int, np.ndarray | None],
    result: np.ndarray,
) -> list[dict[str, Any]]:
    """Why rule ``index`` matched each of its matched rows (``result``). A failure here
    never costs the match: the finding is written with empty details."""
    at = np.flatnonzero(result)
    selections = program.explain.get(index)
    if selections:
        try:
            return explain_rows(selections, rows, memo, program.slots, at)
        except Exception:
            pass
    return [{"selections": [], "keywords": []} for _ in range(at.size)]


# --- shipping the engine to Spark's Python workers -------------------------------------------


@dataclass(frozen=True)
class MatcherSpec:
    """The plan's rules in a compact, picklable form. Workers keep one compiled Matcher per
    spec (``digest``), so each micro-batch ships a few hundred KB and compiles nothing."""

    digest: str
    payload: bytes

    @classmethod
    def of(
        cls,
        rules: Iterable[RuleSpec],
        explanations: Mapping[int, explain.Explanation] | None = None,
    ) -> MatcherSpec:
        content = (list(rules), dict(explanations or {}))
        data = pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.sha256(data).hexdigest()[:16], zlib.compress(data, 6))

    def matcher(self) -> Matcher:
        return _compiled(self)

    def content(self) -> tuple[list[RuleSpec], dict[int, explain.Explanation]]:
        return pickle.loads(zlib.decompress(self.payload))

    def rules(self) -> list[RuleSpec]:
        return self.content()[0]


_CACHE: dict[str, Matcher] = {}


def _compiled(spec: MatcherSpec) -> Matcher:
    matcher = _CACHE.get(spec.digest)
    if matcher is None:
        gc.unfreeze()  # the replaced bundle's objects become collectable again
        _CACHE.clear()  # one plan at a time per worker: a new bundle replaces the old one
        matcher = _CACHE[spec.digest] = Matcher(*spec.content())
        freeze_long_lived()
    return matcher


def freeze_long_lived() -> None:
    """Exempt what exists now (the compiled rules: hundreds of thousands of objects) from
    Python's cyclic garbage collector. Otherwise every full collection walks all of them:
    measured 0.45 s with the SigmaHQ rule set, a pause in whatever micro-batch it hits."""
    gc.collect()
    gc.freeze()


# --- where field values come from -------------------------------------------------------------


def keyword_text_column(columns: tuple[str, ...]) -> str:
    """Name of the joined keyword text of ``columns`` (see ``_BatchView.keyword_text``)."""
    return "__kw_" + hashlib.sha1("\x00".join(columns).encode()).hexdigest()[:10]


@cache
def keyword_columns(route: Route) -> tuple[str, ...]:
    """Typed string columns a field-less (keyword) search looks in for ``route`` (the
    ``extra`` values are searched too)."""
    strings = {name for name, ann in event_columns().items() if ann is str}
    strings -= set(Envelope.model_fields) | {"event_type"}
    if route.event_types:
        declared: set[str] = set()
        for event_type in route.event_types:
            declared |= set(MODEL_BY_TYPE[event_type].model_fields)
        strings &= declared
    return tuple(sorted(strings))


class _BatchView:
    """Columns of one batch, resolved to Sigma fields once and shared by every route."""

    def __init__(self, batch: pa.RecordBatch | pa.Table) -> None:
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else _empty(batch)
        self.batch = batch
        self.n = batch.num_rows
        self._names = set(batch.schema.names)
        self._columns: dict[tuple[str, str], pa.Array] = {}
        self._masks: dict[Route, np.ndarray] = {}
        self._present: dict[tuple[str, str], np.ndarray] = {}
        self._extra_index: tuple[dict[str, int], np.ndarray, pa.Array, np.ndarray] | None = None
        self._joined: dict[str, pa.Array] = {}
        logsource = batch.column("logsource") if "logsource" in self._names else None
        self._event_type = batch.column("event_type")
        self._product = pc.utf8_lower(pc.struct_field(logsource, "product")) if logsource else None
        self._service = pc.utf8_lower(pc.struct_field(logsource, "service")) if logsource else None

    def route_mask(self, route: Route) -> np.ndarray:
        mask = self._masks.get(route)
        if mask is None:
            parts: list[pa.Array] = []
            if route.product:
                parts.append(_equals(self._product, route.product, self.n))
            if route.event_types:
                parts.append(pc.is_in(self._event_type, pa.array(route.event_types)))
            if route.service:
                parts.append(_equals(self._service, route.service, self.n))
            mask = np.ones(self.n, dtype=bool)
            for part in parts:
                mask &= pc.fill_null(part, False).to_numpy(zero_copy_only=False)
            self._masks[route] = mask
        return mask

    def column(self, source: str, name: str) -> pa.Array:
        """The field's values as strings (null where absent) for every row of the batch."""
        key = (source, name)
        column = self._columns.get(key)
        if column is None:
            if source == "col":
                column = self._typed(name)
            elif source == "extra":
                column = self._extra(name)
            else:
                column = pc.coalesce(self._typed(name), self._extra(name))
            self._columns[key] = column
        return column

    def keyword_text(self, columns: tuple[str, ...]) -> pa.Array:
        """Per row: the values of ``columns`` and of ``extra`` joined by the keyword
        separator. Read from the batch when the Spark job computed it in the JVM (one
        column crosses to Python instead of every string column), else joined here."""
        name = keyword_text_column(columns)
        if name in self._names:
            return self.batch.column(name)
        if name not in self._joined:
            parts = [self._typed(c) for c in columns]
            if "extra" in self._names:
                lists, _, values = _map_entries(self.batch.column("extra"))
                parts.append(
                    pc.binary_join(
                        pa.ListArray.from_arrays(lists.offsets, values), KEYWORD_SEPARATOR
                    )
                )
            parts = [pc.cast(p, pa.string()) for p in parts]
            self._joined[name] = (
                pc.binary_join_element_wise(*parts, KEYWORD_SEPARATOR, null_handling="skip")
                if parts
                else pa.nulls(self.n, pa.string())
            )
        return self._joined[name]

    def present(self, source: str, name: str) -> np.ndarray:
        key = (source, name)
        if key not in self._present:
            valid = pc.is_valid(self.column(source, name))
            self._present[key] = valid.to_numpy(zero_copy_only=False)
        return self._present[key]

    def _typed(self, name: str) -> pa.Array:
        if name not in self._names:
            return pa.nulls(self.n, pa.string())
        column = self.batch.column(name)
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        return column

    def _extra(self, name: str) -> pa.Array:
        """``extra[name]`` per row (the first entry if a map repeats a key)."""
        if "extra" not in self._names:
            return pa.nulls(self.n, pa.string())
        if self._extra_index is None:
            self._extra_index = _flatten_maps(self.batch.column("extra"))
        keys, key_codes, values, parents = self._extra_index
        code = keys.get(name)
        if code is None:
            return pa.nulls(self.n, pa.string())
        entries = np.flatnonzero(key_codes == code)
        pick = np.full(self.n, -1, dtype=np.int64)
        pick[parents[entries[::-1]]] = entries[::-1]  # reversed: the first entry wins
        return values.take(pa.array(pick, mask=pick < 0))


class _Distinct:
    """Distinct values of one field over a route's rows (see ``to_arrow.Distinct``)."""

    __slots__ = ("_pylist", "array", "positions")

    def __init__(self, array: pa.Array, positions: np.ndarray) -> None:
        self.array = array
        self.positions = positions
        self._pylist: list[str | None] | None = None

    def pylist(self) -> list[str | None]:
        if self._pylist is None:
            self._pylist = [*self.array.to_pylist(), None]
        return self._pylist


class _RouteRows:
    """The rows of one route in one batch, as ``to_arrow`` programs read them."""

    def __init__(
        self, view: _BatchView, rows: np.ndarray, program: Program, keywords: tuple[str, ...]
    ) -> None:
        self.view = view
        self.rows = rows
        self.n = int(rows.size)
        self.program = program
        self.keywords = keywords
        self._take = pa.array(rows)
        self._distinct: dict[FieldKey, _Distinct] = {}
        self._keyword_text: dict[bool, _Distinct] = {}
        self._literal_hits: dict[int, dict[int, np.ndarray]] = {}
        self.shared_s = 0.0  # seconds of shared work (see the module docstring)
        self._sharing = False

    @contextmanager
    def _shared(self) -> Iterator[None]:
        """Time work every rule of the route shares (the outermost call only)."""
        if self._sharing:
            yield
            return
        self._sharing, started = True, time.perf_counter()
        try:
            yield
        finally:
            self._sharing = False
            self.shared_s += time.perf_counter() - started

    def distinct(self, key: FieldKey) -> _Distinct:
        found = self._distinct.get(key)
        if found is None:
            with self._shared():
                source, name, cased = key
                if cased:
                    found = _encode(self.view.column(source, name).take(self._take))
                else:
                    raw = self.distinct((source, name, True))
                    found = _Distinct(_lower(raw.array), raw.positions)
            self._distinct[key] = found
        return found

    def present(self, source: str, name: str) -> np.ndarray:
        return self.view.present(source, name)[self.rows]

    def keyword_text(self, cased: bool) -> _Distinct:
        found = self._keyword_text.get(cased)
        if found is None:
            with self._shared():
                text = self.view.keyword_text(self.keywords).take(self._take)
                found = _encode(text)
                if not cased:
                    found = _Distinct(_lower(found.array), found.positions)
            self._keyword_text[cased] = found
        return found

    def literal_hits(self, index: int) -> dict[int, np.ndarray]:
        hits = self._literal_hits.get(index)
        if hits is None:
            with self._shared():
                literal = self.program.literals[index]
                distinct = (
                    self.distinct(literal.key)
                    if literal.key is not None
                    else self.keyword_text(literal.cased)
                )
                hits = {}
                if len(distinct.array):
                    for slot, found in literal.scan(distinct.array).items():
                        truth = np.zeros(len(distinct.array) + 1, dtype=bool)
                        truth[found] = True
                        hits[slot] = truth[distinct.positions]
            self._literal_hits[index] = hits
        return hits


def _flatten_maps(maps: pa.Array) -> tuple[dict[str, int], np.ndarray, pa.Array, np.ndarray]:
    """A map column as flat entries: key -> code, each entry's key code, each entry's
    value and each entry's row. Built once per batch; each lookup is then an integer
    comparison instead of a pass over every map."""
    lists, keys_flat, values = _map_entries(maps)
    keys = pc.dictionary_encode(keys_flat)
    codes = {key: code for code, key in enumerate(keys.dictionary.to_pylist())}
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    key_codes = pc.fill_null(keys.indices, -1).to_numpy(zero_copy_only=False)
    return codes, key_codes, values, parents


def _map_entries(maps: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """A map column as a list<struct<key, value>> column plus its flat keys and values
    (Arrow has no flatten for maps)."""
    if isinstance(maps, pa.ChunkedArray):
        maps = maps.combine_chunks()
    lists = maps.cast(pa.list_(pa.struct([maps.type.key_field, maps.type.item_field])))
    flat = pc.list_flatten(lists)
    return lists, flat.field(maps.type.key_field.name), flat.field(maps.type.item_field.name)


def _encode(column: pa.Array) -> _Distinct:
    """Distinct values of a string column and each row's position in them."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    dictionary = encoded.dictionary
    positions = pc.fill_null(encoded.indices, len(dictionary)).to_numpy(zero_copy_only=False)
    return _Distinct(dictionary, positions)


def _lower(column: pa.Array) -> pa.Array:
    """Lower-cased as Python (and pySigma) lower-case: full Unicode case mapping. ASCII
    values, nearly all of them, are lowered in Arrow; the others one by one."""
    if not len(column):
        return column
    ascii_ = pc.string_is_ascii(column)
    if pc.all(ascii_).as_py():
        return pc.ascii_lower(column)
    python = pa.array([None if v is None else v.lower() for v in column.to_pylist()], pa.string())
    return pc.if_else(ascii_, pc.ascii_lower(column), python)


def _equals(column: pa.Array | None, value: str, n: int) -> pa.Array:
    if column is None:
        return pa.array(np.zeros(n, dtype=bool))
    return pc.equal(column, pa.scalar(value))


def _empty(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], type=f.type) for f in table.schema], schema=table.schema
    )
