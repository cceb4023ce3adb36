"""``sigstream rules fp-rate`` and ``sigstream rules tune``: analysts' verdicts fed back
into the rules (docs/tuning.md).

fp-rate reads how findings were closed; tune turns the false positives of one rule into
a Sigma filter, proves it (engine over the verdict events, the rule's tests, a Spark
backtest before/after) and writes the rule's next version for the signed-bundle path.
The logic is in ``detections.content.workflow.tune`` and ``triage.store``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.settings import get_settings

console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

Tenant = Annotated[
    str | None,
    typer.Option("--tenant", envvar="SIGSTREAM_TENANT", help="Only this tenant (default: all)."),
]
Since = Annotated[
    str | None, typer.Option(help="Findings last seen since: ISO time or 15m/24h/7d ago.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _caller(tenant: str | None) -> Any:
    import getpass

    from triage.auth import Caller

    return Caller(user=getpass.getuser() or "cli", role="read-only", tenant=tenant)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


# --- fp-rate ------------------------------------------------------------------------------


def fp_rate_cmd(
    rule: Annotated[str | None, typer.Option(help="Only this rule (id or exact title).")] = None,
    since: Since = None,
    top: Annotated[int, typer.Option(min=1, max=500, help="Rules and hosts listed.")] = 50,
    hosts: Annotated[bool, typer.Option(help="Show the per-host breakdown.")] = True,
    tenant: Tenant = None,
    as_json: AsJson = False,
) -> None:
    """False-positive rate per rule and per host, from how analysts closed findings.

    fp rate = closed as false_positive / closed; noise = (false_positive + benign) / closed.
    Counts are findings (what analysts close); matches are their events.
    """
    from detections.sinks.elasticsearch import connect
    from sigstream.commands.triage import parse_when
    from triage.store import fp_rates

    s = get_settings()
    es = connect(s.es_hosts)
    try:
        rows = fp_rates(es, s.findings_index, _caller(tenant), parse_when(since), rule, top)
    finally:
        es.close()
    if as_json:
        console.print_json(json.dumps({"rules": rows}))
        return
    if not rows:
        console.print("no closed findings yet: close findings with a resolution first")
        return
    table = Table(title="False positives by rule (closed findings)")
    for col in ("rule", "host", "closed", "TP", "benign", "FP", "FP matches", "fp rate", "noise"):
        table.add_column(col, justify="left" if col in ("rule", "host") else "right")
    for r in rows:
        table.add_row(
            f"{r['rule']}\n[dim]{r['rule_id']}[/dim]",
            "[bold]all[/bold]",
            str(r["closed"]),
            str(r["true_positive"]),
            str(r["benign"]),
            str(r["false_positive"]),
            f"{r['matches']['false_positive']:,}",
            _pct(r["fp_rate"]),
            _pct(r["noise_rate"]),
        )
        for h in r["hosts"] if hosts else []:
            table.add_row(
                "",
                h["host"],
                str(h["closed"]),
                str(h["true_positive"]),
                str(h["benign"]),
                str(h["false_positive"]),
                f"{h['matches']['false_positive']:,}",
                _pct(h["fp_rate"]),
                _pct(h["noise_rate"]),
            )
    console.print(table)


# --- tune ---------------------------------------------------------------------------------


def _rule_tests(rule_file: Path, rule_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The rule's true-positive test events (schema form) and test-file errors."""
    from detections.content.workflow.events import test_event
    from detections.content.workflow.ruletests import read_tests, tests_for

    tests = tests_for(rule_file)
    if tests is None:
        return [], []
    try:
        _, docs = read_tests(tests)
    except (OSError, ValueError) as exc:
        return [], [f"{tests}: {exc}"]
    events = []
    for name, doc in docs["tp"]:
        events.append(test_event(doc, default_id=f"{rule_id[:8]}-{name}").model_dump(mode="json"))
    return events, []


def _run_tests(rule_text: str, rule_file: Path, config: Any) -> tuple[int, int, list[str]]:
    """(TP tests, TN tests, failures) of ``rule_text`` with the tests beside ``rule_file``,
    run by ``rules test``'s own runner in a scratch folder."""
    from detections.content.workflow.ruletests import run_tests, tests_for

    with tempfile.TemporaryDirectory(prefix="sigstream-tune-") as tmp:
        target = Path(tmp) / rule_file.name
        target.write_text(rule_text)
        tests = tests_for(rule_file)
        if tests is not None:
            dest = Path(tmp) / tests.name
            if tests.is_dir():
                shutil.copytree(tests, dest)
            else:
                shutil.copyfile(tests, dest)
        report = run_tests([Path(tmp)], config=config, allow_unknown_fields=True)
    failures = list(report.errors) + [f for r in report.results for f in r.failures]
    return sum(r.tp for r in report.results), sum(r.tn for r in report.results), failures


def _backtest(
    original: str, tuned: str, from_: list[Path] | None, since: str | None, archive: Path | None
) -> dict[str, Any]:
    """Matches of both versions over the events archive (or raw corpora), Spark batch."""
    from detections.compiler.plan import plan_rules
    from detections.compiler.sigma_to_ir import compile_yaml
    from detections.content.workflow.backtest import (
        archive_events,
        backtest,
        corpus_events,
        parse_since,
    )
    from detections.stream.spark_session import build_session

    s = get_settings()
    plans = [
        plan_rules(*compile_yaml(text), allow_unknown_fields=True) for text in (original, tuned)
    ]
    cutoff = parse_since(since) if since else None
    err.print(f"starting Spark ({s.spark_master}) for the backtest …")
    quiet = {} if sys.stderr.isatty() else {"spark.ui.showConsoleProgress": "false"}
    spark = build_session(s, app_name="sigstream-tune-backtest", extra_conf=quiet)
    try:
        if from_:
            events, _ = corpus_events(spark, from_, cutoff)
            source = ", ".join(map(str, from_))
        else:
            cutoff = cutoff or parse_since("7d")
            folder = archive or s.archive_dir
            events = archive_events(spark, folder, cutoff)
            source = f"{folder} since {cutoff}"
        events = events.persist()
        say = lambda m: err.print(f"  {m}", highlight=False)  # noqa: E731
        before, after = (backtest(events, p, progress=say) for p in plans)
        events.unpersist()
    finally:
        spark.stop()
    b, a = before.rules[0], after.rules[0]
    return {
        "source": source,
        "events": before.events,
        "days": before.days,
        "first": before.first,
        "last": before.last,
        "before": b.hits,
        "after": a.hits,
        "removed": b.hits - a.hits,
        "hosts_before": b.top_hosts,
        "hosts_after": a.top_hosts,
    }


def tune_cmd(
    rule: Annotated[Path, typer.Argument(help="The rule file to tune (one Sigma rule).")],
    benign: Annotated[
        bool, typer.Option("--benign", help="Also remove findings closed as benign.")
    ] = False,
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="Fields a filter may use (repeat; default: a curated list)."),
    ] = None,
    max_values: Annotated[
        int, typer.Option(min=1, max=100, help="At most this many values in the filter.")
    ] = 10,
    max_chars: Annotated[
        int, typer.Option(min=8, max=1000, help="At most this many characters per value.")
    ] = 200,
    since: Since = None,
    tenant: Tenant = None,
    backtest_since: Annotated[
        str | None,
        typer.Option(help="Backtest window: 7d, 12h, 2w or a date (archive default: 7d)."),
    ] = None,
    from_: Annotated[
        list[Path] | None,
        typer.Option("--from", help="Backtest raw corpora instead of the events archive."),
    ] = None,
    archive: Annotated[
        Path | None, typer.Option(help="Events archive (default: settings archive_dir).")
    ] = None,
    run_backtest: Annotated[
        bool, typer.Option("--backtest/--no-backtest", help="Backtest before/after with Spark.")
    ] = True,
    write: Annotated[
        Path | None,
        typer.Option(
            "--write", help="Write the tuned rule (and its tests) into this folder to commit."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a file in --write.")] = False,
    as_json: AsJson = False,
) -> None:
    """Propose a filter removing a rule's false positives, verified before it ships.

    Reads the events of the rule's findings closed as false_positive (and benign with
    --benign) and as true_positive, finds field values that cover the false positives
    and no true positive, adds them as `filter_tune_*` selections
    (`... and not 1 of filter_tune_*`) to a new version of the rule (same id, `modified`
    bumped), then checks it: the engine over the verdict events, the rule's own tests,
    and a Spark backtest before/after. Exit 1 when no safe filter exists or a check fails.
    """
    from detections.compiler.plan import plan_rules
    from detections.compiler.sigma_to_ir import compile_yaml
    from detections.content.workflow.tune import (
        DEFAULT_FIELDS,
        NotSeparable,
        TuneError,
        engine_check,
        propose,
        tuned_rule_yaml,
    )
    from detections.sinks.elasticsearch import connect
    from sigstream.commands.rules import _config
    from sigstream.commands.triage import parse_when
    from triage.store import verdict_events

    s = get_settings()
    config = _config(s)
    try:
        original = rule.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {rule}: {exc}") from exc
    plan = plan_rules(*compile_yaml(original, config, rule), allow_unknown_fields=True)
    if len(plan.rules) != 1:
        why = "; ".join(f"{r.reason} {r.message}" for r in plan.rejections) or "several rules"
        raise _fail(f"{rule}: expected exactly one compiling rule ({why})")
    info = plan.rules[0].rule
    rule_id = str(info.id)
    fp_kinds = ["false_positive", *(["benign"] if benign else [])]
    es = connect(s.es_hosts)
    try:
        when, caller = parse_when(since), _caller(tenant)
        fps = verdict_events(es, s.findings_index, caller, rule_id, fp_kinds, when)
        tps = verdict_events(es, s.findings_index, caller, rule_id, ["true_positive"], when)
    finally:
        es.close()
    test_tps, test_errors = _rule_tests(rule, rule_id)
    for e in test_errors:
        err.print(f"[yellow]tests: {escape(e)}[/yellow]")
    for name, v in (("false positive", fps), ("true positive", tps)):
        if v.truncated:
            err.print(f"[yellow]only the first {len(v.events):,} {name} matches are used[/yellow]")
    err.print(
        f"{info.title} ({rule_id}): {len(fps.events):,} false-positive matches in "
        f"{fps.findings} closed finding(s); {len(tps.events):,} true-positive matches in "
        f"{tps.findings}; {len(test_tps)} true-positive test event(s)"
    )
    fields = field or list(DEFAULT_FIELDS)
    try:
        proposal = propose(
            fps.events,
            [*tps.events, *test_tps],
            fields=fields,
            max_values=max_values,
            max_chars=max_chars,
        )
        comment = (
            f"Tuned by `sigstream rules tune`: {len(fps.events)} false-positive matches from "
            f"{fps.findings} finding(s) closed as {' or '.join(fp_kinds)} are filtered "
            "(filter_tune_*)."
        )
        tuned = tuned_rule_yaml(original, proposal, comment=comment)
        check = engine_check(original, tuned, rule_id, fps.events, [*tps.events, *test_tps], config)
    except (NotSeparable, TuneError) as exc:
        raise _fail(f"no filter proposed: {exc}", 1) from exc
    tp_tests, tn_tests, failures = _run_tests(tuned, rule, config)
    _, _, failures_before = _run_tests(original, rule, config)
    result: dict[str, Any] = {
        "rule_id": rule_id,
        "title": info.title,
        "filter": proposal.filter_yaml(),
        "selections": [
            {"name": x.name, "sigma": x.to_sigma(), "covers": x.covers} for x in proposal.selections
        ],
        "false_positives": {"matches": len(fps.events), "findings": fps.findings},
        "true_positives": {"matches": len(tps.events), "findings": tps.findings},
        "engine": check.__dict__,
        "tests": {"tp": tp_tests, "tn": tn_tests, "failures": failures},
        "tests_before": {"failures": failures_before},
    }
    if run_backtest:
        try:
            result["backtest"] = _backtest(original, tuned, from_, backtest_since, archive)
        except FileNotFoundError as exc:
            raise _fail(f"{exc} (or pass --no-backtest)") from exc
    ok = check.ok and len(failures) <= len(failures_before)
    result["ok"] = ok
    if write is not None and ok:
        result["written"] = [str(p) for p in _write(write, rule, tuned, force)]
    if as_json:
        console.print_json(json.dumps(result, default=str))
    else:
        _report(result, tuned)
    if not ok:
        raise typer.Exit(1)


def _write(folder: Path, rule: Path, tuned: str, force: bool) -> list[Path]:
    """The tuned rule (and a copy of its tests) in ``folder``; never over the source."""
    from detections.content.workflow.ruletests import tests_for

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / rule.name
    if target.resolve() == rule.resolve():
        raise _fail(f"--write {folder} would overwrite {rule}: write the new version elsewhere")
    if target.exists() and not force:
        raise _fail(f"{target} exists (use --force to replace it)")
    target.write_text(tuned, encoding="utf-8")
    written = [target]
    tests = tests_for(rule)
    if tests is not None:
        dest = folder / tests.name
        if tests.is_dir():
            shutil.copytree(tests, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(tests, dest)
        written.append(dest)
    return written


def _report(r: dict[str, Any], tuned: str) -> None:
    console.rule(f"{r['title']} ({r['rule_id']})")
    console.print(
        "[bold]Proposed filter[/bold] (added to detection:, condition "
        "`(…) and not 1 of filter_tune_*`):"
    )
    console.print(r["filter"], highlight=False, markup=False)
    for x in r["selections"]:
        console.print(f"  {x['name']} covers {x['covers']:,} false-positive match(es)")
    e = r["engine"]
    fp, tp = r["false_positives"], r["true_positives"]
    colour = "green" if e["fp_after"] == 0 else "red"
    console.print(
        f"[{colour}]false positives: {e['fp_before']:,} -> {e['fp_after']:,} matches[/{colour}] "
        f"({fp['findings']} finding(s))"
    )
    colour = "green" if e["tp_after"] == e["tp_before"] else "red"
    console.print(
        f"[{colour}]true positives kept: {e['tp_after']:,} of {e['tp_before']:,}[/{colour}] "
        f"({tp['matches']:,} matches of {tp['findings']} finding(s) plus the rule's TP tests)"
    )
    t = r["tests"]
    colour = "green" if not t["failures"] else "red"
    console.print(
        f"[{colour}]rule tests: {t['tp']} TP, {t['tn']} TN, {len(t['failures'])} failure(s)"
        f"[/{colour}] (before: {len(r['tests_before']['failures'])})"
    )
    for f in t["failures"][:10]:
        console.print(f"  {f}", highlight=False, markup=False)
    if "backtest" in r:
        b = r["backtest"]
        console.print(
            f"backtest over {b['events']:,} events ({b['source']}, {b['days']} day(s), "
            f"{b['first']} .. {b['last']}): [bold]{b['before']:,} -> {b['after']:,} matches, "
            f"{b['removed']:,} removed[/bold]",
            highlight=False,
        )
        console.print(
            "  hosts before: " + ", ".join(f"{h} {n:,}" for h, n in b["hosts_before"]),
            highlight=False,
        )
        console.print(
            "  hosts after:  " + ", ".join(f"{h} {n:,}" for h, n in b["hosts_after"]),
            highlight=False,
        )
    if not r["ok"]:
        console.print("[red]not safe to ship: nothing written[/red]")
        return
    if r.get("written"):
        folder = Path(r["written"][0]).parent
        console.print(f"wrote {', '.join(r['written'])}; ship it through a signed bundle:")
        console.print(
            f"  sigstream rules test {folder}\n"
            f"  sigstream rules bundle {folder} --out build/tuned.bundle.json\n"
            "  sigstream rules deploy build/tuned.bundle.json",
            highlight=False,
            markup=False,
        )
    else:
        console.print("pass --write DIR to write the new version (same id, modified bumped)")
