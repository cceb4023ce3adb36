"""``sigstream rules …`` for detection engineers: validate, test, backtest, coverage, and
signed bundles deployed to the running job (docs/rules-workflow.md).

The logic lives in ``detections.content.workflow`` and ``detections.content.deploy``;
this module only parses options, shows progress and prints results.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.settings import Settings, get_settings
from detections.content.defaults import OWN_RULES, SAMPLE_EVENTS
from detections.content.deploy.modes import RuleMode, parse_mode
from detections.content.workflow.coverage import TACTICS, CoveredRule, coverage, navigator_layer
from sigstream.commands.drift import drift_cmd

app = typer.Typer()
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

Paths = Annotated[
    list[Path] | None,
    typer.Argument(help="Rule files or folders (default: the project's own, detections/rules)."),
]
AllowUnknown = Annotated[
    bool,
    typer.Option(
        "--allow-unknown-fields",
        help="A field no sensor sends is a warning instead of an error.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="Deployment store (default: settings deploy_dir).")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _config(settings: Settings) -> Any:
    from detections.compiler.plan import load_placeholders

    return load_placeholders(settings.placeholders_file)


def _store(store: Path | None) -> Any:
    from detections.content.deploy.store import DeploymentStore

    return DeploymentStore(store or get_settings().deploy_dir)


def _trusted(settings: Settings, path: Path | None = None) -> Any:
    from detections.content.deploy.signing import load_trusted_keys

    path = path or settings.trusted_keys
    keys = load_trusted_keys([path]) if path.exists() else {}
    if not keys:
        raise _fail(
            f"no trusted public keys at {path}: run `sigstream rules keygen` "
            "or set SIGSTREAM_TRUSTED_KEYS"
        )
    return keys


# --- validate ---------------------------------------------------------------------------


def default_cost_sources(settings: Settings) -> list[Path]:
    """Real events to time rules on: the SigmaHQ regression corpus when present, plus the
    bundled sample events."""
    regression = settings.shared_data / "sigma-regression"
    return [p for p in (regression, SAMPLE_EVENTS) if p.exists()]


def validate_cmd(
    paths: Paths = None,
    allow_unknown_fields: AllowUnknown = False,
    fail_on_issues: Annotated[
        bool, typer.Option(help="pySigma validator issues are errors, not warnings.")
    ] = False,
    sigma: Annotated[bool, typer.Option(help="Run pySigma's validators.")] = True,
    cost: Annotated[bool, typer.Option(help="Measure each rule's evaluation cost.")] = True,
    cost_from: Annotated[
        list[Path] | None,
        typer.Option("--cost-from", help="Events to time rules on (default: regression corpus)."),
    ] = None,
    cost_events: Annotated[int, typer.Option(help="At most this many sample events.")] = 2000,
    cost_factor: Annotated[
        float, typer.Option(help="Flag rules costing more than this many times the median.")
    ] = 10.0,
    max_cost_us: Annotated[
        float | None, typer.Option(help="Also flag rules above this many µs per event.")
    ] = None,
    attack_data: Annotated[
        Path | None,
        typer.Option(help="Local MITRE ATT&CK STIX file (enterprise-attack.json) for attacktag."),
    ] = None,
    d3fend_data: Annotated[
        Path | None, typer.Option(help="Local MITRE D3FEND data file for d3_fendtag.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Check rules before they ship: Sigma validators, compile, fields, cost.

    Runs pySigma's validators (the checks sigma-cli's `check` runs), the compiler, a field
    check against the event schema, regex shapes that backtrack, measured cost per event.
    Exits 1 when any error is found (warnings do not fail)."""
    from detections.content.workflow.cost import sample_events
    from detections.content.workflow.validate import validate

    s = get_settings()
    rule_paths = paths or [OWN_RULES]
    if attack_data is not None:  # pySigma otherwise downloads these at run time
        from sigma.data import mitre_attack

        mitre_attack.set_url(str(attack_data))
    if d3fend_data is not None:
        from sigma.data import mitre_d3fend

        mitre_d3fend.set_url(str(d3fend_data))
    events: list[dict[str, Any]] = []
    if cost:
        sources = cost_from or default_cost_sources(s)
        err.print(
            f"reading up to {cost_events:,} sample events from {', '.join(map(str, sources))} …"
        )
        events = sample_events(sources, cost_events)
    started = time.monotonic()
    report = validate(
        rule_paths,
        allow_unknown_fields=allow_unknown_fields,
        config=_config(s),
        fail_on_issues=fail_on_issues,
        cost_events=events,
        cost_factor=cost_factor,
        max_cost_us=max_cost_us,
        sigma=sigma,
        progress=lambda m: err.print(f"  {m}", highlight=False),
    )
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "ok": report.ok,
                    "rules": len(report.plan.rules),
                    "issues": [i.__dict__ for i in report.issues],
                    "costs": [c.__dict__ for c in report.costs],
                    "skipped": report.skipped,
                }
            )
        )
    else:
        table = Table(title=f"Validation of {len(report.plan.rules):,} compiled rules")
        for col in ("severity", "check", "rule", "message"):
            table.add_column(col, overflow="fold")
        for i in sorted(report.issues, key=lambda i: (i.severity != "error", i.check)):
            colour = "red" if i.severity == "error" else "yellow"
            where = Path(i.path).name if i.path else (i.rule_id or "")
            table.add_row(f"[{colour}]{i.severity}[/{colour}]", i.check, where, i.message)
        if report.issues:
            console.print(table)
        if report.costs:
            costs = sorted(report.costs, key=lambda c: -c.us_per_event)
            ct = Table(title=f"Measured cost on {len(events):,} events (µs per event, rule alone)")
            for col, just in (("rule", "left"), ("µs/event", "right"), ("x median", "right")):
                ct.add_column(col, justify=just)  # type: ignore[arg-type]
            for c in costs[:15]:
                mark = " [red]FLAGGED[/red]" if c.flagged else ""
                ct.add_row(c.title, f"{c.us_per_event:,.2f}", f"{c.ratio_to_median:.1f}{mark}")
            console.print(ct)
        for skipped in report.skipped:
            err.print(f"[dim]skipped: {skipped}[/dim]", highlight=False)
        errors, warnings = len(report.errors), len(report.issues) - len(report.errors)
        colour = "red" if errors else "green"
        console.print(
            f"[{colour}]{errors} error(s)[/{colour}], {warnings} warning(s) in "
            f"{time.monotonic() - started:.1f}s"
        )
    if not report.ok:
        raise typer.Exit(1)


# --- test -------------------------------------------------------------------------------


def test_cmd(
    paths: Paths = None,
    min_tests: Annotated[
        bool,
        typer.Option("--min-tests", help="Every rule needs at least one TP and one TN."),
    ] = False,
    allow_unknown_fields: AllowUnknown = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List passing rules.")] = False,
) -> None:
    """Run each rule's TP/TN test events through the engine; exit 1 on any mismatch.

    Tests live beside each rule as <rule>.tests.json ({"tp": [...], "tn": [...]}).
    """
    from detections.content.workflow.ruletests import run_tests

    s = get_settings()
    rule_paths = paths or [OWN_RULES]
    report = run_tests(
        rule_paths,
        config=_config(s),
        allow_unknown_fields=allow_unknown_fields,
        min_tests=min_tests,
    )
    tested = [r for r in report.results if r.tp or r.tn]
    for error in report.errors:
        err.print(f"[red]error:[/red] {error}", highlight=False)
    for r in report.results:
        if r.failures:
            console.print(f"[red]FAIL[/red] {r.title} ({r.rule_id}) {r.path}", highlight=False)
            for f in r.failures:
                console.print(f"     {f}", highlight=False)
        elif verbose and (r.tp or r.tn):
            console.print(f"[green]ok[/green]   {r.title}: {r.tp} TP, {r.tn} TN", highlight=False)
    failed = sum(1 for r in report.results if r.failures)
    cases = sum(r.tp + r.tn for r in report.results)
    console.print(
        f"{len(tested)} of {len(report.results)} rules have tests; {cases} test events; "
        f"{failed} rule(s) failed, {len(report.errors)} error(s)"
    )
    if not report.ok:
        raise typer.Exit(1)


# --- backtest ---------------------------------------------------------------------------


def backtest_cmd(
    rules: Annotated[list[Path], typer.Argument(help="Rule file(s) or folder(s) to backtest.")],
    since: Annotated[
        str | None,
        typer.Option(help="How far back: 7d, 12h, 2w or a date (archive default: 7d)."),
    ] = None,
    from_: Annotated[
        list[Path] | None,
        typer.Option(
            "--from",
            help="Backtest raw corpora (OTRF, regression .json, .jsonl, named .evtx files) "
            "instead.",
        ),
    ] = None,
    archive: Annotated[
        Path | None, typer.Option(help="Events archive (default: settings archive_dir).")
    ] = None,
    rule_id: Annotated[
        list[str] | None, typer.Option("--rule-id", help="Only these rule ids or titles.")
    ] = None,
    top: Annotated[int, typer.Option(help="Top hosts to show.")] = 10,
    samples: Annotated[int, typer.Option(help="Sample matches to show per rule.")] = 5,
    allow_unknown_fields: AllowUnknown = False,
    as_json: AsJson = False,
) -> None:
    """Run rules over stored history with Spark batch: the alert volume to expect.

    Prints hits, hits per day, top hosts and sample matches per rule.
    """
    from detections.compiler.plan import load_plan
    from detections.content.workflow.backtest import (
        archive_events,
        backtest,
        corpus_events,
        parse_since,
        select_rules,
    )
    from detections.stream.spark_session import build_session

    s = get_settings()
    plan = load_plan(rules, allow_unknown_fields=allow_unknown_fields, config=_config(s))
    for r in plan.rejections:
        err.print(f"[yellow]not loaded: {escape(f'{r.path}: {r.reason} {r.message}')}[/yellow]")
    plan = select_rules(plan, rule_id or [])
    if not plan.rules:
        raise _fail("no rule to backtest")
    cutoff = parse_since(since) if since else None
    err.print(f"starting Spark ({s.spark_master}) …")
    quiet = {} if sys.stderr.isatty() else {"spark.ui.showConsoleProgress": "false"}
    spark = build_session(s, app_name="sigstream-backtest", extra_conf=quiet)
    try:
        if from_:
            err.print(f"reading {', '.join(map(str, from_))} …")
            events, rejected = corpus_events(spark, from_, cutoff)
            if rejected:
                err.print(f"  {rejected:,} records could not become events (skipped)")
            source = ", ".join(map(str, from_))
        else:
            cutoff = cutoff or parse_since("7d")
            folder = archive or s.archive_dir
            try:
                events = archive_events(spark, folder, cutoff)
            except FileNotFoundError as exc:
                raise _fail(str(exc)) from exc
            source = f"{folder} since {cutoff}"
        result = backtest(
            events,
            plan,
            top=top,
            samples=samples,
            progress=lambda m: err.print(f"  {m}", highlight=False),
        )
    finally:
        spark.stop()
    if as_json:
        console.print_json(json.dumps(result, default=lambda o: getattr(o, "__dict__", str(o))))
        return
    console.print(
        f"backtest over {result.events:,} events from {source} "
        f"({result.days} day(s), {result.first} .. {result.last})",
        highlight=False,
    )
    for rb in result.rules:
        per_day = rb.hits / max(result.days, 1)
        console.rule(f"{rb.title} [{rb.level}]  {rb.hits:,} hits, {per_day:,.1f}/day")
        if rb.per_day:
            console.print("per day: " + ", ".join(f"{d} {n:,}" for d, n in rb.per_day))
        if rb.top_hosts:
            console.print("top hosts: " + ", ".join(f"{h} {n:,}" for h, n in rb.top_hosts))
        for sample in rb.samples:
            console.print(f"  {json.dumps(sample, default=str)[:300]}", highlight=False)


# --- coverage ---------------------------------------------------------------------------


def coverage_cmd(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Rules to measure (default: the deployed bundle's active rules)."),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Where to write the ATT&CK Navigator layer JSON.")
    ] = Path("build/attack-coverage-layer.json"),
    include_shadow: Annotated[
        bool, typer.Option(help="Count shadow rules too (deployed bundle only).")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """ATT&CK tactic/technique coverage of the active rules, as a table and a Navigator layer."""
    from detections.compiler.plan import load_plan
    from detections.content.deploy.watcher import ACTIVE

    rules: list[CoveredRule] = []
    deployed = _store(store).current_bundle() if not paths else None
    if deployed is not None:
        overrides = _store(store).overrides()
        defaults = deployed.default_modes
        wanted = {"active", "canary"} | ({"shadow"} if include_shadow else set())
        for r in deployed.manifest["rules"]:
            mode = overrides.get(r["id"]) or defaults.get(r["id"]) or ACTIVE
            if mode.mode in wanted:
                rules.append(CoveredRule(r["id"], r["title"], tuple(r["tags"]), mode.mode))
        source = f"deployed bundle {deployed.version}"
    else:
        plan = load_plan(paths or [OWN_RULES], allow_unknown_fields=True)
        rules = [CoveredRule(str(p.rule.id), p.rule.title, p.rule.tags) for p in plan.rules]
        source = ", ".join(map(str, paths or [OWN_RULES]))
    cov = coverage(rules)
    table = Table(title=f"ATT&CK coverage of {cov.rules} rules ({source})")
    for col in ("tactic", "techniques", "rules"):
        table.add_column(col, overflow="fold")
    for tactic, by_tech in cov.matrix.items():
        name = TACTICS.get(tactic, (tactic, tactic))
        titles = {t for ts in by_tech.values() for t in ts}
        table.add_row(f"{name[1]} ({name[0]})", ", ".join(by_tech), str(len(titles)))
    console.print(table)
    covered = {t for t in TACTICS if t in cov.matrix}
    console.print(
        f"{len(cov.techniques)} techniques in {len(covered)} of {len(TACTICS)} tactics; "
        f"not covered: {', '.join(TACTICS[t][1] for t in TACTICS if t not in covered) or 'none'}"
    )
    if cov.untagged:
        console.print(f"[yellow]{len(cov.untagged)} rule(s) without ATT&CK technique tags[/yellow]")
    out.parent.mkdir(parents=True, exist_ok=True)
    layer = navigator_layer(cov, "Sigstream coverage", f"{cov.rules} rules from {source}")
    out.write_text(json.dumps(layer, indent=2) + "\n")
    console.print(f"wrote ATT&CK Navigator layer {out}")


# --- keys, bundles, deployment ----------------------------------------------------------


def keygen_cmd(
    private: Annotated[
        Path | None, typer.Option(help="Private key file (default: settings signing_key).")
    ] = None,
    public: Annotated[
        Path | None,
        typer.Option(help="Public key file (default: <trusted_keys>/<name>.pub)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing key files.")] = False,
) -> None:
    """Create an Ed25519 key pair for signing rule bundles.

    The public key goes where the detection job looks for trusted keys.
    """
    from detections.content.deploy.signing import generate_keypair

    s = get_settings()
    private = private or s.signing_key
    public = public or s.trusted_keys / f"{private.stem}.pub"
    try:
        pair = generate_keypair(private, public, overwrite=force)
    except FileExistsError as exc:
        raise _fail(f"{exc} (use --force to replace it)") from exc
    console.print(f"key {pair.key_id}: private {pair.private_path} (keep secret), public {public}")


def bundle_cmd(
    paths: Paths = None,
    out: Annotated[Path | None, typer.Option(help="Bundle file to write.")] = None,
    version: Annotated[
        str | None, typer.Option(help="Bundle version (default: date-hash).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Private signing key (default: settings signing_key).")
    ] = None,
    placeholders: Annotated[
        Path | None, typer.Option(help="Placeholder values (default: settings placeholders_file).")
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode", help="Start mode of a rule: RULE_ID=shadow | active | canary:0.1 (repeat)."
        ),
    ] = None,
    default_mode: Annotated[
        str | None,
        typer.Option(help="Start mode of every rule without --mode (e.g. shadow)."),
    ] = None,
    run_tests: Annotated[
        bool, typer.Option("--test/--no-test", help="Run rule tests first.")
    ] = True,
    allow_unknown_fields: AllowUnknown = False,
) -> None:
    """Build a signed, versioned bundle of rules, filters and placeholders.

    Rules, meta filters (exceptions) and placeholder values travel together, with content
    hashes, signed with Ed25519. Rule tests run first.
    """
    from detections.content.deploy.bundle import BundleError, build_bundle, sign_manifest
    from detections.content.deploy.signing import load_private_key
    from detections.content.workflow.ruletests import run_tests as run_rule_tests

    s = get_settings()
    rule_paths = paths or [OWN_RULES]
    key = key or s.signing_key
    if not key.exists():
        raise _fail(f"no signing key at {key}: run `sigstream rules keygen` first")
    try:
        modes = {}
        for item in mode or []:
            rule, _, text = item.partition("=")
            modes[rule.strip()] = parse_mode(text)
        start = parse_mode(default_mode) if default_mode else None
    except ValueError as exc:
        raise _fail(f"bad --mode: {exc}") from exc
    if run_tests:
        err.print("running rule tests …")
        report = run_rule_tests(
            rule_paths, config=_config(s), allow_unknown_fields=allow_unknown_fields
        )
        bad = [r for r in report.results if r.failures]
        if bad or report.errors:
            for message in report.errors + [f"{r.title}: {r.failures[0]}" for r in bad]:
                err.print(f"  {message}", highlight=False)
            raise _fail("rule tests failed: fix them or pass --no-test", 1)
    try:
        manifest, plan = build_bundle(
            rule_paths,
            version=version,
            placeholders=placeholders or s.placeholders_file,
            modes=modes,
            default_mode=start,
            allow_unknown_fields=allow_unknown_fields,
        )
    except BundleError as exc:
        raise _fail(str(exc), 1) from exc
    bundle = sign_manifest(manifest, load_private_key(key))
    target = out or Path("build") / f"rules-{bundle.version}.bundle.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(bundle.to_json())
    console.print(
        f"bundle {bundle.version}: {len(plan.rules)} rules, {len(manifest['files'])} files, "
        f"signed by key {bundle.signature['key_id'] if bundle.signature else '-'} -> {target}"
    )


CanaryGate = Annotated[
    bool,
    typer.Option(
        "--canary/--no-canary",
        help="Prove the rules with a canary round first (when a canary gateway is "
        "configured, docs/canaries.md).",
    ),
]


def deploy_cmd(
    bundle: Annotated[Path, typer.Argument(help="A signed bundle file (sigstream rules bundle).")],
    store: StoreOpt = None,
    trusted: Annotated[
        Path | None,
        typer.Option(help="Trusted public key file or folder (default: settings trusted_keys)."),
    ] = None,
    canary: CanaryGate = True,
) -> None:
    """Verify a bundle and make it current; the running job picks it up next batch.

    Then, when a canary gateway is configured, the new and changed rules are proven with a
    canary round through the gateway and the running job (exit 1 if one does not fire:
    the bundle stays deployed, in the modes it was bundled with; do not promote it)."""
    from detections.content.canary.changes import changed_rule_ids
    from detections.content.deploy.bundle import BundleError, read_bundle
    from detections.content.deploy.signing import SignatureError

    s = get_settings()
    deployment = _store(store)
    state = deployment.state()
    previous = deployment.current_bundle() if state["current"] else None
    try:
        entry = deployment.deploy(bundle, _trusted(s, trusted))
    except (BundleError, SignatureError) as exc:
        raise _fail(f"refused: {exc}", 1) from exc
    console.print(f"deployed {entry['version']} as generation {entry['generation']}")
    if not canary:
        return
    changed = changed_rule_ids(read_bundle(bundle).files, previous.files if previous else None)
    what = f"{len(changed)} new or changed rule(s)"
    if not _canary_gate(s, store, changed, what):
        raise typer.Exit(1)


def _canary_gate(s: Settings, store: Path | None, rule_ids: list[str], what: str) -> bool:
    """Run the canary gate; False when a rule did not prove (None configured: True)."""
    from sigstream.commands import canary as canaries

    if not rule_ids:
        err.print(f"no canary round: {what}")
        return True
    settings = s.model_copy(update={"deploy_dir": store}) if store else s
    results = canaries.gate(settings, rule_ids)
    if results is None:
        err.print(
            f"[yellow]no canary round for {what}: no canary gateway configured "
            "(SIGSTREAM_CANARY_GATEWAY_URL, SIGSTREAM_CANARY_TOKEN; docs/canaries.md)[/yellow]"
        )
        return True
    canaries.print_gate(results)
    bad = canaries.failed(results)
    if bad:
        err.print(f"[red]{len(bad)} of {len(results)} rule(s) did not prove they fire[/red]")
        return False
    return True


def rollback_cmd(store: StoreOpt = None) -> None:
    """Go back to the previously deployed bundle."""
    from detections.content.deploy.bundle import BundleError

    try:
        entry = _store(store).rollback()
    except BundleError as exc:
        raise _fail(str(exc), 1) from exc
    console.print(f"rolled back to {entry['version']} (generation {entry['generation']})")


Force = Annotated[
    bool, typer.Option("--force", help="Promote even if the rule's canary does not fire.")
]


def _effective_mode(store: Path | None, rule_id: str) -> RuleMode:
    from detections.content.deploy.watcher import ACTIVE

    deployment = _store(store)
    bundle = deployment.current_bundle()
    defaults = bundle.default_modes if bundle else {}
    return deployment.overrides().get(rule_id) or defaults.get(rule_id) or ACTIVE


def _promotion_gate(
    store: Path | None, rule_id: str, before: RuleMode, after: RuleMode, force: bool
) -> None:
    """Promoting a rule out of canary (or shadow) to active first proves it with a canary
    round; a rule that does not fire is not promoted unless ``--force``."""
    if before.mode not in ("canary", "shadow") or after.mode != "active":
        return
    if _canary_gate(get_settings(), store, [rule_id], f"rule {rule_id}"):
        return
    if force:
        err.print("[yellow]--force: promoting anyway[/yellow]")
        return
    raise _fail(f"rule {rule_id} stays {before.describe()}: its canary did not fire", 1)


def mode_cmd(
    rule_id: Annotated[str, typer.Argument(help="Rule id.")],
    mode: Annotated[
        str, typer.Argument(help="active | shadow | disabled | canary:FRACTION[:sensor|tenant]")
    ],
    reason: Annotated[str | None, typer.Option(help="Why (shown in status).")] = None,
    store: StoreOpt = None,
    force: Force = False,
) -> None:
    """Set one rule's deployment mode (overrides the bundle's).

    Promoting a rule from canary or shadow to active first runs a canary round for it
    (when a canary gateway is configured) and refuses if it does not fire."""
    try:
        parsed = parse_mode(mode)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    with_reason = RuleMode(parsed.mode, parsed.fraction, parsed.canary_by, reason)
    _promotion_gate(store, rule_id, _effective_mode(store, rule_id), with_reason, force)
    entry = _store(store).set_mode(rule_id, with_reason)
    console.print(f"rule {rule_id}: {entry['detail']} (generation {entry['generation']})")


def disable_cmd(
    rule_id: Annotated[str, typer.Argument(help="Rule id.")],
    reason: Annotated[str | None, typer.Option(help="Why (shown in status).")] = None,
    store: StoreOpt = None,
) -> None:
    """Kill switch: the job stops evaluating the rule from its next micro-batch."""
    mode_cmd(rule_id, "disabled", reason, store)


def enable_cmd(
    rule_id: Annotated[str, typer.Argument(help="Rule id.")],
    store: StoreOpt = None,
    force: Force = False,
) -> None:
    """Remove a rule's override (kill switch, demotion, mode): back to the bundle's.

    When that promotes it from canary or shadow to active, a canary round runs first."""
    from detections.content.deploy.watcher import ACTIVE

    deployment = _store(store)
    bundle = deployment.current_bundle()
    after = (bundle.default_modes if bundle else {}).get(rule_id) or ACTIVE
    _promotion_gate(store, rule_id, _effective_mode(store, rule_id), after, force)
    entry = deployment.clear_mode(rule_id)
    console.print(f"rule {rule_id}: override cleared (generation {entry['generation']})")


def status_cmd(as_json: AsJson = False, store: StoreOpt = None) -> None:
    """Deployment state and what the detection job has loaded, refused, quarantined.

    Shows the bundle, generation, mode overrides, refusals and demotions from the
    deployment store, and the job's status file.
    """
    from detections.content.deploy.watcher import ACTIVE
    from detections.stream.status import read_status

    s = get_settings()
    state = _store(store).state()
    job_path = s.run_dir / "detect" / "status.json"
    job = read_status(job_path) if job_path.exists() else None
    if as_json:
        console.print_json(json.dumps({"deployment": state, "job": job}))
        return
    if state["current"] is None and job is None:
        raise _fail("nothing deployed and no job status: the detection job has not run here yet")
    if state["current"]:
        version = state["bundles"][state["current"]]["version"]
        running = state.get("job") or {}
        console.print(
            f"deployment generation {state['generation']}: bundle {version}; job runs "
            f"generation {running.get('generation', '-')} ({running.get('version', '-')}, "
            f"{running.get('at', 'never')})",
            highlight=False,
        )
        bundle = _store(store).current_bundle()
        overrides = _store(store).overrides()
        modes = Counter(
            (overrides.get(r["id"]) or bundle.default_modes.get(r["id"]) or ACTIVE).mode
            for r in bundle.manifest["rules"]
        )
        console.print(
            f"{sum(modes.values())} rules: "
            + ", ".join(f"{n} {m}" for m, n in sorted(modes.items())),
            highlight=False,
        )
        if state["overrides"]:
            table = Table(title="Rule mode overrides")
            for col in ("rule id", "mode", "set by", "reason", "at"):
                table.add_column(col, overflow="fold")
            for rid, m in state["overrides"].items():
                fraction = f" {m['fraction']:.0%}" if m.get("fraction") else ""
                table.add_row(
                    rid, m["mode"] + fraction, m.get("set_by", ""), m.get("reason") or "", m["at"]
                )
            console.print(table)
        for r in state["refusals"][-3:]:
            err.print(f"[red]refused generation {r['generation']}: {r['reason']}[/red]")
        for d in state["demotions"][-5:]:
            console.print(f"[yellow]demoted {d['rule_id']}: {d['reason']} ({d['at']})[/yellow]")
        history = ", ".join(
            f"{h['generation']}:{h['action']} {h.get('version') or h.get('rule_id', '')}"
            for h in state["history"][-6:]
        )
        console.print(f"recent: {history}", highlight=False)
    if job is not None:
        console.print(
            f"job plan {job['plan_version']}: {job['rules_loaded']:,} rules loaded; "
            f"{job['batches']:,} batches, {job['events']:,} events, "
            f"{job['dead_letters']:,} dead letters, {job['findings']:,} findings "
            f"(updated {job['updated']})"
        )
        refused = ", ".join(f"{k}: {v}" for k, v in job["rejected_by_reason"].items())
        console.print(f"refused at load: {refused or 'none'}")
        if job["quarantined"]:
            table = Table(title="Quarantined at run time")
            for column in ("rule id", "title", "reason", "since"):
                table.add_column(column)
            for q in job["quarantined"]:
                table.add_row(q["rule_id"], q["title"], q["reason"], q["at"])
            console.print(table)


for _name, _command in (
    ("validate", validate_cmd),
    ("test", test_cmd),
    ("backtest", backtest_cmd),
    ("coverage", coverage_cmd),
    ("keygen", keygen_cmd),
    ("bundle", bundle_cmd),
    ("deploy", deploy_cmd),
    ("status", status_cmd),
    ("mode", mode_cmd),
    ("disable", disable_cmd),
    ("enable", enable_cmd),
    ("rollback", rollback_cmd),
    ("drift", drift_cmd),
):
    app.command(_name)(_command)

# Verdict feedback (issue 22): false-positive rates and filters from analysts' verdicts.
from sigstream.commands.rules_tune import fp_rate_cmd, tune_cmd  # noqa: E402

app.command("fp-rate")(fp_rate_cmd)
app.command("tune")(tune_cmd)
