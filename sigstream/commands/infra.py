"""``sigstream infra ...``: start, stop, inspect and pre-fetch the local services.

A thin shell over ``infra.services``; every command is idempotent and safe to repeat.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from common.settings import get_settings
from infra import cluster_config, services
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


class Profile(StrEnum):
    default = "default"
    cluster = "cluster"
    secure = "secure"


ProfileOpt = Annotated[
    Profile,
    typer.Option(
        "--profile",
        "-p",
        help="default: one Kafka + one Elasticsearch node. cluster: 3 Kafka brokers (RF 3), "
        "2 Elasticsearch nodes and a Spark master with 2 workers, on ports 17077-19301. "
        "secure: Kafka SASL_SSL + ACLs on 19492, Elasticsearch with security and TLS on "
        "19400 (see infra/README.md).",
    ),
]


def _names(only: list[Service] | None) -> list[str] | None:
    return [s.value for s in only] if only else None


def _no_only(only: list[Service] | None) -> None:
    if only:
        raise typer.BadParameter("--only applies to the default profile", param_hint="--only")


@dataclass(frozen=True)
class ProfileOps:
    """What `up`, `down`, `status` and `env` do for one profile: one table, no if/elif.

    ``module`` has the profile's ``up``, ``down`` and ``status``; it is imported when a
    command uses it (``infra.secure`` loads cryptography, which other commands never need).
    A ``whole`` profile starts and stops all its members together (no ``--only``)."""

    title: str
    module: str
    whole: bool
    env: Callable[[str | None, str | None, bool], None]  # kafka user, ES user, show secrets

    def impl(self) -> Any:
        return importlib.import_module(self.module)

    def up(self, only: list[Service] | None, timeout: float) -> None:
        if self.whole:
            _no_only(only)
            self.impl().up(timeout=max(timeout, 240.0))
            return
        names = _names(only)
        self.impl().up(names, timeout=timeout)
        if names is None or "elasticsearch" in names:
            setup_findings_store()

    def down(self, only: list[Service] | None, wipe: bool, timeout: float) -> list[str]:
        if self.whole:
            _no_only(only)
            return list(self.impl().down(wipe=wipe, timeout=timeout))
        return list(self.impl().down(_names(only), wipe=wipe, timeout=timeout))

    def status(self) -> dict[str, Any]:
        return dict(self.impl().status())


PROFILES: dict[Profile, ProfileOps] = {
    Profile.default: ProfileOps(
        "Sigstream services", "infra.services", False, lambda *a: _default_env(*a)
    ),
    Profile.cluster: ProfileOps(
        "Sigstream cluster profile", "infra.cluster", True, lambda *a: _cluster_env(*a)
    ),
    Profile.secure: ProfileOps(
        "Sigstream secure profile", "infra.secure", True, lambda *a: _secure_env(*a)
    ),
}


def _print_status(profile: Profile = Profile.default) -> None:
    ops = PROFILES[profile]
    table = Table(title=ops.title)
    for column in ("service", "state", "pid", "address", "log"):
        table.add_column(column)
    colours = {"running": "green", "external": "yellow", "stopped": "red"}
    for st in ops.status().values():
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
    profile: ProfileOpt = Profile.default,
) -> None:
    """Fetch what is missing (first run only), start what is not running, wait until ready."""
    started = time.monotonic()
    try:
        PROFILES[profile].up(only, timeout)
    except ServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    _print_status(profile)
    console.print(f"ready in {time.monotonic() - started:.1f}s")


def setup_findings_store() -> None:
    """Index templates and rollover aliases for findings and events (docs/triage.md)."""
    # Deferred: the Elasticsearch client is only needed here, not at CLI start-up.
    from detections.sinks.elasticsearch import connect
    from triage.lifecycle import setup_store

    settings = get_settings()
    es = connect(settings.es_hosts)  # auth and CA from the settings (common/client_options.py)
    try:
        for line in setup_store(es, settings.findings_index, settings.events_index):
            console.print(f"[dim]{line}[/dim]")
    finally:
        es.close()


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
    profile: ProfileOpt = Profile.default,
) -> None:
    """Stop the services infra started (SIGTERM, then SIGKILL after the timeout)."""
    try:
        stopped = PROFILES[profile].down(only, wipe, timeout)
    except ServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status(profile: ProfileOpt = Profile.default) -> None:
    """Per process: running (started here), external (someone else's) or stopped."""
    _print_status(profile)


@app.command()
def env(
    profile: ProfileOpt = Profile.cluster,
    kafka_user: Annotated[
        str | None, typer.Option(help="secure profile: Kafka user (gateway, job, admin).")
    ] = None,
    es_user: Annotated[
        str | None,
        typer.Option(help="secure profile: ES user (sigstream_job, sigstream_api, ...)."),
    ] = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="secure profile: include the passwords.")
    ] = False,
) -> None:
    """Print the exports that point Sigstream (and Spark) at a profile.

    eval "$(sigstream infra env --profile cluster)" and `sigstream detect` then runs on the
    Spark standalone master, reading the 3 brokers and writing to the 2 ES nodes.
    eval "$(sigstream infra env --profile secure --kafka-user job --es-user sigstream_job
    --show-secrets)" runs it as the job's users against the secure profile.
    """
    PROFILES[profile].env(kafka_user, es_user, show_secrets)


def _default_env(*_: object) -> None:
    """Unset what the other profiles' exports set."""
    for key in cluster_config.client_env(cluster_config.ClusterSpec(), sys.executable):
        console.print(f"unset {key}", highlight=False)


def _cluster_env(*_: object) -> None:
    spec = cluster_config.ClusterSpec()
    text = cluster_config.render_exports(cluster_config.client_env(spec, sys.executable))
    print(text, end="")


@app.command()
def kill(
    member: Annotated[str, typer.Argument(help="e.g. kafka-2, es-1, spark-worker-1")],
) -> None:
    """SIGKILL one process of the cluster profile (a failure drill); `up --profile cluster`
    brings it back."""
    try:
        pid = PROFILES[Profile.cluster].impl().kill(member)
    except (ServiceError, KeyError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"killed {member} (pid {pid})")


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


def _secure_env(kafka_user: str | None, es_user: str | None, show_secrets: bool) -> None:
    # Deferred: the secure profile's modules load cryptography.
    from infra import secure
    from infra import security as sec

    if kafka_user is not None and kafka_user not in sec.KAFKA_USERS:
        raise typer.BadParameter(f"choose from {sec.KAFKA_USERS}", param_hint="--kafka-user")
    if es_user is not None and es_user not in (sec.ES_SUPERUSER, *sec.ES_USERS):
        raise typer.BadParameter(f"choose from {sec.ES_USERS}", param_hint="--es-user")
    where = secure.SecureLayout.of(get_settings())
    try:
        passwords = secure.load_passwords(where) if show_secrets else None
    except ServiceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    values = sec.client_env(
        sec.SecureSpec(), where.secrets, kafka_user=kafka_user, es_user=es_user, passwords=passwords
    )
    print(cluster_config.render_exports(values), end="")
    if not show_secrets and (kafka_user or es_user):
        err.print(f"passwords left out: add --show-secrets (they are in {where.passwords})")


@app.command("rotate")
def rotate_secrets(
    user: Annotated[
        list[str] | None,
        typer.Option("--user", help="Rotate only this user's password (repeatable)."),
    ] = None,
    certs: Annotated[
        bool, typer.Option("--certs", help="Issue new server certificates and restart.")
    ] = False,
    profile: ProfileOpt = Profile.secure,
) -> None:
    """secure profile: new passwords for gateway, job and the sigstream_* ES users (live,
    no restart), or new server certificates (--certs, restarts both services)."""
    if profile is not Profile.secure:
        raise typer.BadParameter("only the secure profile has secrets", param_hint="--profile")
    secure = PROFILES[Profile.secure].impl()
    try:
        if certs:
            secure.rotate_certs()
            console.print("new server certificates in place (same CA)")
        else:
            done = secure.rotate_passwords(users=user)
            console.print(f"rotated: {', '.join(done)}; restart clients with the new passwords")
    except (ServiceError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
