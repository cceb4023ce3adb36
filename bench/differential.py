#!/usr/bin/env python
"""Differential check of the Sigma engine: Sigstream's Spark code path against rsigma.

Why: the compiler's unit and semantics tests pin the cases someone thought of; running an
independent Sigma evaluator (rsigma, a Rust implementation: ``cargo install rsigma``) over
the same real events and the same rules finds the cases nobody thought of. Every
(rule, event) pair on which the two disagree is either a Sigstream bug (fix it, pin it
with a unit test) or explained in ``bench/differential_known.yml`` with the reason.

What each side runs, and why the comparison is fair:

* **Events**: OTRF datasets (default ``../shared/data/otrf``) read with the project's own
  adapters (``ingest.sources.iter_items``), so both evaluators see the same schema events.
* **Rules**: the detection plan the job would run (``detections.compiler.plan.load_plan``
  over ``detections.content.defaults.default_rule_paths``). Rules the plan rejects
  (logsource not collected, fields the schema lacks, unresolved placeholders, ...) are run
  by neither side. rsigma reads the original YAML files, not Sigstream's IR.
* **Sigstream**: the job's code path in batch, without Kafka: each event's wire JSON
  (``ingest.producer.encode_event``) goes through ``detections.stream.parse.parse_records`` and
  ``valid_events``, then ``detections.engine.apply.detect`` on a local Spark session built by
  ``detections.stream.spark_session.build_session``.
* **rsigma**: each event as one flat JSON object of Sigma field names: the typed fields,
  ``extra`` merged in (typed fields win, as ``field_source`` resolves them), and the Windows
  header ``EventID`` / ``Channel`` / ``Provider_Name``. The event's position is passed as
  the integer field ``__n`` (rsigma's keyword search only reads strings, and no rule names
  it) and read back from ``--include-event``.
* **Logsources**: rsigma knows nothing of our channel -> service mapping, and its
  ``--logsource-routing`` is fail-open (an event without a ``category`` field would be
  tested by every category rule). So rsigma runs once per route of the plan, with only
  that route's rules, over only the events the route accepts (``route_accepts`` below, the
  Python form of ``detections.engine.apply.route_condition``). Routing is therefore not under
  test; if the two ever drift, the drift shows up as disagreements.
* **Semantics cases**: the corpus only exercises what its events and rules happen to
  contain, so the cases of ``tests/integration/test_sigma_semantics_spark.py`` (each
  pinned there on the real Spark code path) also go through rsigma; where rsigma answers
  differently the allow-list must say why.

Output: counts, then every disagreement grouped by rule with a sample event's fields
(those the rule reads), then the semantics cases rsigma answers differently. Exit status
0 when every disagreement is explained by an entry of the allow-list, 1 otherwise, and
2 when the check could not run.

    python bench/differential.py                     # all OTRF events, default rules
    python bench/differential.py --limit 20000       # a quick sample
    python bench/differential.py --cases-only        # seconds, no Spark
    python bench/differential.py --rules detections/rules --events some/dataset.zip
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and bench/ingest.py would
# shadow the project's ingest package: look the project up from its root instead.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from common.settings import PROJECT_ROOT, Settings
from detections.compiler import ir
from detections.compiler.logsources import Route
from detections.compiler.plan import (
    DetectionPlan,
    PlannedRule,
    load_placeholders,
    load_plan,
    plan_rules,
)
from ingest.producer import encode_event
from ingest.sources import iter_items
from schemas.events import Envelope

KNOWN_FILE = Path(__file__).with_name("differential_known.yml")
HEADER_FIELDS = ("EventID", "Channel", "Provider_Name")
#: The event's position in the run, the key that maps rsigma's output back to events.
POSITION_FIELD = "__n"
SIGSTREAM_ONLY = "sigstream_only"
RSIGMA_ONLY = "rsigma_only"

_STARTED = time.monotonic()


class CannotRun(Exception):
    """The check could not run (exit status 2), as opposed to finding disagreements."""


def progress(message: str) -> None:
    """A timestamped line on stderr, so the long steps show they are alive."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- events ------------------------------------------------------------------------------


@dataclass
class Corpus:
    """The events of one run, kept as the two wire forms and a little routing data."""

    event_ids: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    #: (product, event_type, service) per event, what routing looks at.
    keys: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: The flat Sigma-field JSON rsigma reads, one line per event.
    flat: list[str] = field(default_factory=list)
    rejected: int = 0

    def __len__(self) -> int:
        return len(self.event_ids)


def sigma_fields(event: Envelope) -> dict[str, Any]:
    """An event as Sigma sees it: one flat object of Sigma field names (no envelope)."""
    envelope = set(Envelope.model_fields) | {"event_type"}
    typed = {k: v for k, v in event.model_dump(exclude_none=True).items() if k not in envelope}
    header = {h: getattr(event, h) for h in HEADER_FIELDS if getattr(event, h) is not None}
    return {**event.extra, **typed, **header}


def load_corpus(paths: Sequence[Path], limit: int | None, events_file: Path) -> Corpus:
    """Read events with the project's adapters; write their wire JSON for Spark."""
    corpus = Corpus()
    with events_file.open("wb") as out:
        for item in iter_items(paths):
            if item.event is None:
                corpus.rejected += 1
                continue
            event = item.event
            n = len(corpus)
            corpus.event_ids.append(event.event_id)
            corpus.origins.append(item.origin)
            ls = event.logsource
            event_type = str(type(event).model_fields["event_type"].default)
            corpus.keys.append((ls.product, event_type, ls.service))
            flat = sigma_fields(event)
            flat[POSITION_FIELD] = n
            corpus.flat.append(json.dumps(flat, ensure_ascii=False))
            out.write(encode_event(event) + b"\n")
            if (n + 1) % 50_000 == 0:
                progress(f"  read {n + 1:,} events")
            if limit is not None and n + 1 >= limit:
                break
    return corpus


def route_accepts(route: Route, key: tuple[str, str, str | None]) -> bool:
    """Whether events with this (product, event_type, service) belong to ``route``:
    ``detections.engine.apply.route_condition`` in Python."""
    product, event_type, service = key
    if route.product and (product or "").lower() != route.product:
        return False
    if route.event_types and event_type not in route.event_types:
        return False
    return not (route.service and (service or "").lower() != route.service)


# --- Sigstream (Spark) ----------------------------------------------------------------------


def sigstream_matches(
    plan: DetectionPlan, events_file: Path, corpus: Corpus
) -> tuple[set[tuple[str, int]], dict[str, str]]:
    """(rule id, event position) pairs from the job's parse + detect code path in Spark,
    and the rules the engine refused to compile (id -> reason)."""
    from pyspark.sql import functions as F

    from detections.engine.apply import compile_matcher, detect
    from detections.stream.parse import parse_records, valid_events
    from detections.stream.spark_session import build_session

    progress("starting Spark")
    spark = build_session(
        Settings(),
        app_name="sigstream-differential",
        extra_conf={"spark.sql.shuffle.partitions": "2", "spark.ui.showConsoleProgress": "false"},
    )
    try:
        records = spark.read.text(str(events_file)).select(
            F.lit(None).cast("binary").alias("key"),
            F.col("value"),
            F.lit("differential").alias("topic"),
            F.lit(0).alias("partition"),
            F.monotonically_increasing_id().alias("offset"),
        )
        parsed = parse_records(records)
        bad = parsed.where(F.col("reject_reason").isNotNull()).count()
        if bad:
            raise CannotRun(f"Spark rejected {bad} events the adapters accepted")
        events = valid_events(parsed)
        progress(f"compiling {len(plan.rules):,} rules for the engine")
        refused = compile_matcher(plan).errors
        progress(f"evaluating {len(corpus):,} events in Spark")
        rows = detect(events, plan, columns=["event_id"]).collect()
    finally:
        spark.stop()
    position = {event_id: n for n, event_id in enumerate(corpus.event_ids)}
    rule_id = {p.index: str(p.rule.id) for p in plan.rules}
    quarantined = {rule_id[i]: reason for i, reason in refused.items()}
    return {(rule_id[r.rule_index], position[r.event_id]) for r in rows}, quarantined


# --- rsigma ----------------------------------------------------------------------------------


def find_rsigma(explicit: str | None) -> str:
    candidates = [explicit] if explicit else ["rsigma", str(Path.home() / ".cargo/bin/rsigma")]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise CannotRun(
        "rsigma not found; install it with `cargo install rsigma` (or pass --rsigma PATH)"
    )


def rsigma_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    text = out.stdout.strip() or out.stderr.strip()
    return text.splitlines()[0] if text else "unknown version"


def _filter_files(paths: Iterable[Path]) -> list[Path]:
    """Sigma meta-filter files under the rule paths: rsigma must see them too."""
    from detections.compiler.sigma_to_ir import rule_files

    return [
        p
        for p in rule_files(paths)
        if re.search(r"^filter:", p.read_text(encoding="utf-8", errors="replace"), re.M)
    ]


def _rule_dir(root: Path, rules: Sequence[PlannedRule], filters: Sequence[Path]) -> Path:
    """A folder of symlinks to the route's rule files (and every meta filter)."""
    folder = root / f"route{rules[0].index}"
    folder.mkdir()
    for n, source in enumerate(sorted({Path(p.rule.path or "") for p in rules} | set(filters))):
        (folder / f"{n:05d}_{source.name}").symlink_to(source.resolve())
    return folder


def rsigma_matches(
    binary: str, plan: DetectionPlan, corpus: Corpus, work: Path, rule_paths: Sequence[Path]
) -> set[tuple[str, int]]:
    """(rule id, event position) pairs from rsigma, one run per route of the plan."""
    matches: set[tuple[str, int]] = set()
    filters = _filter_files(rule_paths)
    work = work / "rsigma"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    by_route = [(route, [plan.rules[i] for i in ix]) for route, ix in plan.routes.items()]
    for number, (route, rules) in enumerate(by_route, start=1):
        members = [n for n, key in enumerate(corpus.keys) if route_accepts(route, key)]
        if not members:
            continue
        wanted = {str(p.rule.id) for p in rules}
        folder = _rule_dir(work, rules, filters)
        events_file = work / "route_events.jsonl"
        events_file.write_text("".join(corpus.flat[n] + "\n" for n in members), "utf-8")
        progress(
            f"  rsigma {number}/{len(by_route)} {route.describe()}: "
            f"{len(rules)} rules x {len(members):,} events"
        )
        try:
            found = _run_rsigma(binary, folder, events_file, wanted, work / "rsigma.stderr")
        except RsigmaError as exc:
            raise CannotRun(f"route {route.describe()}: {exc}") from exc
        matches |= {(rule_id, n) for rule_id, n in found if rule_id is not None}
    return matches


class RsigmaError(RuntimeError):
    """rsigma failed (most often: it cannot compile one of the rules it was given)."""


def _run_rsigma(
    binary: str, rules: Path, events: Path, wanted: set[str] | None, stderr_file: Path
) -> set[tuple[str | None, int]]:
    """(rule id, event position) of every detection rsigma reports; ``wanted`` limits the
    rules (a rule file may hold rules of other routes)."""
    command = [
        *(["nice", "-n", "10"] if shutil.which("nice") else []),
        binary,
        "engine",
        "eval",
        "--rules",
        str(rules),
        "--event",
        f"@{events}",
        "--include-event",
        "--output-format",
        "ndjson",
    ]
    found: set[tuple[str | None, int]] = set()
    with stderr_file.open("w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            result = json.loads(line)
            if "matched_fields" not in result:  # a correlation result
                continue
            rule_id = result.get("rule_id")
            if wanted is None or rule_id in wanted:
                found.add((rule_id, int(result["event"][POSITION_FIELD])))
        code = proc.wait()
    if code != 0:
        raise RsigmaError(f"rsigma exited with {code}: {stderr_file.read_text().strip()[-1000:]}")
    return found


def rsigma_refused(binary: str, rule_paths: Sequence[Path]) -> dict[str, str]:
    """Rules rsigma cannot compile (id -> message). One bad rule fails a whole rsigma run,
    so these are left out of its rule folders and out of the comparison."""
    refused: dict[str, str] = {}
    for path in rule_paths:
        out = subprocess.run(
            [binary, "rule", "validate", str(path), "--output-format", "ndjson"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in out.stdout.splitlines():
            result = json.loads(line) if line.startswith("{") else {}
            for match in re.finditer(r"^([0-9a-fA-F-]{36}): (.*)$", result.get("errors", ""), re.M):
                refused[match.group(1)] = match.group(2)
    return refused


# --- comparison ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Explained disagreements, each with its reason (``differential_known.yml``)."""

    #: (rule id, direction) -> why the two evaluators disagree on that rule's events.
    corpus: dict[tuple[str, str], str]
    #: semantics test case name -> why rsigma's answer differs from the pinned one.
    cases: dict[str, str]


def load_allow_list(path: Path) -> AllowList:
    doc = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    corpus: dict[tuple[str, str], str] = {}
    cases: dict[str, str] = {}
    for entry in [*(doc.get("corpus") or []), *(doc.get("cases") or [])]:
        reason = str(entry.get("reason") or "").strip()
        if not reason:
            raise CannotRun(f"{path}: every entry needs a reason: {entry!r}")
        if "case" in entry:
            cases[str(entry["case"])] = reason
        elif entry.get("direction") in (SIGSTREAM_ONLY, RSIGMA_ONLY) and "rule" in entry:
            corpus[(str(entry["rule"]), entry["direction"])] = reason
        else:
            raise CannotRun(
                f"{path}: an entry names `case`, or `rule` and `direction` "
                f"({SIGSTREAM_ONLY} or {RSIGMA_ONLY}): {entry!r}"
            )
    return AllowList(corpus, cases)


def _sample_fields(rule: PlannedRule, flat: dict[str, Any]) -> dict[str, Any]:
    """The fields of an event that the rule reads (keyword rules: the whole event)."""
    names = ir.fields(rule.rule.ir)
    keyword = any(p.field is None for p in ir.iter_preds(rule.rule.ir))
    shown = {k: v for k, v in flat.items() if k != POSITION_FIELD and (keyword or k in names)}
    for name in sorted(names - set(flat)):
        shown[name] = None
    return {
        k: (v[:300] + "…" if isinstance(v, str) and len(v) > 300 else v) for k, v in shown.items()
    }


def report(
    plan: DetectionPlan,
    corpus: Corpus,
    ours: set[tuple[str, int]],
    theirs: set[tuple[str, int]],
    known: AllowList,
) -> int:
    """Print the comparison; return the number of unexplained disagreements."""
    by_id = {str(p.rule.id): p for p in plan.rules}
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for rule_id, n in ours - theirs:
        groups[(rule_id, SIGSTREAM_ONLY)].append(n)
    for rule_id, n in theirs - ours:
        groups[(rule_id, RSIGMA_ONLY)].append(n)
    explained = known.corpus

    print(f"events:               {len(corpus):,} (adapter rejects: {corpus.rejected:,})")
    print(f"rules:                {len(plan.rules):,} planned, {len(plan.routes)} routes")
    print(f"matches sigstream:    {len(ours):,} pairs, {len({r for r, _ in ours})} rules")
    print(f"matches rsigma:       {len(theirs):,} pairs, {len({r for r, _ in theirs})} rules")
    print(f"agreements:           {len(ours & theirs):,}")
    print(f"sigstream only:       {len(ours - theirs):,}")
    print(f"rsigma only:          {len(theirs - ours):,}")

    unexplained = 0
    for (rule_id, direction), positions in sorted(groups.items(), key=lambda kv: kv[0]):
        planned = by_id[rule_id]
        reason = explained.get((rule_id, direction))
        status = "EXPLAINED" if reason else "UNEXPLAINED"
        if not reason:
            unexplained += len(positions)
        path = Path(planned.rule.path or "?").resolve()
        inside = path.is_relative_to(PROJECT_ROOT.parent)
        shown = os.path.relpath(path, PROJECT_ROOT) if inside else str(path)
        print(f"\n{status} {direction} {len(positions)} event(s): {rule_id} {planned.rule.title}")
        print(f"  rule: {shown}  route: {planned.route.describe()}")
        if reason:
            print(f"  reason: {reason}")
        first = min(positions)
        sample = _sample_fields(planned, json.loads(corpus.flat[first]))
        print(f"  sample: {corpus.origins[first]}")
        print(f"  fields: {json.dumps(sample, ensure_ascii=False)}")
    for rule_id, direction in sorted(set(explained) - set(groups)):
        print(f"\nnote: allow-list entry not seen in this run: {rule_id} {direction}")
    print(
        f"\n{len(groups)} disagreeing (rule, direction) group(s), "
        f"{unexplained:,} unexplained pair(s)"
    )
    return unexplained


# --- semantics cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """One semantics test case: the matches Sigstream is pinned to, and rsigma's."""

    name: str
    detection: str
    events: list[dict[str, Any]]
    expected: list[int]
    rsigma: list[int] | None  # None: rsigma refused the rule
    error: str = ""


def rsigma_cases(binary: str, work: Path) -> list[CaseResult]:
    """Run the semantics cases (tests/sigma_cases.py) through rsigma.

    tests/unit/test_engine_semantics.py asserts each case's expected matches on the
    engine, so while it is green, "rsigma differs from the expectation" means "rsigma
    differs from Sigstream". The cases reach semantics the corpus may never exercise
    (newlines under wildcards, IPv6 zones, base64 offsets ...). Numbers stay numbers.
    """
    from tests.sigma_cases import CASES

    def typed(value: Any) -> Any:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        return str(value).lower() if isinstance(value, bool) else str(value)

    folder = work / "cases"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results: list[CaseResult] = []
    for name, detection, events, expected in CASES:
        rule = folder / f"{name}.yml"
        body = textwrap.indent(textwrap.dedent(detection).strip(), "    ")
        rule.write_text(f"title: t\nlogsource:\n    category: test\ndetection:\n{body}\n")
        flat = []
        for n, event in enumerate(events):
            row = {k: typed(v) for k, v in event.items()}
            flat.append({**{k: v for k, v in row.items() if v is not None}, POSITION_FIELD: n})
        events_file = folder / f"{name}.jsonl"
        events_file.write_text("".join(json.dumps(e) + "\n" for e in flat), "utf-8")
        try:
            found = _run_rsigma(binary, rule, events_file, None, folder / "rsigma.stderr")
        except RsigmaError as exc:
            results.append(CaseResult(name, detection, events, expected, None, str(exc)))
            continue
        got = sorted(n for _, n in found)
        results.append(CaseResult(name, detection, events, sorted(expected), got))
    return results


def report_cases(results: Sequence[CaseResult], known: AllowList) -> int:
    """Print the cases where rsigma differs; return how many are unexplained."""
    differing = [r for r in results if r.rsigma != r.expected]
    print(
        f"\nsemantics cases:      {len(results)}, rsigma agrees on {len(results) - len(differing)}"
    )
    unexplained = 0
    for case in differing:
        reason = known.cases.get(case.name)
        error = " ".join(case.error.split())[:200]
        answer = f"refused the rule ({error})" if case.rsigma is None else case.rsigma
        print(f"\n{'EXPLAINED' if reason else 'UNEXPLAINED'} case {case.name}:", end=" ")
        print(f"sigstream {case.expected}, rsigma {answer}")
        if reason:  # the details are in the allow-list and the test
            print(f"  reason: {reason}")
            continue
        unexplained += 1
        print(textwrap.indent(case.detection.strip(), "  | "))
        for n, event in enumerate(case.events):
            if case.rsigma is not None and (n in case.expected) != (n in case.rsigma):
                print(f"  event {n}: {json.dumps(event, ensure_ascii=False)[:300]}")
    for name in sorted(set(known.cases) - {r.name for r in differing}):
        print(f"\nnote: allow-listed case now agrees (or is gone): {name}")
    print(f"\n{len(differing)} differing case(s), {unexplained} unexplained")
    return unexplained


# --- main ----------------------------------------------------------------------------------


def default_rule_paths() -> list[Path]:
    from detections.content.defaults import default_rule_paths as paths

    return paths(Settings())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = (__doc__ or "").strip()
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog="\n\n".join(doc.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        type=Path,
        default=None,
        metavar="DIR",
        help="Sigma rule files or folders (default: what `sigstream detect` loads)",
    )
    parser.add_argument(
        "--events",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="datasets to read (default: ../shared/data/otrf)",
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after N events")
    parser.add_argument("--rsigma", default=None, help="path of the rsigma binary")
    parser.add_argument(
        "--allow-unknown-fields",
        action="store_true",
        help="also run rules naming fields the schema lacks (the job refuses them)",
    )
    parser.add_argument(
        "--known",
        type=Path,
        default=KNOWN_FILE,
        help=f"allow-list of explained disagreements (default: {KNOWN_FILE.name})",
    )
    parser.add_argument(
        "--no-cases", action="store_true", help="skip the semantics test cases through rsigma"
    )
    parser.add_argument(
        "--cases-only", action="store_true", help="only the semantics cases (seconds, no Spark)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the work files (events, rule folders) here"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except CannotRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    binary = find_rsigma(args.rsigma)
    known = load_allow_list(args.known)
    progress(f"rsigma: {rsigma_version(binary)} ({binary})")
    with tempfile.TemporaryDirectory(prefix="sigstream-differential-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = [] if args.no_cases else rsigma_cases(binary, work)
        unexplained = 0 if args.cases_only else run_corpus(args, settings, binary, work, known)
    if cases:
        unexplained += report_cases(cases, known)
    return 1 if unexplained else 0


def run_corpus(
    args: argparse.Namespace, settings: Settings, binary: str, work: Path, known: AllowList
) -> int:
    """The corpus comparison; returns the number of unexplained disagreements."""
    rule_paths = args.rules or default_rule_paths()
    event_paths = args.events or [settings.shared_data / "otrf"]
    missing = [p for p in [*rule_paths, *event_paths] if not p.exists()]
    if missing:
        raise CannotRun(f"not found: {', '.join(map(str, missing))}")

    progress(f"compiling rules: {', '.join(map(str, rule_paths))}")
    plan = load_plan(
        rule_paths,
        allow_unknown_fields=args.allow_unknown_fields,
        config=load_placeholders(settings.placeholders_file),
    )
    reasons = Counter(r.reason for r in plan.rejections)
    progress(f"  {len(plan.rules):,} rules planned; not run by either side: {dict(reasons)}")
    refused = rsigma_refused(binary, rule_paths)
    if refused:
        for rule_id, message in sorted(refused.items()):
            progress(f"  rsigma cannot compile {rule_id}, left out: {message}")
        kept = [p.rule for p in plan.rules if str(p.rule.id) not in refused]
        plan = plan_rules(kept, plan.rejections, allow_unknown_fields=args.allow_unknown_fields)

    progress(f"reading events: {', '.join(map(str, event_paths))}")
    corpus = load_corpus(event_paths, args.limit, work / "events.jsonl")
    progress(f"  {len(corpus):,} events")

    started = time.monotonic()
    theirs = rsigma_matches(binary, plan, corpus, work, rule_paths)
    progress(f"rsigma: {len(theirs):,} matches in {time.monotonic() - started:.0f}s")

    started = time.monotonic()
    ours, quarantined = sigstream_matches(plan, work / "events.jsonl", corpus)
    progress(f"sigstream: {len(ours):,} matches in {time.monotonic() - started:.0f}s")
    if quarantined:
        progress(f"  quarantined by the engine: {quarantined}")
    return report(plan, corpus, ours, theirs, known)


if __name__ == "__main__":
    sys.exit(main())
