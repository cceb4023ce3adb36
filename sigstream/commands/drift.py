"""``sigstream rules drift``: which rules read fields that no sensor sends, and which fields
stopped arriving or changed type since the baseline, with the rules that read them
(docs/field-drift.md).

Reads the drift stage's documents (``detections.drift.store``), crosses them with the
plan of the rules given (default: the rules `sigstream detect` runs) in the pure
``detections.drift.report``, and prints a table or JSON. ``--set-baseline`` snapshots the
observed fields now as the baseline later drift is judged against.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.settings import get_settings

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def drift_cmd(
    rules: Annotated[
        list[Path] | None,
        typer.Option(
            "--rules",
            "-r",
            help="Rule files or folders of the plan to cross with the observed fields "
            "(repeatable). Default: the rules `sigstream detect` runs.",
        ),
    ] = None,
    route: Annotated[
        str | None,
        typer.Option(help="Only routes whose name contains this (e.g. process_creation)."),
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option(help="Only entries naming this rule (an id, or part of a title)."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="Only drifts of this sensor version (as heartbeats name it; 'unknown': "
            "sensors without a heartbeat).",
        ),
    ] = None,
    set_baseline: Annotated[
        bool,
        typer.Option(
            "--set-baseline",
            help="Snapshot the fields observed so far as the baseline drift is judged "
            "against (per tenant; the previous baseline is kept but no longer used).",
        ),
    ] = False,
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Also list rules whose routes have no traffic at all."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Field drift: rules whose fields no sensor sends; fields gone or retyped since the
    baseline, and the rules that read them. Exit code 1 when a field active rules read is
    gone."""
    from detections.content.defaults import default_rule_paths
    from detections.drift import store
    from detections.drift.report import build_report, matches_filters, rule_fields
    from detections.drift.stage import drift_config
    from detections.sinks.elasticsearch import connect

    s = get_settings()
    es = connect(s.es_hosts)
    try:
        if set_baseline:
            store.ensure_drift_index(es, s.drift_index)
            done = store.set_baseline(es, s.drift_index, time.time(), "manual", tenant)
            if not done:
                err.print("[yellow]no field observations yet: nothing to snapshot[/yellow]")
                raise typer.Exit(1)
            for name, baseline in done.items():
                err.print(f"baseline {baseline} set for tenant {name}")
            return
        states = store.search(es, s.drift_index, "route", tenant)
        tenants = {d["tenant_id"]: d for d in store.search(es, s.drift_index, "tenant", tenant)}
        baselines = store.current_baselines(es, s.drift_index, tenants, store.route_buckets(states))
    finally:
        es.close()
    from detections.compiler.plan import load_placeholders, load_plan

    plan = load_plan(rules or default_rule_paths(s), config=load_placeholders(s.placeholders_file))
    report = build_report(rule_fields(plan), states, baselines, tenants, drift_config(s))
    gone = [
        (d, r)
        for d, r in report.gone
        if matches_filters(d.route, r, route, rule) and version in (None, d.version)
    ]
    changed = [
        (d, r)
        for d, r in report.type_changed
        if matches_filters(d.route, r, route, rule) and version in (None, d.version)
    ]
    never = [
        n
        for n in report.never_seen
        if any(matches_filters(x, [n.rule], route, rule) for x in n.routes)
    ]
    silent = [r for r in report.no_traffic if matches_filters(r.route.describe(), [r], route, rule)]
    if as_json:
        out = report.to_dict()
        filtered = type(report)(gone, changed, never, silent, report.baselines).to_dict()
        out.update({k: filtered[k] for k in ("gone", "type_changed", "never_seen", "no_traffic")})
        out["observed_routes"] = len(states)
        out["rules"] = len(plan.rules)
        typer.echo(json.dumps(out, indent=2))
    else:
        _print(states, report.baselines, gone, changed, never, silent, show_all, len(plan.rules))
    if any(any(r.active for r in users) for _, users in gone):
        raise typer.Exit(1)


def _version(d: Any) -> str:
    """The drift's sensor version, and ``(vs route)`` when it was judged against the
    route's baseline across versions (the version has no baseline of its own, or one of
    fewer than ``min_events`` events)."""
    return escape(d.version) + (" (vs route)" if d.against == "route" else "")


def _titles(rules: list[Any], limit: int = 2) -> str:
    names = [escape(r.title) for r in rules[:limit]]
    more = f" (+{len(rules) - limit})" if len(rules) > limit else ""
    return ", ".join(names) + more


def _print(
    states: list[dict[str, Any]],
    baselines: dict[str, str | None],
    gone: list[Any],
    changed: list[Any],
    never: list[Any],
    silent: list[Any],
    show_all: bool,
    rule_count: int,
) -> None:
    tenants = ", ".join(f"{t}: {b or 'none yet'}" for t, b in baselines.items()) or "-"
    routes = len({(d.get("tenant_id"), d.get("route")) for d in states})
    console.print(
        f"{routes} observed routes ({len(states)} with their sensor versions), "
        f"{rule_count:,} rules; baselines: {tenants}",
        highlight=False,
    )
    if gone or changed:
        table = Table(title="Fields gone or retyped since the baseline")
        for column in ("tenant", "route", "version", "field", "drift", "still sent by", "rules"):
            table.add_column(column, no_wrap=column in ("route", "field"), overflow="fold")
        for d, users in gone:
            what = f"gone: 0 of the last {d.since:,} events (~{d.expected:,.0f} expected)"
            table.add_row(
                d.tenant,
                d.route,
                _version(d),
                d.field,
                what,
                ", ".join(d.still_sent_by) or "-",
                f"{len(users)}: {_titles(users)}",
            )
        for d, users in changed:
            what = f"type {'/'.join(d.before)} -> {'/'.join(d.after)}"
            table.add_row(
                d.tenant,
                d.route,
                _version(d),
                d.field,
                what,
                "-",
                f"{len(users)}: {_titles(users)}",
            )
        console.print(table)
    else:
        console.print("no field gone or retyped since the baseline")
    if never:
        table = Table(title="Rules reading fields no event of their routes carried")
        for column in ("rule", "route", "fields never seen", "observed routes"):
            table.add_column(column)
        for n in never:
            table.add_row(
                escape(n.rule.title),
                n.rule.route.describe(),
                ", ".join(n.fields),
                ", ".join(n.routes),
            )
        console.print(table)
    console.print(
        f"{len(silent):,} rules cover no route with traffic"
        + ("" if show_all else " (--all lists them)"),
        highlight=False,
    )
    if show_all and silent:
        table = Table(title="Rules whose routes have no traffic")
        table.add_column("rule")
        table.add_column("route")
        for r in silent:
            table.add_row(escape(r.title), r.route.describe())
        console.print(table)
