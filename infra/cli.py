"""``sigstream infra ...``: start, stop, inspect and pre-fetch the local services.

A thin shell over ``infra.services``; every command is idempotent and safe to repeat.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra import services
from infra.proc import ServiceError

app = typer.Typer(
    help="Local Kafka (KRaft) and Elasticsearch: fetched from Maven Central, run as processes.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


class Service(StrEnum):
    kafka = "kafka"
    elasticsearch = "elasticsearch"


def _names(only: list[Service] | None) -> list[str] | None:
    return [s.value for s in only] if only else None


def _print_status() -> None:
    table = Table(title="Sigstream services")
    for column in ("service", "state", "pid", "address", "log"):
        table.add_column(column)
    colours = {"running": "green", "external": "yellow", "stopped": "red"}
    for st in services.status().values():
        colour = colours.get(st.state, "white")
        table.add_row(
            st.name,
            f"[{colour}]{st.state}[/{colour}]",
            str(st.pid or "-"),
            st.address,
            str(st.log or "-"),
        )
    console.print(table)


@app.command()
def up(
    only: Annotated[
        list[Service] | None,
        typer.Option("--only", help="Start only this service (repeatable). Default: all."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for readiness (downloads not included).")
    ] = 180.0,
) -> None:
    """Fetch what is missing (first run only), start what is not running, wait until ready."""
    started = time.monotonic()
    try:
        services.up(_names(only), timeout=timeout)
    except ServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    _print_status()
    console.print(f"ready in {time.monotonic() - started:.1f}s")


@app.command()
def down(
    only: Annotated[
        list[Service] | None,
        typer.Option("--only", help="Stop only this service (repeatable). Default: all."),
    ] = None,
    wipe: Annotated[
        bool, typer.Option("--wipe", help="Also delete their data (topics, indices).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait before SIGKILL.")] = 30.0,
) -> None:
    """Stop the services infra started (SIGTERM, then SIGKILL after the timeout)."""
    try:
        stopped = services.down(_names(only), wipe=wipe, timeout=timeout)
    except ServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status() -> None:
    """Per service: running (started here), external (someone else's) or stopped."""
    _print_status()


@app.command()
def fetch(
    spark: Annotated[
        bool, typer.Option(help="Also fetch Spark's Kafka connector for the installed pyspark.")
    ] = True,
) -> None:
    """Download everything into the cache now (e.g. in a CI setup step); start nothing."""
    try:
        folders = services.fetch(spark=spark)
    except ServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for name, folder in folders.items():
        console.print(f"{name}: {folder}")
