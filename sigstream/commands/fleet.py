"""``sigstream fleet``: send a synthetic sensor fleet to Kafka (demos, soak tests of the
sensor-health query). The fleet itself is ``ingest.fleet``."""

from __future__ import annotations

from typing import Annotated

import typer

from common.client_options import confluent_kafka_config
from common.settings import get_settings


def fleet_cmd(
    sensors: Annotated[int, typer.Option(help="Sensors in the fleet.")] = 1000,
    rounds: Annotated[int, typer.Option(help="Rounds to send (one every --round-s).")] = 60,
    round_s: Annotated[float, typer.Option(help="Seconds between rounds.")] = 5.0,
    events_per_round: Annotated[int, typer.Option(help="Events per sensor per round.")] = 2,
    heartbeat_every: Annotated[int, typer.Option(help="Rounds between heartbeats.")] = 2,
    silent: Annotated[float, typer.Option(help="Share of sensors that go silent.")] = 0.05,
    dropping: Annotated[float, typer.Option(help="Share that skip sequence numbers.")] = 0.05,
    restarting: Annotated[float, typer.Option(help="Share that restart numbering.")] = 0.05,
    skewed: Annotated[float, typer.Option(help="Share with a clock 15 min off.")] = 0.05,
    incident_round: Annotated[int, typer.Option(help="Round of the drops/restarts.")] = 5,
    silent_after: Annotated[int, typer.Option(help="Round the silent ones stop at.")] = 10,
    tenant: Annotated[str, typer.Option(help="Tenant of the fleet.")] = "fleet",
    seed: Annotated[int, typer.Option(help="Same seed, same fleet.")] = 7,
    topic: Annotated[str | None, typer.Option(help="Kafka topic (default: events).")] = None,
) -> None:
    """Send a synthetic fleet (events and heartbeats; some sensors go silent, drop events,
    restart or have a skewed clock) to Kafka in real time, for `sigstream detect`'s
    sensor-health query and `sigstream sensors`. Prints which sensors misbehave how."""
    # Deferred: the event models and the Kafka client are not needed at CLI start-up.
    from ingest.fleet import Fleet, FleetSpec, run_fleet
    from ingest.producer import EventProducer, KafkaUnavailable

    s = get_settings()
    spec = FleetSpec(
        sensors=sensors,
        events_per_round=events_per_round,
        heartbeat_every=heartbeat_every,
        round_s=round_s,
        silent=silent,
        dropping=dropping,
        restarting=restarting,
        skewed=skewed,
        silent_after=silent_after,
        incident_round=incident_round,
        tenant_id=tenant,
        seed=seed,
    )
    fleet = Fleet.build(spec)
    for kind, names in fleet.expected().items():
        shown = ", ".join(sorted(names)[:5]) + (" …" if len(names) > 5 else "")
        typer.echo(f"{kind:>7}: {len(names):,} sensors {shown}", err=True)
    security = confluent_kafka_config(s, bootstrap=False)
    producer = EventProducer(s.kafka_bootstrap, topic or s.events_topic, s.dlq_topic, **security)
    try:
        producer.wait_ready()
    except KafkaUnavailable as exc:
        typer.echo(f"cannot reach Kafka at {s.kafka_bootstrap}: {exc}", err=True)
        raise typer.Exit(2) from exc

    def progress(done: int, sent: int) -> None:
        if done % 10 == 0 or done == rounds:
            typer.echo(f"  round {done}/{rounds}: {sent:,} records sent", err=True)

    with producer:
        sent = run_fleet(
            fleet, producer.send_event, rounds, flush=producer.flush, progress=progress
        )
    if producer.counts.failed:
        typer.echo(f"{producer.counts.failed} records not delivered: {producer.counts.errors}")
        raise typer.Exit(1)
    typer.echo(f"sent {sent:,} records from {sensors:,} sensors in {rounds} rounds")


app = typer.Typer()
app.command(
    "fleet", short_help="Send a synthetic misbehaving fleet to Kafka (sensor-health demo)."
)(fleet_cmd)
