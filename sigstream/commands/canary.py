"""``sigstream canary run | prove | enroll`` and ``sigstream rules health``: canaries that
prove every deployed rule still fires end to end (docs/canaries.md).

The logic lives in ``detections.content.canary``; this module resolves the settings,
builds the runner, shows progress and prints results. ``gate`` is what ``rules deploy``
and promotions out of canary mode call.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.settings import Settings, get_settings
from detections.content.defaults import OWN_RULES, default_rule_paths

app = typer.Typer(
    help="Canaries: prove every deployed rule still fires through gateway, Kafka and the job.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

TestsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--tests",
        help="Where rules' true-positive tests are (rule folders with *.tests.json, SigmaHQ "
        "regression folders); repeat. Default: SIGSTREAM_CANARY_TESTS, else the project's "
        "rules and <shared_data>/sigma-regression.",
    ),
]
RulesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--rules",
        help="The rules the job runs when nothing is deployed (as `detect --rules`).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

STATE_STYLE = {
    "ok": "green",
    "shadow": "cyan",
    "pending": "dim",
    "no_tests": "yellow",
    "not_firing": "bold red",
    "quarantined": "red",
    "killed": "magenta",
}
STATES = tuple(STATE_STYLE)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def test_paths(settings: Settings, tests: list[Path] | None = None) -> list[Path]:
    if tests:
        return list(tests)
    if settings.canary_tests:
        return list(settings.canary_tests)
    regression = settings.shared_data / "sigma-regression"
    return [OWN_RULES, *([regression] if regression.is_dir() else [])]


def job_status(settings: Settings) -> dict[str, Any] | None:
    from detections.stream.status import read_status

    path = settings.run_dir / "detect" / "status.json"
    return read_status(path) if path.exists() else None


def load_deployment(settings: Settings, rules: list[Path] | None = None) -> Any:
    """The deployed bundle (verified, compiled), else the rules the job would run."""
    from detections.compiler.plan import load_placeholders
    from detections.content.canary.runner import deployment_from_paths, deployment_from_store

    status = job_status(settings)
    deployed = None
    if not rules:
        deployed = deployment_from_store(settings.deploy_dir, settings.trusted_keys, status)
    if deployed is None:
        paths = rules or default_rule_paths(settings)
        deployed = deployment_from_paths(
            paths,
            status,
            allow_unknown_fields=True,
            config=load_placeholders(settings.placeholders_file),
        )
    return deployed


def gateway_target(
    settings: Settings, url: str | None = None, token: str | None = None, ca: Path | None = None
) -> Any:
    """The gateway canaries go to, or None when none is configured."""
    from detections.content.canary.inject import GatewayTarget

    url = url or settings.canary_gateway_url
    secret = token or (settings.canary_token.get_secret_value() if settings.canary_token else None)
    if not url or not secret:
        return None
    ca = ca or settings.canary_gateway_ca
    return GatewayTarget(url, secret, verify=str(ca) if ca else True)


def make_runner(
    settings: Settings,
    *,
    tests: list[Path] | None = None,
    rules: list[Path] | None = None,
    target: Any = None,
    wanted: list[str] | None = None,
    interval_s: float | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
) -> Any:
    from detections.content.canary.build import CanaryIdentity
    from detections.content.canary.runner import CanaryConfig, CanaryRunner
    from detections.content.canary.store import health_index
    from detections.content.canary.templates import load_templates, select_firing
    from detections.sinks.elasticsearch import connect

    err.print("reading the deployment …")
    deployed = load_deployment(settings, rules)
    paths = test_paths(settings, tests)
    err.print(
        f"{len(deployed.plan.rules):,} rules deployed; reading their tests from "
        f"{', '.join(map(str, paths))} …"
    )

    def select(deployment: Any) -> Any:  # the tests of the rules ``deployment`` runs
        asked = wanted or list(deployment.views)
        return select_firing(load_templates(paths, asked), deployment.plan)

    templates = select(deployed)
    for error in templates.errors[:5]:
        err.print(f"[yellow]test not usable: {escape(error)}[/yellow]", highlight=False)
    asked = [r for r in (wanted or deployed.views) if r in deployed.views]
    with_tests = sum(1 for r in asked if templates.by_rule.get(r))
    which = "rules asked" if wanted else "deployed rules"
    err.print(f"{with_tests:,} of {len(asked):,} {which} have canaries")
    cfg = CanaryConfig(
        identity=CanaryIdentity(
            settings.canary_tenant, settings.canary_sensor, settings.canary_host
        ),
        findings_index=settings.findings_index,
        health_index=health_index(settings.findings_index),
        operator_tenant=settings.operator_tenant,
        shadow_index=settings.shadow_findings_index,
        timeout_s=timeout_s or settings.canary_timeout_s,
        interval_s=interval_s or settings.canary_interval_s,
        poll_s=poll_s,
    )
    state = {"deployed": deployed}

    def current() -> Any:
        """Re-read the deployment when the store moved on, and with it the canaries: a
        rule deployed after the runner started gets its tests, a changed one its new ones."""
        if not rules:
            gen = _generation(settings)
            if gen is not None and gen != state["deployed"].generation:
                fresh = load_deployment(settings)
                runner.templates = select(fresh)
                state["deployed"] = fresh
                err.print(
                    f"deployment generation {fresh.generation}: {len(fresh.plan.rules):,} rules, "
                    f"{sum(1 for ts in runner.templates.by_rule.values() if ts):,} with canaries"
                )
        return state["deployed"]

    es = connect(settings.es_hosts)
    runner = CanaryRunner(es, cfg, target, templates, current)
    return runner


def _generation(settings: Settings) -> int | None:
    from detections.content.deploy.store import DeploymentStore

    try:
        return DeploymentStore(settings.deploy_dir).generation()
    except Exception:
        return None


def _describe(report: Any) -> str:
    parts = []
    if report.round_name:
        parts.append(
            f"round {report.round_name}: {report.injected} canaries for {len(report.rules)} rules"
        )
        if report.rejected:
            parts.append(f"{len(report.rejected)} refused by the gateway")
    for h in report.proven:
        parts.append(f"proven {h.title} in {h.latency_s:.1f}s")
    for h in report.not_firing:
        parts.append(f"NOT FIRING {h.title}: {h.cause}")
    return "; ".join(parts)


# --- commands ---------------------------------------------------------------------------


@app.command("run")
def run_cmd(
    once: Annotated[
        bool, typer.Option("--once", help="Evaluate the previous round, inject one, exit.")
    ] = False,
    rounds: Annotated[
        int | None, typer.Option(help="Stop after this many rounds are judged.", min=1)
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between rounds (SIGSTREAM_CANARY_INTERVAL_S).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a canary may take (SIGSTREAM_CANARY_TIMEOUT_S)."),
    ] = None,
    poll: Annotated[float, typer.Option(help="Seconds between looks for findings.")] = 1.0,
    gateway: Annotated[
        str | None, typer.Option(help="Gateway URL (SIGSTREAM_CANARY_GATEWAY_URL).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Canary credential (SIGSTREAM_CANARY_TOKEN; `canary enroll`)."),
    ] = None,
    ca: Annotated[Path | None, typer.Option(help="CA of the gateway's certificate.")] = None,
    tests: TestsOpt = None,
    rules: RulesOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (SIGSTREAM_METRICS_ENABLED and "
            "SIGSTREAM_METRICS_CANARY_PORT, default 9464; docs/metrics.md).",
        ),
    ] = None,
) -> None:
    """The canary scheduler, beside the detection job: every interval inject a round of
    canaries (through the gateway, under the reserved canary tenant) and judge the rounds
    in flight; a rule silent past the timeout raises a "rule not firing" finding."""
    s = get_settings()
    target = gateway_target(s, gateway, token, ca)
    if target is None:
        raise _fail(
            "no canary gateway: set SIGSTREAM_CANARY_GATEWAY_URL and SIGSTREAM_CANARY_TOKEN "
            "(`sigstream canary enroll` issues the token) or pass --gateway/--token"
        )
    runner = make_runner(
        s,
        tests=tests,
        rules=rules,
        target=target,
        interval_s=interval,
        timeout_s=timeout,
        poll_s=poll,
    )

    from common.metrics import MetricsEndpoint, canary_registry, serve_metrics
    from detections.content.canary.runner import publish_metrics

    endpoint = MetricsEndpoint.from_settings(s, "canary", metrics_port)
    listener = serve_metrics(endpoint, canary_registry()) if endpoint else None
    if listener is not None:
        err.print(f"metrics: {listener.url}", highlight=False)

    def show(evaluated: Any, injected: Any) -> None:
        publish_metrics(evaluated)
        for report in (evaluated, injected):
            if report is not None and (report.round_name or report.verdicts):
                err.print(
                    f"{datetime.now(UTC):%H:%M:%S} {escape(_describe(report))}", highlight=False
                )

    try:
        if once:
            show(*runner.tick(inject_due=True))
            return
        err.print(
            f"canary rounds every {runner.cfg.interval_s:g} s, "
            f"timeout {runner.cfg.timeout_s:g} s (Ctrl-C to stop)"
        )
        runner.run(rounds=rounds, on_report=show)
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        if listener is not None:
            listener.stop()


@app.command("prove")
def prove_cmd(
    rule_ids: Annotated[list[str], typer.Argument(help="Rule ids to prove now.")],
    timeout: Annotated[float | None, typer.Option(help="Seconds a canary may take.")] = None,
    tests: TestsOpt = None,
    as_json: AsJson = False,
) -> None:
    """One canary round for these rules, waited for; exit 1 if any is not firing."""
    s = get_settings()
    results = gate(s, rule_ids, tests=tests, timeout_s=timeout)
    if results is None:
        raise _fail("no canary gateway configured (SIGSTREAM_CANARY_GATEWAY_URL, _TOKEN)")
    if as_json:
        console.print_json(json.dumps({k: v.model_dump(mode="json") for k, v in results.items()}))
    else:
        print_gate(results)
    if any(h.state == "not_firing" or h.cause for h in results.values()):
        raise typer.Exit(1)


@app.command("enroll")
def enroll_cmd(
    credentials: Annotated[
        Path | None, typer.Option(help="Gateway credential file (default: the gateway's).")
    ] = None,
) -> None:
    """Issue the gateway credential of the reserved canary tenant and sensor (customers'
    tenants cannot start with '_'); prints the token once."""
    from ingest.gateway.credentials import CredentialStore
    from sigstream.commands.gateway import default_credentials

    s = get_settings()
    key_id, token = CredentialStore(credentials or default_credentials()).enroll(
        s.canary_tenant, s.canary_sensor, reserved=True
    )
    console.print(f"canary credential {key_id} for {s.canary_tenant}/{s.canary_sensor}")
    console.print(f"export SIGSTREAM_CANARY_TOKEN={token}", highlight=False, soft_wrap=True)


# --- the deployment gate ------------------------------------------------------------------


def gate(
    settings: Settings,
    rule_ids: list[str],
    *,
    tests: list[Path] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any] | None:
    """Prove ``rule_ids`` with one canary round now (None when no canary gateway is
    configured). The job reads the deployment store before every micro-batch, so
    canaries sent after a deployment or a mode change meet the new content."""
    target = gateway_target(settings)
    if target is None or not rule_ids:
        return None if target is None else {}
    runner = make_runner(settings, tests=tests, target=target, wanted=rule_ids, timeout_s=timeout_s)
    err.print(
        f"canary round for {len(rule_ids)} rule(s); waiting up to "
        f"{runner.cfg.timeout_s:g} s for their findings …"
    )
    return dict(runner.prove(rule_ids, timeout_s))


def print_gate(results: dict[str, Any]) -> None:
    for rid, h in results.items():
        if h.state in ("ok", "shadow") and not h.cause:
            console.print(
                f"[green]proven[/green] {escape(h.title)} ({rid}): finding in {h.latency_s:.1f} s",
                highlight=False,
            )
        elif h.state == "no_tests":
            console.print(
                f"[yellow]no tests[/yellow] {escape(h.title)} ({rid}): nothing "
                "to build a canary from",
                highlight=False,
            )
        else:
            console.print(
                f"[red]not firing[/red] {escape(h.title)} ({rid}): {escape(h.cause or h.state)}",
                highlight=False,
            )


def failed(results: dict[str, Any]) -> list[str]:
    return [rid for rid, h in results.items() if h.cause or h.state == "not_firing"]


# --- rules health ------------------------------------------------------------------------


def health_rows(settings: Settings, *, days: int = 7) -> list[dict[str, Any]]:
    """Every deployed rule with its canary record, mode and match count (no compiling:
    the bundle's manifest names the rules)."""
    from detections.content.canary.evaluate import RuleView, standing_state
    from detections.content.canary.runner import job_view
    from detections.content.canary.store import health_index, match_counts, read_health
    from detections.content.deploy.store import DeploymentStore
    from detections.content.deploy.watcher import ACTIVE
    from detections.sinks.elasticsearch import connect

    store = DeploymentStore(settings.deploy_dir)
    bundle = store.current_bundle()
    quarantined, refused = job_view(job_status(settings))
    es = connect(settings.es_hosts)
    try:
        docs = read_health(es, health_index(settings.findings_index))
        err.print(f"counting {days}-day matches per rule …")
        counts = match_counts(es, settings.findings_index, datetime.now(UTC) - timedelta(days=days))
    finally:
        es.close()
    if bundle is not None:
        overrides, defaults = store.overrides(), bundle.default_modes
        rules = [
            (r["id"], r["title"], (overrides.get(r["id"]) or defaults.get(r["id"]) or ACTIVE))
            for r in bundle.manifest["rules"]
        ]
    else:  # not deployed: what the canary runner last saw
        rules = [(d.rule_id, d.title, ACTIVE) for d in docs.values()]
    rows = []
    for rid, title, mode in rules:
        doc = docs.get(rid)
        view = RuleView(
            rid,
            title,
            mode.mode,
            mode.reason,
            quarantined.get(rid),
            refused.get(rid),
            tests=doc.tests if doc else 1,
        )
        state = standing_state(view) or (doc.state if doc else "pending")
        if doc is not None and doc.state == "no_tests" and state not in ("killed", "quarantined"):
            state = "no_tests"
        rows.append(
            {
                "rule_id": rid,
                "title": title,
                "state": state,
                "mode": mode.describe(),
                "last_proven": doc.last_proven.isoformat() if doc and doc.last_proven else None,
                "latency_s": doc.latency_s if doc else None,
                "job_latency_s": doc.job_latency_s if doc else None,
                "matches": counts.get(rid, 0),
                "cause": (doc.cause if doc else None)
                or (f"quarantined: {quarantined[rid]}" if rid in quarantined else None),
                "tests": doc.tests if doc else None,
                "pending_round": doc.pending_round if doc else None,
            }
        )
    return rows


def health_cmd(
    state: Annotated[
        list[str] | None,
        typer.Option(help=f"Only rules in this state (repeat): {', '.join(STATES)}."),
    ] = None,
    rule: Annotated[
        str | None, typer.Option(help="Only rules whose id or title contains this.")
    ] = None,
    days: Annotated[int, typer.Option(help="Match count window, days.", min=1)] = 7,
    as_json: AsJson = False,
) -> None:
    """Every deployed rule: last proven end-to-end firing (canary), canary latency, match
    count over 7 days (canary findings excluded) and state: ok, not firing, no tests,
    quarantined, shadow, killed, pending (docs/canaries.md)."""
    for st in state or []:
        if st not in STATES:
            raise _fail(f"unknown state {st!r}; one of {', '.join(STATES)}")
    s = get_settings()
    rows = health_rows(s, days=days)
    if state:
        rows = [r for r in rows if r["state"] in state]
    if rule:
        needle = rule.lower()
        rows = [r for r in rows if needle in r["rule_id"].lower() or needle in r["title"].lower()]
    if as_json:
        console.print_json(json.dumps({"rules": rows}))
        return
    latencies = [r["latency_s"] for r in rows if r["latency_s"] is not None]
    table = Table(title=f"Rule health: {len(rows):,} rules")
    for col, just in (
        ("state", "left"),
        ("rule", "left"),
        ("mode", "left"),
        ("last proven", "left"),
        ("latency", "right"),
        (f"{days}d matches", "right"),
        ("cause", "left"),
    ):
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    order = {
        s: n
        for n, s in enumerate(
            ("not_firing", "quarantined", "killed", "no_tests", "pending", "shadow", "ok")
        )
    }
    for r in sorted(rows, key=lambda r: (order.get(r["state"], 9), r["title"])):
        style = STATE_STYLE.get(r["state"], "")
        table.add_row(
            f"[{style}]{r['state'].replace('_', ' ')}[/]",
            escape(r["title"]),
            r["mode"],
            (r["last_proven"] or "never")[:19].replace("T", " "),
            f"{r['latency_s']:.1f}s" if r["latency_s"] is not None else "",
            f"{r['matches']:,}",
            escape(r["cause"] or ""),
        )
    console.print(table)
    counts = Counter(r["state"] for r in rows)
    summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.most_common())
    if latencies:
        summary += (
            f"; canary latency median {statistics.median(latencies):.1f} s, "
            f"max {max(latencies):.1f} s"
        )
    console.print(summary)
