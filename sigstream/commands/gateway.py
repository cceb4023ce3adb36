"""``sigstream gateway serve | enroll | revoke | list | cert``."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from common.client_options import confluent_kafka_config
from common.settings import get_settings

app = typer.Typer(
    help="The HTTPS ingest gateway: sensors -> authenticated batches -> Kafka.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def gateway_dir() -> Path:
    return get_settings().run_dir / "gateway"


def default_credentials() -> Path:
    return gateway_dir() / "credentials.json"


Credentials = Annotated[
    Path | None,
    typer.Option(help="Credential store (default: .run/gateway/credentials.json)."),
]


@app.command()
def enroll(
    tenant: Annotated[str, typer.Option(help="Tenant the sensor belongs to.")],
    sensor: Annotated[str, typer.Option(help="Sensor id (events must carry it or none).")],
    relay: Annotated[
        bool, typer.Option(help="A collector that may send for any sensor id of its tenant.")
    ] = False,
    credentials: Credentials = None,
) -> None:
    """Issue a credential; prints the token once (only its hash is stored)."""
    from ingest.gateway.credentials import CredentialError, CredentialStore

    try:
        key_id, token = CredentialStore(credentials or default_credentials()).enroll(
            tenant, sensor, relay=relay
        )
    except CredentialError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    err.print(f"enrolled sensor {sensor!r} of tenant {tenant!r} as key {key_id}")
    print(token)


@app.command()
def revoke(
    key_or_sensor: Annotated[str, typer.Argument(help="A key id, or a sensor id (all its keys).")],
    tenant: Annotated[str | None, typer.Option(help="Only keys of this tenant.")] = None,
    credentials: Credentials = None,
) -> None:
    """Revoke credentials; a running gateway refuses them from its next request on."""
    from ingest.gateway.credentials import CredentialError, CredentialStore

    try:
        keys = CredentialStore(credentials or default_credentials()).revoke(key_or_sensor, tenant)
    except CredentialError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"revoked {len(keys)} key(s): {', '.join(keys)}")


@app.command("list")
def list_(credentials: Credentials = None) -> None:
    """Enrolled credentials (never the tokens)."""
    from ingest.gateway.credentials import CredentialStore

    table = Table("key", "tenant", "sensor", "relay", "created", "revoked")
    for c in CredentialStore(credentials or default_credentials()).credentials():
        table.add_row(
            c.key_id, c.tenant_id, c.sensor_id, "yes" if c.relay else "", c.created, c.revoked or ""
        )
    console.print(table)


@app.command()
def cert(
    out: Annotated[Path | None, typer.Option(help="Folder (default: .run/gateway/tls).")] = None,
    host: Annotated[
        list[str] | None, typer.Option(help="DNS name or IP the cert is for (repeatable).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing pair.")] = False,
) -> None:
    """Generate a self-signed certificate and key for the gateway."""
    from ingest.gateway.tls import generate_self_signed

    folder = out or gateway_dir() / "tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.exists() and not force:
        err.print(f"[red]{cert_path} exists (use --force to replace it)[/red]")
        raise typer.Exit(1)
    generate_self_signed(cert_path, key_path, host or ["localhost", "127.0.0.1"])
    console.print(f"wrote {cert_path} and {key_path}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8443,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key.")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Plain HTTP: the embedded demo only.")
    ] = False,
    topic: Annotated[str | None, typer.Option(help="Events topic (default: settings).")] = None,
    dlq_topic: Annotated[str | None, typer.Option(help="DLQ topic (default: settings).")] = None,
    rate: Annotated[float, typer.Option(help="Events/s per credential (0: no limit).")] = 20_000,
    burst: Annotated[float, typer.Option(help="Events a credential may send at once.")] = 40_000,
    byte_rate: Annotated[
        float, typer.Option(help="Decoded bytes/s per credential (0: no limit).")
    ] = 32 * 1024 * 1024,
    max_connections: Annotated[
        int, typer.Option(help="Open connections at once, per worker process.")
    ] = 256,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds for a request's headers to arrive.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds for a request's body to arrive.")
    ] = 60.0,
    syslog_port: Annotated[
        int | None,
        typer.Option(help="Also take syslog over TCP+TLS (RFC 5425) on this port."),
    ] = None,
    parallel_batches: Annotated[
        int, typer.Option(help="Batches one process decodes or delivers at once.")
    ] = 4,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Gateway processes sharing the port (default: the number of cores). Each "
            "has its own de-duplication window, rate limits and connection cap."
        ),
    ] = None,
    credentials: Credentials = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics at http://SIGSTREAM_METRICS_HOST:PORT/metrics, "
            "one port for all workers (default: SIGSTREAM_METRICS_GATEWAY_PORT when "
            "SIGSTREAM_METRICS_ENABLED; docs/metrics.md)."
        ),
    ] = None,
) -> None:
    """Serve the gateway (HTTPS; a self-signed certificate is generated on first start)."""
    import os

    from common.metrics import MetricsEndpoint
    from ingest.gateway.app import GatewayOptions
    from ingest.gateway.server import ConnectionLimits, ServeSpec, TlsFiles
    from ingest.gateway.server import serve as run_gateway
    from ingest.gateway.tls import ensure_cert

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    s = get_settings()
    tls: TlsFiles | None = None
    if insecure_http:
        err.print("[yellow]plain HTTP: tokens travel in clear text (demo only)[/yellow]")
    else:
        folder = gateway_dir() / "tls"
        tls = TlsFiles(tls_cert or folder / "cert.pem", tls_key or folder / "key.pem")
        if ensure_cert(tls.cert, tls.key, ["localhost", "127.0.0.1", host]):
            err.print(f"generated a self-signed certificate: {tls.cert}")
    creds = credentials or default_credentials()
    if not creds.exists():
        err.print(
            f"[yellow]no credentials yet in {creds}: enroll with "
            "'sigstream gateway enroll --tenant T --sensor S'[/yellow]"
        )
    syslog = None
    if syslog_port is not None:
        from ingest.gateway.syslog_server import SyslogOptions

        if tls is None:
            err.print("[red]--syslog-port needs TLS (not with --insecure-http)[/red]")
            raise typer.Exit(2)
        syslog = SyslogOptions(
            syslog_port, host, tls.cert, tls.key, max_connections, reuse_port=True
        )
        err.print(f"syslog over TLS on {host}:{syslog_port}")
    scheme = "https" if tls else "http"
    procs = workers if workers is not None else (os.cpu_count() or 1)
    err.print(
        f"gateway on {scheme}://{host}:{port}/v1/events -> Kafka {s.kafka_bootstrap}"
        f" ({procs} process{'es' if procs > 1 else ''})"
    )
    limits = ConnectionLimits(
        max_connections=max_connections,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout + 15,  # the app answers 408 first; this is the hard stop
    )
    spec = ServeSpec(
        host=host,
        port=port,
        tls=tls,
        limits=limits,
        credentials=creds,
        bootstrap=s.kafka_bootstrap,
        events_topic=topic or s.events_topic,
        dlq_topic=dlq_topic or s.dlq_topic,
        options=GatewayOptions(
            events_per_second=rate,
            burst_events=burst,
            bytes_per_second=byte_rate,
            body_timeout_s=body_timeout,
            parallel_batches=parallel_batches,
        ),
        client_config=confluent_kafka_config(s),
        syslog=syslog,
        metrics=MetricsEndpoint.from_settings(s, "gateway", metrics_port),
        metrics_dir=s.run_dir / "metrics" / f"gateway-{port}",
    )
    if spec.metrics is not None:
        err.print(f"metrics on {spec.metrics.url}")
    if procs <= 1:  # a bad credential file refuses the start here, before serving
        run_gateway(spec)
        return
    from ingest.gateway.credentials import CredentialStore

    CredentialStore(creds).load()  # refuse the start in the parent, not in every worker
    run_gateway(spec, procs)


def replay_via_gateway(
    paths: list[Path],
    url: str,
    token: str | None,
    ca: Path | None,
    *,
    rate: float | None,
    limit: int | None,
) -> None:
    """``sigstream replay --gateway URL``: spool the files' events and deliver them."""
    from ingest.client import CredentialRejected, GatewayClient
    from ingest.replay import replay_to_gateway

    if not token:
        err.print("[red]--token (or SIGSTREAM_GATEWAY_TOKEN) is required with --gateway[/red]")
        raise typer.Exit(2)
    spool = get_settings().run_dir / "spool" / hashlib.sha256(url.encode()).hexdigest()[:12]
    client = GatewayClient(url, token, spool, verify=str(ca) if ca else True).start()
    started = time.monotonic()

    def progress(spooled: int, skipped: int) -> None:
        s = client.stats
        err.print(f"  … {spooled:,} spooled, {s.accepted:,} accepted, {skipped:,} not events")

    try:
        ids, skipped = replay_to_gateway(paths, client, rate=rate, limit=limit, progress=progress)
        err.print(f"{len(ids):,} events spooled in {spool}; delivering …")
        while not client.flush(timeout_s=10):
            progress(len(ids), skipped)
        client.close()
    except CredentialRejected as exc:
        err.print(f"[red]{exc}[/red] (events stay spooled in {spool})")
        raise typer.Exit(1) from exc
    s = client.stats
    console.print(
        f"replayed through {url}: [bold]{s.accepted:,} accepted[/bold], "
        f"{s.duplicates:,} duplicates, {s.rejected:,} rejected (DLQ) in "
        f"{time.monotonic() - started:.1f}s; {skipped:,} records were not events"
    )
