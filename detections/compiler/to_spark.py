"""IR -> one boolean Spark Column. The one place where a Sigma value semantic becomes a Spark
expression (modifiers such as windash or base64offset were already expanded by pySigma into
plain IR predicates; this module decides how each predicate runs).

Everything is built from Spark built-in expressions (no Python UDFs), so a rule runs
entirely inside the JVM, mostly as whole-stage generated code (the few higher-order
functions used for long value lists and IP parsing are interpreted). No SparkSession is
created or needed here: Columns are unresolved expressions until the caller uses them.

Null semantics: a predicate on a missing (null) field is *false*, never unknown, so that
``not selection`` is true for an event without the field, as Sigma expects. Predicates under
a ``Not`` are wrapped in ``coalesce(p, false)``; elsewhere three-valued logic already agrees
with two-valued logic once the final result is coalesced to false.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

from detections.compiler import ir

Resolver = Callable[[str], Column]

__all__ = ["Resolver", "glob_to_like", "java_regex", "to_column"]


def to_column(
    node: ir.Node,
    resolve: Resolver,
    keyword_columns: Sequence[Column] = (),
    *,
    lowered: Resolver | None = None,
) -> Column:
    """The rule's detection as one boolean Column that is never null.

    ``resolve(field)`` returns the Column holding a Sigma field (string or numeric typed).
    ``keyword_columns`` are the string columns a field-less (keyword) search looks in.
    ``lowered(field)``, if given, returns the field already cast to string and lower-cased
    (so a caller can lower-case each field once per batch for all rules); by default each
    case-insensitive comparison uses ``lower(cast(field as string))``.
    """
    builder = _Builder(resolve, keyword_columns, lowered)
    return F.coalesce(builder.build(node, negated=False), F.lit(False))


class _Builder:
    """Translates one IR tree; caches per-field Columns so shared sub-trees are identical."""

    def __init__(
        self, resolve: Resolver, keyword_columns: Sequence[Column], lowered: Resolver | None
    ) -> None:
        self._resolve = resolve
        self._keywords = list(keyword_columns)
        self._lowered = lowered
        self._cache: dict[tuple[str, str], Column] = {}

    # tree

    def build(self, node: ir.Node, negated: bool) -> Column:
        if isinstance(node, ir.And):
            return _all([self.build(i, negated) for i in node.items])
        if isinstance(node, ir.Or):
            return _any(self._or_terms(node.items, negated))
        if isinstance(node, ir.Not):
            return ~self.build(node.item, negated=True)
        return self._guard(self.pred(node), negated, node.op not in _NEVER_NULL)

    @staticmethod
    def _guard(column: Column, negated: bool, nullable: bool = True) -> Column:
        """Under a Not, a predicate on a missing field must be false, not null."""
        return F.coalesce(column, F.lit(False)) if negated and nullable else column

    def _or_terms(self, items: Sequence[ir.Node], negated: bool) -> list[Column]:
        """Alternatives of an Or. Some predicates on the same field are evaluated together:
        long value lists (``_MIN_STRING_GROUP``+) as one test against a literal array, so a
        4,000-hash list costs a few Column objects instead of 8,000 py4j calls; all CIDRs
        with one address parse; all plain keywords with one search of the joined text."""
        groups: dict[tuple[object, ...], list[ir.Pred]] = {}
        terms: list[Column] = []
        for item in items:
            key = _group_key(item)
            if key is None:
                terms.append(self.build(item, negated))
            else:
                groups.setdefault(key, []).append(item)  # type: ignore[arg-type]
        for key, preds in groups.items():
            if key[0] in _STRING_GROUPS and len(preds) < _MIN_STRING_GROUP:
                terms.extend(self.build(p, negated) for p in preds)
            elif len(preds) == 1 and key[0] == ir.CIDR:
                terms.append(self.build(preds[0], negated))
            else:
                terms.append(self._guard(self._group(key, preds), negated))
        return terms

    def _group(self, key: tuple[object, ...], preds: list[ir.Pred]) -> Column:
        op, values = key[0], [_string(p) for p in preds]
        if op == ir.CIDR:
            networks = [ipaddress.ip_network(v, strict=False) for v in values]
            return _ip_in_networks(self.text(self._field(preds[0]), cased=True), networks)
        if op == ir.KEYWORD:
            return self._keywords_contain(values, preds[0].cased)
        text = self.text(self._field(preds[0]), preds[0].cased)
        if op == ir.EQ:
            return F.array_contains(_literal_array(values), text)
        test = _STRING_TESTS[str(op)]
        return _let(text, lambda t: F.exists(_literal_array(values), lambda v: test(t, v)))

    # field access

    def _memo(self, kind: str, name: str, make: Callable[[], Column]) -> Column:
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def raw(self, name: str) -> Column:
        return self._memo("raw", name, lambda: self._resolve(name))

    def text(self, name: str, cased: bool) -> Column:
        """The field as a string: as-is when cased, else lower-cased."""
        if cased:
            return self._memo("str", name, lambda: self.raw(name).cast("string"))
        if self._lowered is not None:
            lowered = self._lowered
            return self._memo("lower", name, lambda: lowered(name))
        return self._memo("lower", name, lambda: F.lower(self.text(name, cased=True)))

    def keyword_texts(self, cased: bool) -> list[Column]:
        columns = [c.cast("string") for c in self._keywords]
        return columns if cased else [F.lower(c) for c in columns]

    # predicates

    def pred(self, p: ir.Pred) -> Column:
        handler = _HANDLERS.get(p.op)
        if handler is None:
            raise ir.IRError(f"no Spark translation for operator {p.op!r}")
        return handler(self, p)

    def _field(self, p: ir.Pred) -> str:
        if p.field is None:
            raise ir.IRError(f"operator {p.op!r} needs a field")
        return p.field

    def eq(self, p: ir.Pred) -> Column:
        name, value = self._field(p), p.value
        if isinstance(value, bool):  # before int: bool is an int subclass
            return self.text(name, cased=False) == F.lit("true" if value else "false")
        if isinstance(value, int):
            return self.text(name, cased=True) == F.lit(str(value))
        if isinstance(value, float):
            return self.raw(name).try_cast("double") == F.lit(value)
        return self.text(name, p.cased) == F.lit(_string(p))

    def contains(self, p: ir.Pred) -> Column:
        return self.text(self._field(p), p.cased).contains(_string(p))

    def startswith(self, p: ir.Pred) -> Column:
        return self.text(self._field(p), p.cased).startswith(_string(p))

    def endswith(self, p: ir.Pred) -> Column:
        return self.text(self._field(p), p.cased).endswith(_string(p))

    def wildcard(self, p: ir.Pred) -> Column:
        return self.text(self._field(p), p.cased).like(glob_to_like(_string(p)))

    def keyword(self, p: ir.Pred) -> Column:
        tokens = ir.parse_glob(_string(p))
        if not any(wild for wild, _ in tokens):
            return self._keywords_contain(["".join(text for _, text in tokens)], p.cased)
        # A wildcard must not match across two fields, so these search column by column.
        pattern = "%" + glob_to_like(_string(p)) + "%"
        return _any([c.like(pattern) for c in self.keyword_texts(p.cased)])

    def _keywords_contain(self, literals: list[str], cased: bool) -> Column:
        """Any keyword column contains any of ``literals``: one search over the columns
        joined with a separator no literal contains, so no match spans two columns."""
        if not self._keywords:
            return F.lit(False)
        columns = [c.cast("string") for c in self._keywords]
        if "" in literals:  # the empty keyword (a lone "*") matches any present value
            return _any([c.isNotNull() for c in columns])
        separator = _separator(literals)
        joined = F.concat_ws(separator, *columns)
        if not cased:
            joined = F.lower(joined)
        if len(literals) == 1:
            return joined.contains(literals[0])
        return _let(joined, lambda t: F.exists(_literal_array(literals), lambda v: t.contains(v)))

    def regex(self, p: ir.Pred) -> Column:
        pattern = java_regex(_string(p), p.cased, p.flags)
        if p.field is None:
            return _any([c.rlike(pattern) for c in self.keyword_texts(cased=True)])
        return self.text(p.field, cased=True).rlike(pattern)

    def cidr(self, p: ir.Pred) -> Column:
        network = ipaddress.ip_network(_string(p), strict=False)
        return _ip_in_networks(self.text(self._field(p), cased=True), [network])

    def exists(self, p: ir.Pred) -> Column:
        column = self.raw(self._field(p))
        return column.isNotNull() if p.value else column.isNull()

    def null(self, p: ir.Pred) -> Column:
        return self.raw(self._field(p)).isNull()

    def compare(self, p: ir.Pred) -> Column:
        if isinstance(p.value, bool) or not isinstance(p.value, int | float):
            raise ir.IRError(f"{p.op} needs a number, got {p.value!r}")
        number = self.raw(self._field(p)).try_cast("double")
        limit = F.lit(float(p.value))
        return {
            ir.GT: number > limit,
            ir.GTE: number >= limit,
            ir.LT: number < limit,
            ir.LTE: number <= limit,
        }[p.op]

    def fieldref(self, p: ir.Pred) -> Column:
        this, other = self.text(self._field(p), p.cased), self.text(_string(p), p.cased)
        if p.op == ir.FIELDREF:
            return this == other
        if p.op == ir.FIELDREF_CONTAINS:
            return this.contains(other)
        if p.op == ir.FIELDREF_STARTSWITH:
            return this.startswith(other)
        return this.endswith(other)

    def constant(self, p: ir.Pred) -> Column:
        return F.lit(p.op == ir.TRUE)


_HANDLERS: dict[str, Callable[[_Builder, ir.Pred], Column]] = {
    ir.EQ: _Builder.eq,
    ir.CONTAINS: _Builder.contains,
    ir.STARTSWITH: _Builder.startswith,
    ir.ENDSWITH: _Builder.endswith,
    ir.WILDCARD: _Builder.wildcard,
    ir.KEYWORD: _Builder.keyword,
    ir.REGEX: _Builder.regex,
    ir.CIDR: _Builder.cidr,
    ir.EXISTS: _Builder.exists,
    ir.NULL: _Builder.null,
    ir.GT: _Builder.compare,
    ir.GTE: _Builder.compare,
    ir.LT: _Builder.compare,
    ir.LTE: _Builder.compare,
    ir.FIELDREF: _Builder.fieldref,
    ir.FIELDREF_CONTAINS: _Builder.fieldref,
    ir.FIELDREF_STARTSWITH: _Builder.fieldref,
    ir.FIELDREF_ENDSWITH: _Builder.fieldref,
    ir.TRUE: _Builder.constant,
    ir.FALSE: _Builder.constant,
}

# Operators whose Spark expression is never null, so they need no coalesce under a Not.
_NEVER_NULL = frozenset({ir.EXISTS, ir.NULL, ir.TRUE, ir.FALSE})


# A list this long on one field is tested against one literal array: fewer Column objects to
# build and plan. Shorter lists stay plain predicates, which whole-stage codegen compiles
# (the array test runs as an interpreted lambda).
_MIN_STRING_GROUP = 16
_STRING_GROUPS = frozenset({ir.EQ, ir.CONTAINS, ir.STARTSWITH, ir.ENDSWITH})

_STRING_TESTS: dict[str, Callable[[Column, Column], Column]] = {
    ir.CONTAINS: lambda text, value: text.contains(value),
    ir.STARTSWITH: lambda text, value: text.startswith(value),
    ir.ENDSWITH: lambda text, value: text.endswith(value),
}


def _group_key(node: ir.Node) -> tuple[object, ...] | None:
    """How an Or alternative may be grouped with others (None: it stands alone)."""
    if not isinstance(node, ir.Pred):
        return None
    if node.op in _STRING_TESTS or (node.op == ir.EQ and isinstance(node.value, str)):
        return (node.op, node.field, node.cased)
    if node.op == ir.CIDR:
        return (ir.CIDR, node.field)
    if node.op == ir.KEYWORD and not any(wild for wild, _ in ir.parse_glob(_string(node))):
        return (ir.KEYWORD, node.cased)
    return None


def _string(p: ir.Pred) -> str:
    if not isinstance(p.value, str):
        raise ir.IRError(f"{p.op} needs a string value, got {p.value!r}")
    return p.value


_SEPARATORS = ("\u0001", "\u001f", "\ue000", "\ue001", "\ufdd0")


def _separator(values: Sequence[str]) -> str:
    """A character that occurs in none of ``values`` (and is not special in a regex)."""
    for candidate in _SEPARATORS:
        if not any(candidate in value for value in values):
            return candidate
    raise ir.IRError("values contain every separator candidate")


def _literal_array(values: Sequence[str]) -> Column:
    """An array<string> literal built with two Column calls whatever its length: Spark
    folds ``split(<literal>, <separator>)`` into a constant array when it optimises."""
    separator = _separator(values)
    return F.split(F.lit(separator.join(values)), separator, -1)


def _balanced(columns: Sequence[Column], combine: Callable[[Column, Column], Column]) -> Column:
    """Combine as a balanced tree: a rule with hundreds of alternatives must not become a
    left-deep chain that overflows the JVM stack when Spark walks it."""
    if len(columns) == 1:
        return columns[0]
    middle = len(columns) // 2
    return combine(_balanced(columns[:middle], combine), _balanced(columns[middle:], combine))


def _any(columns: Sequence[Column]) -> Column:
    return _balanced(columns, lambda a, b: a | b) if columns else F.lit(False)


def _all(columns: Sequence[Column]) -> Column:
    return _balanced(columns, lambda a, b: a & b) if columns else F.lit(True)


# --- wildcards -------------------------------------------------------------------------------


def glob_to_like(glob: str) -> str:
    """Canonical IR glob -> SQL LIKE pattern with ``\\`` as the escape character."""
    out: list[str] = []
    for wild, text in ir.parse_glob(glob):
        if wild:
            out.append("%" if text == "*" else "_")
        else:
            out.append(text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
    return "".join(out)


# --- regular expressions -----------------------------------------------------------------

_QUANTIFIER = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


def java_regex(pattern: str, cased: bool = True, flags: str = "") -> str:
    """A Sigma (PCRE / Python flavoured) regex as an equivalent ``java.util.regex`` search.

    Adds the rule's flags inline (``u`` so that ``i`` folds non-ASCII letters as Python
    does), rewrites the constructs the two dialects spell differently, and drops a leading
    or trailing ``.*`` that cannot change whether a search matches but makes Java's
    ``find()`` quadratic on long values.
    """
    inline = "u" + ("" if cased else "i") + "".join(sorted(set(flags)))
    return f"(?{inline})" + _translate(_strip_search_padding(pattern))


def _strip_search_padding(pattern: str) -> str:
    if pattern.startswith(".*") and pattern[2:3] not in ("*", "+", "?", "{"):
        pattern = pattern[2:]
    if pattern.endswith(".*") and _unescaped_at(pattern, len(pattern) - 2):
        pattern = pattern[:-2]
    return pattern


def _unescaped_at(pattern: str, index: int) -> bool:
    """True if ``pattern[index]`` is not escaped and not inside a character class."""
    i, in_class = 0, False
    while i < index:
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class and char == "]":
            in_class = False
        elif not in_class and char == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] in ("]", "^") else 1
            continue
        i += 1
    return i == index and not in_class


def _translate(pattern: str) -> str:
    """Rewrite Python-only syntax into Java syntax, character by character."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            pair = pattern[i : i + 2]
            out.append("\\z" if pair == "\\Z" else pair)
            i += 2
        elif char == "[":
            i = _translate_class(pattern, i, out)
        elif pattern.startswith("(?P<", i):
            out.append("(?<")
            i += 4
        elif pattern.startswith("(?P=", i):
            end = pattern.index(")", i)
            out.append(f"\\k<{pattern[i + 4 : end]}>")
            i = end + 1
        elif char == "{":
            match = _QUANTIFIER.match(pattern, i)
            if match and (match.group(1) or match.group(2)):  # {n} {n,} {,m} {n,m} {,}
                low, comma, high = match.group(1) or "0", match.group(2) or "", match.group(3)
                out.append("{" + low + comma + (high or "") + "}")
                i = match.end()
            else:  # Python reads a brace that is not a quantifier literally; Java rejects it
                out.append("\\{")
                i += 1
        elif char == "}":
            out.append("\\}")
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _translate_class(pattern: str, start: int, out: list[str]) -> int:
    """Copy one ``[...]`` class; escape what Java reads as nesting or intersection."""
    out.append("[")
    i = start + 1
    if pattern[i : i + 1] == "^":
        out.append("^")
        i += 1
    if pattern[i : i + 1] == "]":  # a leading ] is a literal in Python
        out.append("\\]")
        i += 1
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "]":
            out.append("]")
            return i + 1
        if char == "[":
            out.append("\\[")
        elif char == "&" and pattern[i + 1 : i + 2] == "&":
            out.append("&\\&")
            i += 1
        else:
            out.append(char)
        i += 1
    return i


# --- IP addresses ----------------------------------------------------------------------------

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"^(::ffff:)?{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$"
_IPV6_FULL = r"^([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}$"
_MAPPED = 0xFFFF00000000  # ::ffff:0:0/96, where IPv4 addresses live in IPv6


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(value)`` with ``value`` evaluated once. Spark has no let: binding the value as
    the element of a one-element array keeps the expression tree linear instead of
    duplicating ``value`` at every use."""
    return F.transform(F.array(value), body).getItem(0)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip_in_networks(text: Column, networks: Sequence[Network]) -> Column:
    """Whether an IP address held as text lies in any of ``networks``.

    Accepts dotted-quad IPv4, IPv4-mapped IPv6 (``::ffff:10.1.2.3`` matches ``10.0.0.0/8``,
    as Elasticsearch's ``ip`` type does) and every RFC 4291 IPv6 text form (``::``
    compression, leading zeros, upper case, a ``%zone`` suffix). IPv6 with an embedded
    dotted quad other than the mapped prefix is not recognised. Anything else is false.
    """
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6_ranges = [_hex_range(n) for n in networks]

    def check(ip: Column) -> Column:
        in_v6 = _let(_ipv6_hex(ip), lambda key: _any([key.between(lo, hi) for lo, hi in v6_ranges]))
        if not v4:
            return in_v6
        ranges = [(int(n.network_address), int(n.broadcast_address)) for n in v4]
        in_v4 = _let(_ipv4_number(ip), lambda key: _any([key.between(lo, hi) for lo, hi in ranges]))
        return in_v4 | in_v6

    return _let(F.lower(F.trim(text)), check)


def _ipv4_number(ip: Column) -> Column:
    """Dotted-quad IPv4 (optionally IPv4-mapped) -> 32-bit number as a long; else null."""
    a, b, c, d = (F.regexp_extract(ip, _IPV4, group).try_cast("long") for group in range(2, 6))
    return F.when(ip.rlike(_IPV4), a * 16777216 + b * 65536 + c * 256 + d)


def _ipv6_hex(ip: Column) -> Column:
    """Hexadecimal IPv6 text -> its 32 lower-case hex digits (ranges then compare as
    strings); null for anything else. ``::`` is expanded by counting colons, each group is
    left-padded to four digits with two regex replacements."""

    def expand(addr: Column) -> Column:
        colons = F.length(addr) - F.length(F.regexp_replace(addr, ":", ""))
        edge = addr.startswith("::") | addr.endswith("::")
        padded = F.regexp_replace(F.regexp_replace(addr, "^::", "0::"), "::$", "::0")
        filler = F.concat(F.lit(":"), F.repeat(F.lit("0:"), F.greatest(8 - colons, F.lit(0))))
        compressed = addr.contains("::")
        well_formed = ~compressed | (~addr.rlike(":::|::.*::") & ((colons <= 7) | edge))
        full = F.when(compressed, F.regexp_replace(padded, F.lit("::"), filler)).otherwise(addr)
        return F.when(well_formed, full)

    def to_hex(full: Column) -> Column:
        grouped = F.regexp_replace(F.concat(F.lit(":"), full), ":", ":000")
        return F.when(
            full.rlike(_IPV6_FULL), F.regexp_replace(grouped, ":0*([0-9a-f]{4})(?=:|$)", "$1")
        )

    return _let(_let(F.regexp_replace(ip, "%.*$", ""), expand), to_hex)


def _hex_range(network: Network) -> tuple[str, str]:
    """First and last address of a network as 32 hex digits (IPv4 as IPv4-mapped IPv6)."""
    first, last = int(network.network_address), int(network.broadcast_address)
    if isinstance(network, ipaddress.IPv4Network):
        first, last = first | _MAPPED, last | _MAPPED
    return f"{first:032x}", f"{last:032x}"
