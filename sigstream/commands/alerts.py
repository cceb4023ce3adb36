"""``sigstream alerts``: route findings to where analysts work (docs/alerts.md).

``run`` is the delivery process beside the detection job; ``check`` validates a routes
file (exit 2 with ``file:line: reason``) and shows what a sample finding would match;
``status`` reads the delivery log.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from common.client_options import confluent_kafka_config
from common.safe_yaml import ContentError, load_json, read_content
from common.settings import get_settings

app = typer.Typer(
    name="alerts",
    help="Alert routing and delivery: findings -> routes -> webhook, chat, mail, syslog, OCSF.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

#: A plausible finding for `alerts check --sample` (a Sigma PowerShell match).
SAMPLE_FINDING: dict[str, Any] = {
    "@timestamp": "2026-01-01T00:00:00+00:00",
    "rule": {
        "id": "sample-rule",
        "name": "Suspicious PowerShell download cradle",
        "level": "high",
        "tags": ["attack.execution", "attack.t1059.001"],
        "description": "PowerShell downloading and running code from the internet.",
        "references": ["https://attack.mitre.org/techniques/T1059/001/"],
        "falsepositives": ["Administrative scripts"],
    },
    "threat": {"technique": {"id": ["T1059.001"]}, "tactic": {"name": ["execution"]}},
    "host": {"name": "WS-0042"},
    "event": {"id": "e1", "category": "process_creation", "created": "2026-01-01T00:00:00+00:00"},
    "sigstream": {"tenant_id": "default", "sensor_id": "s1", "finding": {"id": "sample"}},
}


def _routes_path(path: Path | None) -> Path:
    chosen = path or get_settings().alert_routes
    if chosen is None:
        err.print("[red]no routes file: give --routes or set SIGSTREAM_ALERT_ROUTES[/red]")
        raise typer.Exit(2)
    return chosen


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="The routes file (YAML).")],
    finding: Annotated[
        Path | None,
        typer.Option(help="A finding document (JSON) to test: which routes it would match."),
    ] = None,
    sample: Annotated[bool, typer.Option(help="Test a built-in sample Sigma finding.")] = False,
    tenant: Annotated[str | None, typer.Option(help="Tenant of the tested finding.")] = None,
) -> None:
    """Validate a routes file; exit 2 with FILE:LINE: reason if it is bad."""
    from triage.alerts.config import RoutesError, load_routes
    from triage.alerts.routing import facts, plan

    try:
        routes = load_routes(path)
    except RoutesError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    console.print(
        f"{path}: ok: {len(routes.routes)} routes, {len(routes.destinations)} destinations, "
        f"{len(routes.silences)} silences",
        highlight=False,
    )
    for warning in routes.warnings():
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    doc: dict[str, Any] | None = None
    if finding is not None:
        try:
            doc = load_json(read_content(finding))
        except ContentError as exc:
            err.print(f"[red]{finding}: {exc}[/red]", highlight=False)
            raise typer.Exit(2) from None
    elif sample:
        doc = json.loads(json.dumps(SAMPLE_FINDING))
    if doc is None:
        return
    if tenant:
        doc.setdefault("sigstream", {})["tenant_id"] = tenant
    f = facts(doc)
    steps = plan(routes, f, datetime.now(UTC))
    console.print(
        f"finding: tenant={f.tenant} kind={f.kind} level={f.level} rule={f.rule_id} host={f.host}",
        highlight=False,
    )
    if not steps:
        console.print("matches no route (nothing would be sent)")
        return
    table = Table("route", "destination", "action", "why")
    for step in steps:
        why = f"{step.silence.id}: {step.silence.reason}" if step.silence else ""
        throttle = next(r.throttle for r in routes.routes if r.name == step.route)
        if step.action == "send" and throttle:
            why = f"throttled: {throttle.max} per {'/'.join(throttle.per)} per {throttle.window:g}s"
        table.add_row(step.route, step.destination, step.action, why)
    console.print(table)


@app.command()
def run(
    routes: Annotated[
        Path | None, typer.Option(help="Routes file (default: SIGSTREAM_ALERT_ROUTES).")
    ] = None,
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="Without a saved cursor, start at: now (default), beginning, or an ISO time.",
        ),
    ] = "now",
    once: Annotated[
        bool, typer.Option(help="Deliver what is there, wait for the queues, then exit.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Resume from the saved cursor (--no-resume: use --from).")
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (SIGSTREAM_METRICS_ENABLED and "
            "SIGSTREAM_METRICS_ALERTS_PORT, default 9465; docs/metrics.md).",
        ),
    ] = None,
) -> None:
    """Follow new findings and deliver them along the routes (beside the detection job).

    Each (finding, route, destination) is delivered once across restarts and replays
    (the delivery log); failures are retried with backoff and dead-lettered after
    SIGSTREAM_ALERTS_MAX_ATTEMPTS tries. The routes file is re-read when it changes; a
    bad new version is logged and the old routes stay in force.
    """
    from detections.sinks.elasticsearch import connect
    from sigstream import __version__
    from triage.alerts.destinations import SenderContext
    from triage.alerts.follower import parse_start
    from triage.alerts.runner import AlertConfig, RoutesWatcher, Runner

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("elastic_transport", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = get_settings()
    watcher = RoutesWatcher(_routes_path(routes))
    watcher.poll()
    if watcher.routes is None:
        err.print(f"[red]{watcher.error}[/red]", highlight=False)
        raise typer.Exit(2)
    cfg = AlertConfig.from_settings(settings)
    ctx = SenderContext(
        timeout_s=settings.alerts_send_timeout_s,
        kafka_config=confluent_kafka_config(settings),
        product_version=__version__,
    )
    try:
        begin = parse_start(start, datetime.now(UTC), cfg.overlap_s)
    except ValueError:
        err.print(f"[red]--from: not now, beginning or an ISO time: {start!r}[/red]")
        raise typer.Exit(2) from None
    es = connect(settings.es_hosts)
    runner = Runner(cfg, es, watcher, ctx, begin, resume=resume)
    runner._apply_routes(watcher.routes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    err.print(
        f"alerts: following {cfg.findings_index} -> {len(watcher.routes.routes)} routes "
        f"(log {cfg.log_index}, dead letters {cfg.dead_index})",
        highlight=False,
    )
    from common.metrics import MetricsEndpoint, canary_registry, serve_metrics

    endpoint = MetricsEndpoint.from_settings(settings, "alerts", metrics_port)
    listener = serve_metrics(endpoint, canary_registry()) if endpoint else None
    if listener is not None:
        err.print(f"alerts: metrics on {listener.url}", highlight=False)
    try:
        runner.run(stop, once=once)
    finally:
        if listener is not None:
            listener.stop()
    err.print(
        f"alerts: stopped: {runner.counts['findings']} findings read, "
        f"{runner.counts['claimed']} deliveries claimed, {runner.counts['duplicates']} "
        "already in the log",
        highlight=False,
    )


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="JSON rows.")] = False) -> None:
    """Pending, sent, failed (dead-lettered), silenced and throttled deliveries per route."""
    from detections.sinks.elasticsearch import connect
    from triage.alerts.deliverylog import STATUSES, DeliveryLog, status_rows

    settings = get_settings()
    es = connect(settings.es_hosts)
    try:
        DeliveryLog(es, settings.alerts_log_index, settings.alerts_dead_index).refresh()
        rows = status_rows(es, settings.alerts_log_index, settings.alerts_dead_index)
    finally:
        es.close()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"no deliveries in {settings.alerts_log_index} yet")
        return
    table = Table("route", "destination", *STATUSES, "dead letters", "p50 s", "p99 s")
    for row in rows:
        table.add_row(
            row["route"],
            row["destination"],
            *(str(row[s]) for s in STATUSES),
            str(row["dead_letters"]),
            _seconds(row["p50_s"]),
            _seconds(row["p99_s"]),
        )
    console.print(table)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
