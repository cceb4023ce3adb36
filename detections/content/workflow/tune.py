"""``sigstream rules tune``: propose a Sigma filter that removes a rule's observed false
positives without touching its true positives (pure: no Spark, no Elasticsearch).

Analysts' verdicts are the input: the events of findings closed as ``false_positive``
(optionally ``benign``) are what the filter must remove; the events of findings closed as
``true_positive`` and the rule's own TP test events are what it must keep. The proposal
is a greedy set cover over candidate *atoms*, one field test each (``Image`` equals,
``CommandLine`` starts with its first tokens, a line of a multi-line text such as
PowerShell's ``ContextInfo`` contains ``Host Application = …``). An atom is usable only
if it matches no true positive. Atoms are grouped into ``filter_tune_N`` selections and
the rule's condition becomes ``(<condition>) and not 1 of filter_tune_*``, as a new
version of the rule (same id, ``modified`` bumped): never edited in place.

When a false positive has no usable atom, pairs of atoms of that event are tried (one
selection that ANDs two fields); when even that fails, or the filter would need more
values than the bound, nothing is proposed and the reason says which events and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import combinations
from typing import Any

import yaml

#: Fields a filter may name, most preferred first: the process identity an engineer
#: would except (parent, image), then the user, command lines, targets, script context.
#: Event ids, GUIDs, pids and times are never candidates: they never recur.
DEFAULT_FIELDS: tuple[str, ...] = (
    "ParentImage",
    "Image",
    "OriginalFileName",
    "User",
    "ParentCommandLine",
    "CommandLine",
    "SourceImage",
    "TargetImage",
    "ImageLoaded",
    "TargetFilename",
    "TargetObject",
    "QueryName",
    "DestinationHostname",
    "ServiceName",
    "ServiceFileName",
    "ContextInfo",
    "HostApplication",
    "Payload",
)
#: Fields whose values are command lines: their first tokens are prefix candidates.
PREFIX_FIELDS = frozenset({"CommandLine", "ParentCommandLine", "HostApplication", "Payload"})
#: ``key = value`` lines of multi-line texts whose key names something volatile (a version,
#: a sequence number, a session id): never a good exception.
VOLATILE_LINE_KEY = re.compile(r"(version|\bid\b|sequence|number|time)", re.IGNORECASE)
#: Preferred ``key = value`` line keys (PowerShell's ContextInfo), most preferred first.
PREFERRED_LINE_KEYS = ("host application", "command path", "script name", "user")
OP_RANK = {"eq": 0, "startswith": 1, "contains": 2}
MODIFIER = {"eq": "", "startswith": "|startswith", "contains": "|contains"}
#: Lines of a multi-line value that are looked at (ContextInfo has about 15).
MAX_LINES = 50
#: Tokens of a command line tried as prefixes.
MAX_PREFIX_TOKENS = 3
SELECTION_PREFIX = "filter_tune_"


class NotSeparable(ValueError):
    """No bounded filter removes the false positives without removing a true positive."""


@dataclass(frozen=True, order=True)
class Atom:
    """One field test, case-insensitive like Sigma's default matching."""

    field: str
    op: str  # eq | startswith | contains
    value: str

    def matches(self, event: Mapping[str, Any]) -> bool:
        got = field_value(event, self.field)
        if got is None:
            return False
        got, want = got.lower(), self.value.lower()
        if self.op == "eq":
            return got == want
        if self.op == "startswith":
            return got.startswith(want)
        return want in got

    def describe(self) -> str:
        return f"{self.field}{MODIFIER[self.op]}: {self.value!r}"


@dataclass(frozen=True)
class Selection:
    """A Sigma selection: every (field, op) item must hold (AND); an item's values are
    alternatives (OR)."""

    name: str
    items: tuple[tuple[str, str, tuple[str, ...]], ...]
    covers: int = 0  # false positives it removes (counted in the order chosen)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return all(
            any(Atom(f, op, v).matches(event) for v in values) for f, op, values in self.items
        )

    def to_sigma(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f, op, values in self.items:
            escaped = [sigma_escape(v) for v in values]
            out[f"{f}{MODIFIER[op]}"] = escaped[0] if len(escaped) == 1 else escaped
        return out

    @property
    def values(self) -> int:
        return sum(len(v) for _, _, v in self.items)


@dataclass
class Proposal:
    selections: list[Selection]
    false_positives: int
    true_positives: int
    covered: int
    notes: list[str] = field(default_factory=list)

    def filter_yaml(self) -> str:
        """The selections as Sigma YAML (the ``detection:`` entries to add)."""
        doc = {s.name: s.to_sigma() for s in self.selections}
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


def sigma_escape(value: str) -> str:
    """``value`` as a Sigma string that matches it literally: ``*`` and ``?`` are
    wildcards, and a backslash escapes only ``*``, ``?`` and ``\\`` (so ``C:\\Windows``
    stays as written, but a backslash before one of those three is doubled)."""
    out: list[str] = []
    for i, c in enumerate(value):
        if c in "*?":
            out.append("\\" + c)
        elif c == "\\":
            nxt = value[i + 1] if i + 1 < len(value) else ""
            out.append("\\\\" if nxt in ("*", "?", "\\") else "\\")
        else:
            out.append(c)
    return "".join(out)


def field_value(event: Mapping[str, Any], name: str) -> str | None:
    """A field of a schema-form event: a column, else from ``extra`` (as the engine
    resolves a Sigma field the event model does not declare)."""
    value = event.get(name)
    if value is None:
        extra = event.get("extra")
        if isinstance(extra, Mapping):
            value = extra.get(name)
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text if text.strip() else None


def _line_key(line: str) -> str:
    return line.split("=", 1)[0].strip().lower() if "=" in line else ""


def atoms_of(event: Mapping[str, Any], fields: Sequence[str], max_chars: int) -> set[Atom]:
    """The candidate atoms one event offers."""
    found: set[Atom] = set()
    for name in fields:
        value = field_value(event, name)
        if value is None:
            continue
        if "\n" in value:
            for line in value.splitlines()[:MAX_LINES]:
                line = line.strip()
                key = _line_key(line)
                if len(line) < 4 or len(line) > max_chars or VOLATILE_LINE_KEY.search(key):
                    continue
                if key and line.endswith("="):  # an empty value
                    continue
                found.add(Atom(name, "contains", line))
            continue
        if len(value) <= max_chars:
            found.add(Atom(name, "eq", value))
        if name in PREFIX_FIELDS:
            tokens = value.split(" ")
            for n in range(1, min(MAX_PREFIX_TOKENS, len(tokens) - 1) + 1):
                prefix = " ".join(tokens[:n]).rstrip()
                if 3 <= len(prefix) <= max_chars and prefix != value:
                    found.add(Atom(name, "startswith", prefix + " "))
    return found


def _rank(atom: Atom, fields: Sequence[str]) -> tuple[int, int, int, int]:
    """Smaller is preferred among atoms covering as many false positives."""
    key = _line_key(atom.value) if atom.op == "contains" else ""
    line_rank = PREFERRED_LINE_KEYS.index(key) if key in PREFERRED_LINE_KEYS else 9
    return (fields.index(atom.field), line_rank, OP_RANK[atom.op], -len(atom.value))


def propose(
    false_positives: Sequence[Mapping[str, Any]],
    true_positives: Sequence[Mapping[str, Any]],
    *,
    fields: Sequence[str] = DEFAULT_FIELDS,
    max_values: int = 10,
    max_chars: int = 200,
) -> Proposal:
    """The smallest filter (greedy) that matches every false positive and no true
    positive, at most ``max_values`` values of at most ``max_chars`` characters.
    Raises NotSeparable with the reason when there is none."""
    fields = list(dict.fromkeys(fields))
    if not false_positives:
        raise NotSeparable("no false positives to tune away: close findings as false_positive")
    atoms_by_fp = [atoms_of(e, fields, max_chars) for e in false_positives]
    candidates = set().union(*atoms_by_fp)
    safe = {a for a in candidates if not any(a.matches(tp) for tp in true_positives)}
    cover = {a: {i for i, e in enumerate(false_positives) if a.matches(e)} for a in safe}
    remaining = set(range(len(false_positives)))
    chosen: list[tuple[Atom, int]] = []
    while remaining and cover:
        best = min(cover, key=lambda a: (-len(cover[a] & remaining), _rank(a, fields), a))
        gained = cover[best] & remaining
        if not gained:
            break
        chosen.append((best, len(gained)))
        remaining -= gained
        del cover[best]
    pairs: list[tuple[tuple[Atom, Atom], int]] = []
    while remaining:
        first = min(remaining)
        pair = _best_pair(first, atoms_by_fp[first], false_positives, true_positives, remaining)
        if pair is None:
            raise NotSeparable(_why_not(first, false_positives, true_positives, fields, remaining))
        gained = {i for i in remaining if all(a.matches(false_positives[i]) for a in pair)}
        pairs.append((pair, len(gained)))
        remaining -= gained
    selections = _group(chosen, pairs)
    used = sum(s.values for s in selections)
    if used > max_values:
        raise NotSeparable(
            f"the {len(false_positives)} false positives need {used} filter values, more than "
            f"--max-values {max_values}: they are too diverse for one exception; tune a "
            "smaller set of closed findings, raise the bound, or write the filter by hand"
        )
    return Proposal(selections, len(false_positives), len(true_positives), len(false_positives))


def _best_pair(
    index: int,
    atoms: set[Atom],
    fps: Sequence[Mapping[str, Any]],
    tps: Sequence[Mapping[str, Any]],
    remaining: set[int],
) -> tuple[Atom, Atom] | None:
    """Two atoms of false positive ``index`` (different fields) that no true positive
    matches together, covering the most remaining false positives."""
    best: tuple[int, tuple[Atom, Atom]] | None = None
    for a, b in combinations(sorted(atoms), 2):
        if a.field == b.field or any(a.matches(t) and b.matches(t) for t in tps):
            continue
        n = sum(1 for i in remaining if a.matches(fps[i]) and b.matches(fps[i]))
        if best is None or n > best[0]:
            best = (n, (a, b))
    return None if best is None else best[1]


def _why_not(
    index: int,
    fps: Sequence[Mapping[str, Any]],
    tps: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    remaining: set[int],
) -> str:
    event = fps[index]
    shared = []
    for name in fields:
        value = field_value(event, name)
        if value is None:
            continue
        twin = next((t for t in tps if field_value(t, name) == value), None)
        if twin is not None:
            shared.append(f"{name}={value[:80]!r} (also true positive {twin.get('event_id')})")
    detail = "; ".join(shared[:4]) or f"it has none of the fields {', '.join(fields[:6])} …"
    return (
        f"false positives and true positives are not separable: {len(remaining)} of "
        f"{len(fps)} false positives (first: event {event.get('event_id')}) share every "
        f"candidate value with a true positive: {detail}. Check the verdicts, or pass "
        "--field to consider other fields"
    )


def _group(
    chosen: Sequence[tuple[Atom, int]], pairs: Sequence[tuple[tuple[Atom, Atom], int]]
) -> list[Selection]:
    """One selection per (field, op) of single atoms (values OR-ed), one per pair."""
    grouped: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for atom, n in chosen:
        grouped.setdefault((atom.field, atom.op), []).append((atom.value, n))
    out: list[Selection] = []
    for (name, op), values in grouped.items():
        out.append(
            Selection(
                f"{SELECTION_PREFIX}{len(out) + 1}",
                ((name, op, tuple(sorted((v for v, _ in values), key=str.lower))),),
                sum(n for _, n in values),
            )
        )
    for (a, b), n in pairs:
        out.append(
            Selection(
                f"{SELECTION_PREFIX}{len(out) + 1}",
                ((a.field, a.op, (a.value,)), (b.field, b.op, (b.value,))),
                n,
            )
        )
    return out


# --- the new rule version -----------------------------------------------------------------


class TuneError(ValueError):
    """The rule file cannot take a filter (several documents, no detection, …)."""


def tuned_rule_yaml(
    original: str,
    proposal: Proposal,
    *,
    today: date | None = None,
    comment: str | None = None,
) -> str:
    """The rule's next version: the filter selections added, the condition excluding
    them, ``modified`` set to ``today``; id, title and everything else kept."""
    docs = [d for d in yaml.safe_load_all(original) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise TuneError("only a file holding exactly one Sigma rule can be tuned")
    rule = docs[0]
    detection = rule.get("detection")
    if not isinstance(detection, dict) or "condition" not in detection:
        raise TuneError("the rule has no detection condition")
    existing = {k for k in detection if str(k).startswith(SELECTION_PREFIX)}
    renamed: list[Selection] = []
    n = 1
    for s in proposal.selections:
        while f"{SELECTION_PREFIX}{n}" in existing:
            n += 1
        renamed.append(Selection(f"{SELECTION_PREFIX}{n}", s.items, s.covers))
        existing.add(f"{SELECTION_PREFIX}{n}")
    condition = detection.pop("condition")
    for s in renamed:
        detection[s.name] = s.to_sigma()
    detection["condition"] = _exclude(condition)
    rule["modified"] = today or date.today()
    body = yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=1000)
    header = "".join(f"# {line}\n" for line in (comment or "").splitlines())
    return header + body


def _exclude(condition: Any) -> Any:
    clause = f"1 of {SELECTION_PREFIX}*"
    if isinstance(condition, list):
        return [_exclude(c) for c in condition]
    text = str(condition)
    if re.search(rf"not\s+1\s+of\s+{SELECTION_PREFIX}\*", text):
        return text  # already excludes every filter_tune_N: the new ones included
    return f"({text}) and not {clause}"


def describe_events(events: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> list[str]:
    """Short one-line views of events for a report (the first filter-relevant field)."""
    out = []
    for e in events:
        shown = next(
            (f"{f}={v[:100]!r}" for f in fields if (v := field_value(e, f)) and "\n" not in v),
            "",
        )
        out.append(f"{e.get('host', '')} {e.get('event_id', '')} {shown}".strip())
    return out


# --- verification through the engine -----------------------------------------------------


@dataclass
class EngineCheck:
    """How the original and the tuned rule match the verdict events, in the engine the
    job runs (``detections.engine.apply.match_events``)."""

    fp_before: int
    fp_after: int
    tp_before: int
    tp_after: int

    @property
    def ok(self) -> bool:
        return self.fp_after == 0 and self.tp_after == self.tp_before


def _matching(text: str, rule_id: str, events: Sequence[Mapping[str, Any]], config: Any) -> int:
    from detections.compiler.plan import plan_rules
    from detections.compiler.sigma_to_ir import compile_yaml
    from detections.engine.apply import match_events

    kwargs = {} if config is None else {"config": config}
    rules, rejections = compile_yaml(text, **kwargs)
    plan = plan_rules(rules, rejections, allow_unknown_fields=True)
    index = next((p.index for p in plan.rules if str(p.rule.id) == rule_id), None)
    if index is None:
        reasons = "; ".join(f"{r.reason} {r.message}" for r in plan.rejections)
        raise TuneError(f"rule {rule_id} does not compile: {reasons or 'not in the file'}")
    if not events:
        return 0
    return len({e for e, r in match_events(plan, [dict(e) for e in events]) if r == index})


def engine_check(
    original: str,
    tuned: str,
    rule_id: str,
    false_positives: Sequence[Mapping[str, Any]],
    true_positives: Sequence[Mapping[str, Any]],
    config: Any = None,
) -> EngineCheck:
    """Run both versions over the verdict events: the tuned one must match no false
    positive and every true positive the original matched."""
    return EngineCheck(
        fp_before=_matching(original, rule_id, false_positives, config),
        fp_after=_matching(tuned, rule_id, false_positives, config),
        tp_before=_matching(original, rule_id, true_positives, config),
        tp_after=_matching(tuned, rule_id, true_positives, config),
    )
