"""``sigstream findings list|show|ack|close|reopen|assign|note|suppress|suppressions|serve``.

The CLI talks to Elasticsearch directly as an operator on the backend: ``--tenant``
(or ``SIGSTREAM_TENANT``) scopes it to one tenant, otherwise it sees all tenants.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.settings import get_settings
from detections.sinks.indices import groups_index
from detections.sinks.suppression import Suppression
from triage.auth import Caller
from triage.workflow import WorkflowError

app = typer.Typer()
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

Tenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="SIGSTREAM_TENANT",
        help="Only this tenant (default: all but the reserved canary tenant; name "
        "--tenant _canary to see canary findings).",
    ),
]
User = Annotated[
    str | None, typer.Option("--as", help="Analyst name for the audit trail (default: $USER).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
LEVEL_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


def _caller(tenant: str | None, user: str | None = None) -> Any:
    return Caller(user=user or getpass.getuser() or "cli", role="analyst", tenant=tenant)


def _es() -> Any:
    from detections.sinks.elasticsearch import connect

    return connect(get_settings().es_hosts)


def _index() -> str:
    return get_settings().findings_index


def parse_when(value: str | None) -> datetime | None:
    """ISO time, or relative to now: ``15m``, ``24h``, ``7d``."""
    if not value:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: use ISO time or 15m / 24h / 7d") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _short(ts: str | None) -> str:
    return (ts or "")[:19].replace("T", " ")


def list_cmd(
    since: Annotated[str | None, typer.Option(help="From: ISO time or 15m/24h/7d ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Until: ISO time or 15m/24h/7d ago.")] = None,
    level: Annotated[list[str] | None, typer.Option(help="Rule level (repeatable).")] = None,
    rule: Annotated[str | None, typer.Option(help="Rule id or exact title.")] = None,
    host: Annotated[str | None, typer.Option(help="Host name.")] = None,
    status: Annotated[list[str] | None, typer.Option(help="open/acknowledged/closed.")] = None,
    assignee: Annotated[str | None, typer.Option(help="Assigned analyst.")] = None,
    text: Annotated[str | None, typer.Option("--text", "-q", help="Free text.")] = None,
    sort: Annotated[str, typer.Option(help="last_seen, first_seen, count, severity...")] = (
        "last_seen"
    ),
    asc: Annotated[bool, typer.Option("--asc", help="Ascending order.")] = False,
    page: Annotated[int, typer.Option(min=1)] = 1,
    size: Annotated[int, typer.Option(min=1, max=200)] = 25,
    tenant: Tenant = None,
    as_json: AsJson = False,
) -> None:
    """List findings (grouped matches), newest activity first."""
    from triage.store import ListFilters, list_findings

    f = ListFilters(
        start=parse_when(since),
        end=parse_when(until),
        levels=level or [],
        rule=rule,
        host=host,
        status=status or [],
        assignee=assignee,
        text=text,
        sort=sort,
        order="asc" if asc else "desc",
        page=page,
        size=size,
    )
    try:
        total, rows = list_findings(_es(), _index(), _caller(tenant), f)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps({"total": total, "page": page, "findings": rows}))
        return
    table = Table(title=f"Findings: {total:,} match (page {page}, {size} per page)")
    for col in (
        "id",
        "level",
        "rule",
        "host",
        "count",
        "first seen",
        "last seen",
        "status",
        "assignee",
    ):
        table.add_column(col, justify="right" if col == "count" else "left")
    for r in rows:
        sig, g = r["sigstream"], r["sigstream"]["group"]
        lvl = r["rule"].get("level") or ""
        table.add_row(
            sig["finding"]["id"][:12],
            f"[{LEVEL_STYLE.get(lvl, '')}]{lvl}[/]" if lvl in LEVEL_STYLE else lvl,
            r["rule"]["name"],
            r["host"]["name"],
            f"{g.get('count', 1):,}",
            _short(g.get("first_seen")),
            _short(g.get("last_seen")),
            sig["finding"]["status"],
            sig["finding"].get("assignee") or "",
        )
    console.print(table)


def _resolve(es: Any, caller: Any, prefix: str) -> str:
    """Full id from a unique prefix (the list shows 12 characters)."""
    if len(prefix) >= 40:
        return prefix
    from triage.store import tenant_filter

    resp = es.search(
        index=groups_index(_index()),
        size=2,
        source=False,
        query={
            "bool": {
                "filter": [{"prefix": {"sigstream.finding.id": prefix}}, *tenant_filter(caller)]
            }
        },
    )
    hits = resp["hits"]["hits"]
    if len(hits) != 1:
        err.print(f"[red]{'no' if not hits else 'more than one'} finding with id {prefix}[/]")
        raise typer.Exit(1)
    return str(hits[0]["_id"])


def show_cmd(
    finding_id: Annotated[str, typer.Argument(help="Finding id (or a unique prefix).")],
    window: Annotated[int, typer.Option(help="Related events ± this many minutes.")] = 10,
    tenant: Tenant = None,
    as_json: AsJson = False,
) -> None:
    """A finding with its matches, related host events and process ancestry."""
    from triage import store

    es, caller = _es(), _caller(tenant)
    fid = _resolve(es, caller, finding_id)
    try:
        f = store.get_finding(es, _index(), caller, fid)
    except store.NotFound:
        err.print(f"[red]no finding {fid}[/]")
        raise typer.Exit(1) from None
    total, matches = store.finding_matches(es, _index(), caller, f)
    events_index = get_settings().events_index
    related = store.related_events(es, events_index, caller, f, timedelta(minutes=window))
    ancestry = store.process_ancestry(es, events_index, f)
    bases = store.base_findings(es, _index(), caller, f)
    if as_json:
        out = {
            "finding": f,
            "matches": {"total": total, "items": matches},
            "related_events": related,
            "ancestry": ancestry,
            "base_findings": bases,
        }
        console.print_json(json.dumps(out, default=str))
        return
    st, g = f["sigstream"]["finding"], f["sigstream"]["group"]
    console.rule(f"[bold]{f['rule']['name']}[/]  ({f['rule'].get('level')})")
    facts = [
        ("id", st["id"]),
        ("status", st["status"] + (f" ({st['resolution']})" if st.get("resolution") else "")),
        ("assignee", st.get("assignee") or "-"),
        ("host", f["host"]["name"]),
        ("tenant", f["sigstream"]["tenant_id"]),
        ("count", f"{g.get('count', 1):,}"),
        ("first / last seen", f"{_short(g.get('first_seen'))} / {_short(g.get('last_seen'))}"),
        ("ATT&CK", ", ".join(f["threat"]["tactic"]["name"] + f["threat"]["technique"]["id"])),
        (
            "process",
            f.get("process", {}).get("command_line")
            or f.get("process", {}).get("executable")
            or "-",
        ),
    ]
    for k, v in facts:
        console.print(f"[bold]{k:>18}[/]  {escape(str(v))}")
    print_why(f, bases)
    t = Table(title=f"Matches ({total:,}; first {len(matches)})")
    for col in ("time", "event id", "process"):
        t.add_column(col)
    for m in matches:
        p = m.get("process") or {}
        t.add_row(
            _short(m["@timestamp"]),
            m["event"]["id"],
            p.get("command_line") or p.get("executable") or "",
        )
    console.print(t)
    if ancestry:
        console.print("[bold]Process ancestry[/] (child first)")
        for depth, e in enumerate(ancestry):
            console.print(f"{'  ' * depth}└ {e.get('Image')}  {e.get('CommandLine') or ''}")
    t = Table(title=f"Related events on {f['host']['name']} (±{window} min)")
    for col in ("time", "type", "image", "detail"):
        t.add_column(col)
    for e in related:
        t.add_row(
            _short(e.get("event_time")),
            e.get("event_type", ""),
            e.get("Image") or e.get("SourceImage") or "",
            e.get("CommandLine") or e.get("TargetImage") or e.get("TargetFilename") or "",
        )
    console.print(t)
    if st.get("notes"):
        console.print("[bold]Notes[/]")
        for n in st["notes"]:
            console.print(f"  {_short(n['at'])} {n['author']}: {n['text']}")
    if st.get("history"):
        console.print("[bold]History[/]")
        for h in st["history"]:
            console.print(
                f"  {_short(h['at'])} {h['actor']} {h['action']} "
                f"{h.get('field') or ''}: {h.get('old')} -> {h.get('new')}"
            )


def print_why(f: dict[str, Any], bases: list[dict[str, Any]]) -> None:
    """The finding's "Why it matched" and "About the rule" sections (triage.explain)."""
    from triage.explain import attack_links, why_lines

    lines = why_lines((f.get("sigstream") or {}).get("match"))
    if lines:
        console.print("[bold]Why it matched[/]")
        for line in lines:
            console.print(f"  {escape(line)}", soft_wrap=True)
    correlation = (f.get("sigstream") or {}).get("correlation")
    if correlation:
        ids = correlation.get("base_findings") or []
        console.print(
            f"[bold]Why it matched[/]  {correlation.get('type')} "
            f"{escape(str(correlation.get('condition')))}: {len(ids):,} base finding(s)"
            + (f", first {len(bases)}" if len(bases) < len(ids) else "")
        )
        for b in bases:
            if not b.get("found"):
                console.print(f"  {b['id'][:12]}  (not stored or not visible)")
                continue
            console.print(
                f"  {b['id'][:12]}  {_short(b.get('time'))}  {escape(str(b.get('host')))}  "
                f"{escape(str(b.get('rule')))}"
            )
            for line in why_lines(b.get("match")):
                console.print(f"      {escape(line)}", soft_wrap=True)
    rule = f.get("rule") or {}
    about: list[tuple[str, list[str]]] = [
        ("description", [rule["description"]] if rule.get("description") else []),
        ("false positives", rule.get("falsepositives") or []),
        ("references", rule.get("references") or []),
        ("ATT&CK", [f"{t}  {url}" for t, url in attack_links(f)]),
    ]
    if any(values for _, values in about):
        console.print("[bold]About the rule[/]")
    for name, values in about:
        for i, value in enumerate(values):
            label = name if i == 0 else ""
            console.print(f"[bold]{label:>18}[/]  {escape(value.strip())}", soft_wrap=True)


def _act(
    finding_id: str, action: str, tenant: str | None, user: str | None, as_json: bool, **kwargs: Any
) -> None:
    from triage import store

    es, caller = _es(), _caller(tenant, user)
    fid = _resolve(es, caller, finding_id)
    try:
        new = store.update_finding(es, _index(), caller, fid, action, **kwargs)
    except store.NotFound:
        err.print(f"[red]no finding {fid}[/]")
        raise typer.Exit(1) from None
    except WorkflowError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        console.print_json(json.dumps({"id": fid, "finding": new}))
    else:
        console.print(
            f"{fid[:12]}: status {new['status']}"
            + (f" ({new['resolution']})" if new.get("resolution") else "")
            + (f", assignee {new['assignee']}" if new.get("assignee") else "")
            + f", {len(new.get('notes') or [])} notes"
        )


FindingArg = Annotated[str, typer.Argument(help="Finding id (or a unique prefix).")]


def ack_cmd(
    finding_id: FindingArg, tenant: Tenant = None, user: User = None, as_json: AsJson = False
) -> None:
    """Acknowledge a finding (open -> acknowledged)."""
    _act(finding_id, "ack", tenant, user, as_json)


def close_cmd(
    finding_id: FindingArg,
    resolution: Annotated[str, typer.Option(help="true_positive, benign or false_positive.")],
    tenant: Tenant = None,
    user: User = None,
    as_json: AsJson = False,
) -> None:
    """Close a finding with a resolution."""
    _act(finding_id, "close", tenant, user, as_json, resolution=resolution)


def reopen_cmd(
    finding_id: FindingArg, tenant: Tenant = None, user: User = None, as_json: AsJson = False
) -> None:
    """Reopen a closed or acknowledged finding."""
    _act(finding_id, "reopen", tenant, user, as_json)


def assign_cmd(
    finding_id: FindingArg,
    assignee: Annotated[str, typer.Argument()],
    tenant: Tenant = None,
    user: User = None,
    as_json: AsJson = False,
) -> None:
    """Assign a finding to an analyst."""
    _act(finding_id, "assign", tenant, user, as_json, assignee=assignee)


def note_cmd(
    finding_id: FindingArg,
    text: Annotated[str, typer.Argument()],
    tenant: Tenant = None,
    user: User = None,
    as_json: AsJson = False,
) -> None:
    """Add a note (author and time are recorded)."""
    _act(finding_id, "note", tenant, user, as_json, text=text)


def suppress_cmd(
    tenant: Annotated[str, typer.Option("--tenant", envvar="SIGSTREAM_TENANT")],
    rule: Annotated[str, typer.Option(help="Rule id, or * for every rule.")],
    field: Annotated[
        list[str] | None, typer.Option(help="FIELD=VALUE (repeatable), e.g. host.name=WS01.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Start (ISO; default now).")] = None,
    until: Annotated[str | None, typer.Option(help="End (ISO or none).")] = None,
    reason: Annotated[str, typer.Option(help="Why this is benign.")] = "",
    user: User = None,
) -> None:
    """Silence known-benign matches; they are still stored and counted."""
    from triage.store import add_suppression

    fields = {}
    for item in field or []:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: use FIELD=VALUE")
        k, v = item.split("=", 1)
        fields[k] = v
    sup = Suppression(
        tenant_id=tenant,
        rule_id=rule,
        fields=fields,
        start=parse_when(since) or datetime.now(UTC),
        end=parse_when(until),
        reason=reason,
    )
    sup = add_suppression(_es(), _index(), _caller(tenant, user), sup)
    console.print(f"suppression {sup.id} added for rule {rule} {fields}")


def suppressions_cmd(tenant: Tenant = None, as_json: AsJson = False) -> None:
    """Suppression rules and how many matches each has silenced."""
    from triage.store import list_suppressions

    rows = list_suppressions(_es(), _index(), _caller(tenant))
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table(title="Suppressions")
    for col in ("id", "tenant", "rule", "fields", "from", "until", "suppressed", "reason"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["id"],
            r["tenant_id"],
            r["rule_id"],
            json.dumps(r["fields"]),
            _short(r.get("start")),
            _short(r.get("end")),
            f"{r['suppressed']:,}",
            r.get("reason") or "",
        )
    console.print(t)


def lifecycle_cmd(
    bootstrap: Annotated[
        bool, typer.Option("--bootstrap", help="First set up the write aliases.")
    ] = False,
    max_age: Annotated[str, typer.Option(help="Roll over after this age (ES units).")] = "1d",
    max_docs: Annotated[int | None, typer.Option(help="Or after this many documents.")] = None,
    retention_days: Annotated[
        int | None, typer.Option(help="Delete backing indices older than this.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
) -> None:
    """Rollover and retention for the matches and events indices (no ILM in this ES)."""
    from triage import lifecycle

    es, s = _es(), get_settings()
    for alias, time_field in ((s.findings_index, "@timestamp"), (s.events_index, "event_time")):
        if bootstrap:
            console.print(lifecycle.bootstrap(es, alias))
        if not es.indices.exists_alias(name=alias):
            console.print(f"{alias}: not a rollover alias (run with --bootstrap on a new setup)")
            continue
        if not dry_run:
            r = lifecycle.rollover(es, alias, max_age, max_docs)
            console.print(
                f"{alias}: rolled over to {r['new_index']}"
                if r["rolled_over"]
                else f"{alias}: no rollover needed"
            )
        if retention_days is not None:
            gone = lifecycle.apply_retention(es, alias, retention_days, time_field, dry_run)
            verb = "would delete" if dry_run else "deleted"
            console.print(f"{alias}: {verb} {', '.join(gone) or 'nothing'}")


def serve_cmd(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    tls_self_signed: Annotated[
        bool,
        typer.Option(
            "--tls-self-signed",
            help="HTTPS with a self-signed certificate generated on first start "
            "(<run_dir>/triage/tls; or at --tls-cert/--tls-key).",
        ),
    ] = False,
    docs: Annotated[
        bool, typer.Option("--docs", help="Interactive API docs at /docs (served locally).")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics at http://SIGSTREAM_METRICS_HOST:PORT/metrics, "
            "without the API key (default: SIGSTREAM_METRICS_API_PORT when "
            "SIGSTREAM_METRICS_ENABLED; docs/metrics.md)."
        ),
    ] = None,
) -> None:
    """Serve the triage HTTP API and web page (needs SIGSTREAM_API_KEYS_FILE).

    Bounded per connection and per request (SIGSTREAM_API_* settings, docs/triage.md)."""
    import uvicorn

    from triage.api import create_app
    from triage.server import TlsFiles, limits_from_settings, uvicorn_config

    settings = get_settings()
    tls: TlsFiles | None = None
    if tls_self_signed:
        from ingest.gateway.tls import ensure_cert

        folder = settings.run_dir / "triage" / "tls"
        tls = TlsFiles(tls_cert or folder / "cert.pem", tls_key or folder / "key.pem")
        if ensure_cert(tls.cert, tls.key, ["localhost", "127.0.0.1", host]):
            err.print(f"generated a self-signed certificate: {tls.cert}")
    elif tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise typer.BadParameter("give both --tls-cert and --tls-key")
        for path in (tls_cert, tls_key):
            if not path.is_file():
                raise typer.BadParameter(f"{path} is not a file")
        tls = TlsFiles(tls_cert, tls_key)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        err.print(
            "[yellow]plain HTTP on a network address: API keys travel in clear text "
            "(use --tls-cert/--tls-key)[/yellow]"
        )
    app_ = create_app(settings, docs=docs)
    config = uvicorn_config(app_, host, port, limits_from_settings(settings), tls)
    err.print(f"triage API on {'https' if tls else 'http'}://{host}:{port}/")
    from common.metrics import MetricsEndpoint, serve_metrics

    endpoint = MetricsEndpoint.from_settings(settings, "api", metrics_port)
    listener = serve_metrics(endpoint, app_.state.metrics.registry) if endpoint else None
    if listener is not None:
        err.print(f"metrics on {listener.url}")
    try:
        uvicorn.Server(config).run()
    finally:
        if listener is not None:
            listener.stop()


for _name, _command in (
    ("list", list_cmd),
    ("show", show_cmd),
    ("ack", ack_cmd),
    ("close", close_cmd),
    ("reopen", reopen_cmd),
    ("assign", assign_cmd),
    ("note", note_cmd),
    ("suppress", suppress_cmd),
    ("suppressions", suppressions_cmd),
    ("serve", serve_cmd),
):
    app.command(_name)(_command)
