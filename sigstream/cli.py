"""``sigstream``: one command line for sensors, detection engineers, analysts and operators.

Subcommands follow the data flow: ``infra`` (services), ``replay`` (sensor -> Kafka),
``detect`` (Kafka -> Spark -> Elasticsearch), ``rules`` (detection content), ``findings``
(triage), ``demo`` (all of it, end to end, on one machine).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from common.client_options import confluent_kafka_config
from common.safe_yaml import ContentError
from common.settings import PROJECT_ROOT, Settings, get_settings
from detections.content.defaults import SAMPLE_EVENTS, default_rule_paths
from infra.services import down, up
from sigstream import commands

__all__ = ["SAMPLE_EVENTS", "app", "default_rule_paths", "main"]


class _ContentRefusals(TyperGroup):
    """Content a command cannot load (a bad rule, bundle, placeholder, grouping or key
    file) ends the command with its one-line reason and exit code 2, never a traceback:
    every loader raises ContentError with the reason, this is the net under all of them."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not isinstance(exc, ContentError) and not _is_bundle_error(exc):
                raise
            reason = escape(" ".join(str(exc).split()))
            err.print(f"[red]refused: {reason}[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def _is_bundle_error(exc: Exception) -> bool:
    """A bad bundle or deployment state (only checked once something was raised)."""
    from detections.content.deploy.bundle import BundleError
    from detections.content.deploy.signing import SignatureError

    return isinstance(exc, BundleError | SignatureError)


app = typer.Typer(
    cls=_ContentRefusals,
    help="Sigstream: endpoint telemetry -> Kafka -> Spark Sigma rules -> Elasticsearch findings.",
    no_args_is_help=True,
    add_completion=False,
)
rules_app = typer.Typer(
    help="Detection content: check and compile Sigma rules.", no_args_is_help=True
)
findings_app = typer.Typer(
    help="Findings in Elasticsearch: summarise and list.", no_args_is_help=True
)
schema_app = typer.Typer(
    help="The event contract and what is generated from it.", no_args_is_help=True
)

# The composition root: every command group is a typer.Typer named `app` in its module
# under sigstream/commands/, mounted here and nowhere else (groups that share a name, such
# as `rules`, are merged into one).
rules_app.add_typer(commands.rules.app)
rules_app.add_typer(commands.correlations.app)
rules_app.command("health")(commands.canary.health_cmd)
findings_app.add_typer(commands.triage.app)
app.add_typer(rules_app, name="rules")
app.add_typer(findings_app, name="findings")
app.add_typer(schema_app, name="schema")
app.add_typer(
    commands.infra.app, name="infra", help="Start, stop and inspect Kafka and Elasticsearch."
)
app.add_typer(commands.gateway.app, name="gateway")
app.add_typer(commands.canary.app, name="canary")
app.add_typer(commands.sensor.app, name="sensor")
app.add_typer(commands.sensors.app)
app.add_typer(commands.fleet.app)
app.add_typer(commands.alerts.app)

# Wide enough for the tables when output goes to a file or CI log (rich assumes 80 there).
console = Console(stderr=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("kafka", "elastic_transport", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- replay ----------------------------------------------------------------------------


@app.command()
def replay(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files or folders: SigmaHQ regression .json, OTRF .zip/.tar.gz, schema .jsonl; "
            "Windows .evtx files when named (folder walks skip .evtx)"
        ),
    ],
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant id stamped on every event.")] = "default",
    topic: Annotated[str | None, typer.Option(help="Events topic (default: settings).")] = None,
    gateway: Annotated[
        str | None, typer.Option(help="Send through the ingest gateway at this URL instead.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="SIGSTREAM_GATEWAY_TOKEN", help="Gateway credential.")
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(help="CA/cert file the gateway's TLS is checked with.")
    ] = None,
) -> None:
    """Send log files to Kafka as sensors would; print counts sent / rejected.

    Valid events go to the events topic keyed by sensor id; records that cannot become
    schema events go to the dead-letter topic unchanged, with the reason in a header.
    """
    if gateway:  # sensors' path: disk spool -> HTTPS gateway -> Kafka (docs/gateway.md)
        commands.gateway.replay_via_gateway(
            paths, gateway, token, ca, rate=rate or None, limit=limit
        )
        return
    # Deferred: the Kafka client and the event models are not needed at CLI start-up.
    from ingest.producer import EventProducer
    from ingest.replay import replay as run_replay

    s = get_settings()
    events_topic = topic or s.events_topic

    def progress(sent: int, rejected: int) -> None:
        err.print(f"  … {sent:,} sent, {rejected:,} rejected", highlight=False)

    try:
        security = confluent_kafka_config(s, bootstrap=False)
        producer = EventProducer(s.kafka_bootstrap, events_topic, s.dlq_topic, **security)
        producer.wait_ready()
    except Exception as exc:  # KafkaUnavailable, a bad client setting
        err.print(
            f"[red]cannot reach Kafka at {s.kafka_bootstrap}: {exc}[/red]\n"
            "Start it with: sigstream infra up"
        )
        raise typer.Exit(2) from exc
    with producer:
        result = run_replay(
            paths, producer, rate=rate or None, limit=limit, tenant_id=tenant, progress=progress
        )
    per_second = (result.sent + result.rejected) / max(result.seconds, 1e-9)
    console.print(
        f"replayed to {events_topic}: [bold]{result.sent:,} sent[/bold], "
        f"{result.rejected:,} rejected to {s.dlq_topic}, {result.failed:,} failed "
        f"in {result.seconds:.1f}s ({per_second:,.0f}/s)"
    )
    if result.failed:
        for e in result.errors:
            err.print(f"[red]  {e}[/red]")
        raise typer.Exit(1)


# --- detect ----------------------------------------------------------------------------


AllowUnknown = Annotated[
    bool,
    typer.Option(
        "--allow-unknown-fields",
        help="Load rules that name fields the schema lacks (they match nothing on those fields).",
    ),
]


def status_path(settings: Settings) -> Path:
    return settings.run_dir / "detect" / "status.json"


def _load_plan_verbose(rule_paths: list[Path], allow_unknown_fields: bool = False):  # type: ignore[no-untyped-def]
    from detections.compiler.plan import load_placeholders, load_plan

    started = time.monotonic()
    err.print(f"compiling Sigma rules from {', '.join(str(p) for p in rule_paths)} …")
    config = load_placeholders(get_settings().placeholders_file)
    plan = load_plan(rule_paths, allow_unknown_fields=allow_unknown_fields, config=config)
    reasons = Counter(r.reason for r in plan.rejections)
    by_reason = ", ".join(f"{k}: {v}" for k, v in reasons.most_common())
    err.print(
        f"  {len(plan.rules):,} rules planned on {len(plan.routes)} routes, "
        f"{len(plan.rejections):,} not loaded ({by_reason or 'none'}) "
        f"in {time.monotonic() - started:.1f}s; plan version {plan.version}"
    )
    return plan


@app.command()
def detect(
    rules: Annotated[
        list[Path] | None,
        typer.Option(
            "--rules",
            "-r",
            help="Rule files or folders (repeatable). Default: SigmaHQ Windows rules.",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Process everything in Kafka now, then stop.")
    ] = False,
    trigger: Annotated[
        float | None,
        typer.Option(
            help="Seconds between micro-batches when they keep up (default "
            "SIGSTREAM_TRIGGER_S, 0.5): lower is fresher findings, higher is less idle work.",
            min=0.0,
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: .run/checkpoints/detect).")
    ] = None,
    allow_unknown_fields: AllowUnknown = False,
    deployments: Annotated[
        bool | None,
        typer.Option(
            "--deployments/--no-deployments",
            help="Follow the deployment store (signed bundles, modes, kill switch; see "
            "`sigstream rules deploy`). Default: when something has been deployed.",
        ),
    ] = None,
    index_events: Annotated[
        bool,
        typer.Option(
            "--index-events/--no-index-events",
            help="Also index every valid event in Elasticsearch (SIGSTREAM_EVENTS_INDEX), "
            "for triage context: related events and process ancestry.",
        ),
    ] = False,
    archive: Annotated[
        bool,
        typer.Option(
            "--archive/--no-archive",
            help="Also append every valid event to the Parquet archive (SIGSTREAM_ARCHIVE_DIR) "
            "that `sigstream rules backtest` reads.",
        ),
    ] = False,
    sensor_health: Annotated[
        bool,
        typer.Option(
            "--sensor-health/--no-sensor-health",
            help="Also run the sensor-health query (silent sensors, sequence gaps and resets, "
            "clock skew; `sigstream sensors`). See docs/sensor-health.md.",
        ),
    ] = True,
    correlations: Annotated[
        bool,
        typer.Option(
            "--correlations/--no-correlations",
            help="Also run Sigma correlation rules (from the rule folders; by default also "
            "detections/correlation/rules) as a second streaming query (docs/correlations.md).",
        ),
    ] = True,
    field_drift: Annotated[
        bool,
        typer.Option(
            "--field-drift/--no-field-drift",
            help="Also observe which fields arrive per logsource and run the field-drift "
            "stage (fields active rules read that stopped arriving; `sigstream rules drift`). "
            "See docs/field-drift.md.",
        ),
    ] = True,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize",
            help="Also run the normalizing stage: shippers' records on the raw topics "
            "(SIGSTREAM_RAW_TOPIC_PATTERN, telemetry.raw.<format>) -> events topic + DLQ. "
            "See docs/normalize.md.",
        ),
    ] = True,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics of the job at "
            "http://SIGSTREAM_METRICS_HOST:PORT/metrics (default: "
            "SIGSTREAM_METRICS_DETECT_PORT when SIGSTREAM_METRICS_ENABLED; docs/metrics.md).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the streaming detection job: Kafka -> Spark (Sigma) -> findings in Elasticsearch.

    Rules that cannot be compiled are refused with a reason at start; a rule that fails at
    run time is quarantined and the job goes on with the others (see `sigstream rules status`).
    With deployments, the job runs the deployed bundle and follows new deployments, rule
    modes and the kill switch between micro-batches, and demotes noisy or costly rules.
    """
    from common.client_options import (
        confluent_kafka_config,
        elasticsearch_kwargs,
        spark_kafka_options,
    )
    from detections.content.deploy.demotion import policy_from_settings
    from detections.sinks.grouping import load_config
    from detections.stream.job import JobConfig, run
    from detections.stream.spark_session import build_session

    _setup_logging(verbose)
    s = get_settings()
    grouping = load_config(s.grouping_file, s.group_window_s)  # a bad file: refused at start
    plan = _load_plan_verbose(rules or default_rule_paths(s), allow_unknown_fields)
    if deployments is None:
        deployments = (s.deploy_dir / "state.json").exists()
    follow = {
        "deploy_dir": s.deploy_dir,
        "trusted_keys": s.trusted_keys,
        "shadow_index": s.shadow_findings_index,
        "demotion": policy_from_settings(s),
    }
    cfg = JobConfig(
        **(follow if deployments else {}),
        events_index=s.events_index if index_events else None,
        archive_dir=s.archive_dir if archive else None,
        kafka_bootstrap=s.kafka_bootstrap,
        events_topic=s.events_topic,
        dlq_topic=s.dlq_topic,
        matches_topic=s.matches_topic,
        internal_partitions=s.topic_partitions,
        summaries_topic=s.summaries_topic if sensor_health else None,
        observations_topic=s.drift_topic if field_drift else None,
        grouping=grouping,
        es_hosts=tuple(s.es_hosts),
        findings_index=s.findings_index,
        kafka_options=spark_kafka_options(s, bootstrap=False),
        producer_options=confluent_kafka_config(s),
        es_options=elasticsearch_kwargs(s),
        es_patience_s=s.es_patience_s,
        rule_budget_s=s.rule_budget_s or None,
        checkpoint_dir=checkpoint or s.checkpoint_dir / "detect",
        available_now=once,
        trigger_seconds=s.trigger_s if trigger is None else trigger,
        health_trigger_seconds=s.health_trigger_s,
        max_records_per_task=s.max_records_per_task or None,
        state_partitions=s.state_partitions,
        status_file=status_path(s),
        operator_tenant=s.operator_tenant,
    )
    from detections.drift.stage import FieldDriftStage
    from detections.health.stage import SensorHealthStage
    from sigstream.commands.correlations import with_correlations

    companions: list[Any] = [SensorHealthStage.of(s)] if sensor_health else []
    companions += [FieldDriftStage.of(s, plan)] if field_drift else []
    with ThreadPoolExecutor(1, thread_name_prefix="correlation-content") as pool:
        # The correlation content (a scan of the rule folders, the base rules compiled)
        # loads while the Spark JVM starts.
        # generate: false base rules write no findings of their own.
        loading = pool.submit(with_correlations, cfg, rules, s) if correlations else None
        err.print(f"starting Spark ({s.spark_master}) …")
        spark = build_session(s)
        if loading is not None:
            cfg, more = loading.result()
            companions += more
    from detections.normalize.stage import NormalizeStage

    upstream = [NormalizeStage.of(s)] if normalize else []
    metrics, listener = _detect_metrics(s, metrics_port, spark)
    try:
        totals = run(
            spark,
            plan,
            cfg,
            on_batch=metrics.observe_batch if metrics else None,
            companions=companions,
            upstream=upstream,
        )
    finally:
        if listener is not None:
            listener.stop()
    for rule_id, reason in totals.quarantined.items():
        err.print(f"[red]quarantined at run time: rule {rule_id}: {reason}[/red]")
    console.print(
        f"processed {totals.events:,} events in {totals.batches} batches: "
        f"{totals.rejected:,} rejected to {s.dlq_topic}, {totals.outcome()}"
    )
    spark.stop()


def _detect_metrics(s: Settings, port: int | None, spark: Any) -> tuple[Any, Any]:
    """The job's metrics and their listener, or (None, None) when metrics are off."""
    from common.metrics import MetricsEndpoint, include_shared, serve_metrics
    from detections.stream.metrics import DetectMetrics

    endpoint = MetricsEndpoint.from_settings(s, "detect", port)
    if endpoint is None:
        return None, None
    metrics = DetectMetrics(s.metrics_rule_series)
    metrics.watch(spark)
    listener = serve_metrics(endpoint, include_shared(metrics.registry))
    err.print(f"metrics on {listener.url}")
    return metrics, listener


# --- rules -----------------------------------------------------------------------------


@rules_app.command("check")
def rules_check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Rule files or folders (default: SigmaHQ Windows rules)."),
    ] = None,
    show_rejected: Annotated[
        bool, typer.Option("--show-rejected", help="List every rejected rule.")
    ] = False,
    allow_unknown_fields: AllowUnknown = False,
) -> None:
    """Compile rules and print what loads and what is rejected, by reason.

    Exits non-zero only when one of the project's own rules (detections/rules) is rejected.
    """
    s = get_settings()
    plan = _load_plan_verbose(paths or default_rule_paths(s), allow_unknown_fields)
    table = Table(title="Sigma rules")
    table.add_column("outcome")
    table.add_column("reason")
    table.add_column("rules", justify="right")
    table.add_row("compiled", "", f"{len(plan.rules):,}")
    for reason, count in Counter(r.reason for r in plan.rejections).most_common():
        table.add_row("rejected", reason, f"{count:,}")
    console.print(table)
    own = (PROJECT_ROOT / "detections" / "rules").resolve()
    own_errors = [r for r in plan.rejections if own in Path(str(r.path)).resolve().parents]
    if show_rejected or own_errors:
        for r in plan.rejections if show_rejected else own_errors:
            message = escape(" ".join(r.message.split()))
            console.print(
                f"  {escape(str(r.path))}: [yellow]{r.reason}[/yellow] {message}",
                highlight=False,
                soft_wrap=True,
            )
    if own_errors:
        err.print(f"[red]{len(own_errors)} of the project's own rules were rejected[/red]")
        raise typer.Exit(1)


# --- findings --------------------------------------------------------------------------


@findings_app.command("summary")
def findings_summary(
    top: Annotated[int, typer.Option(help="Rows to show.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    include_canary: Annotated[
        bool,
        typer.Option("--include-canary", help="Count canary findings too (docs/canaries.md)."),
    ] = False,
) -> None:
    """Findings in Elasticsearch grouped by rule, level and host (canaries left out)."""
    from triage.queries import summary_rows

    rows, total = summary_rows(get_settings(), top, include_reserved=include_canary)
    if as_json:
        console.print_json(json.dumps({"total": total, "groups": rows}))
        return
    table = Table(title=f"Findings in Elasticsearch: {total:,} in all")
    for col, justify in (("rule", "left"), ("level", "left"), ("host", "left"), ("count", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row["rule"], row["level"] or "", row["host"], f"{row['count']:,}")
    console.print(table)


# --- schema ----------------------------------------------------------------------------


@schema_app.command("export")
def schema_export(
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = Path("build/schema"),
) -> None:
    """Write the generated JSON Schema, Elasticsearch mappings and Spark schema."""
    # Deferred: building the event models costs ~0.15 s, which other commands never need.
    from schemas.findings import Finding
    from schemas.generate import (
        es_event_mappings,
        es_mappings,
        event_json_schema,
        spark_event_schema,
    )

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "event.schema.json": event_json_schema(),
        "events.mappings.json": es_event_mappings(),
        "findings.mappings.json": es_mappings(Finding),
        "event.spark.json": json.loads(spark_event_schema().json()),
    }
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
        console.print(f"wrote {out / name}")


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# --- demo ------------------------------------------------------------------------------

#: A few OTRF attack recordings for the demo: lateral movement, credential access, persistence.
DEMO_OTRF = (
    "credential_access/host/psh_lsass_memory_dump_comsvcs.zip",
    "credential_access/host/cmd_sam_copy_esentutl.zip",
    "defense_evasion/host/psh_mshta_html_application_execution.zip",
    "execution/host/empire_launcher_vbs.zip",
    "lateral_movement/host/covenant_sharpwmi_create_dcerpc_wmi.zip",
    "persistence/host/empire_schtasks_creation_standard_user.zip",
    "privilege_escalation/host/empire_uac_shellapi_fodhelper.zip",
)


def demo_inputs(settings: Settings) -> list[Path]:
    data = settings.shared_data
    inputs = [data / "sigma-regression"] if (data / "sigma-regression").is_dir() else []
    inputs += [data / "otrf" / rel for rel in DEMO_OTRF if (data / "otrf" / rel).exists()]
    if not inputs:
        err.print(f"[yellow]{data} is absent: replaying the bundled sample events instead[/yellow]")
        inputs = [SAMPLE_EVENTS]
    return inputs


@app.command()
def demo(
    keep_running: Annotated[
        bool, typer.Option(help="Leave Kafka and Elasticsearch running afterwards.")
    ] = True,
) -> None:
    """Run everything on this machine and show the findings.

    Starts Kafka and Elasticsearch, replays real attack telemetry, runs Sigma detection over
    it with Spark until Kafka is drained, and prints the findings read back from
    Elasticsearch.
    """
    s = get_settings()
    started = time.monotonic()
    console.rule("1/4  services (Kafka, Elasticsearch)")
    up()
    commands.infra.setup_findings_store()
    console.rule("2/4  sensors -> Kafka (replaying real Windows telemetry)")
    replay(demo_inputs(s), rate=0, limit=None, tenant="default", topic=None)
    console.rule("3/4  Spark Structured Streaming: Sigma rules over the stream")
    # Sensor health stays off: the demo replays recordings made years ago, which it would
    # rightly report as clock skew on every sensor (`sigstream fleet` demonstrates it).
    detect(
        rules=None,
        once=True,
        checkpoint=None,
        index_events=True,
        archive=True,
        sensor_health=False,
        correlations=True,
        verbose=False,
    )
    console.rule("4/4  findings in Elasticsearch")
    findings_summary(top=25, as_json=False)
    console.print(
        f"\ndone in {time.monotonic() - started:.0f}s. Look further:\n"
        f"  sigstream findings summary --top 100\n"
        f"  curl -s '{s.es_hosts[0]}/{s.findings_index}/_search?q=rule.level:high&size=3&pretty'\n"
        f"  sigstream rules check --show-rejected\n"
        f"  sigstream infra status   |   sigstream infra down"
    )
    if not keep_running:
        down()
