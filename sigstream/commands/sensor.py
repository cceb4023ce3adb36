"""``sigstream sensor run | check | example-config``: the user-mode Linux sensor
(docs/sensor.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="A user-mode Linux sensor: process executions (netlink connector + /proc), file "
    "writes (fanotify), outbound TCP connections (/proc/net), optionally auditd records, "
    "shipped through the gateway. "
    "See docs/sensor.md.",
    no_args_is_help=True,
)
err = Console(stderr=True)

ConfigPath = Annotated[
    Path,
    typer.Option("--config", "-c", help="The sensor's YAML configuration (see example-config)."),
]
DEFAULT_CONFIG = Path("/etc/sigstream/sensor.yml")

EXAMPLE = """\
# sigstream sensor configuration (docs/sensor.md). Reload with SIGHUP (systemctl reload).
sensor_id: web-01                 # default: the host name, lower case
gateway:
  url: https://gateway.example:8443
  token_file: /etc/sigstream/sensor.token   # from `sigstream gateway enroll`
  ca: /etc/sigstream/gateway-ca.pem         # omit to use the system trust store
spool_dir: /var/lib/sigstream-sensor/spool
heartbeat_interval_s: 60
queue_size: 10000                 # events buffered per source before dropping (counted)
sources:
  process: {enabled: true}        # needs CAP_NET_ADMIN (+ CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH)
  file:                           # needs CAP_SYS_ADMIN (fanotify)
    enabled: true
    paths: [/tmp, /var/tmp, /dev/shm, /etc/cron.d, /etc/crontab, /var/spool/cron/crontabs,
            /etc/systemd/system, /etc/sudoers.d, /root/.ssh]
    recursive: false
    max_marks: 256
  network: {enabled: true, interval_s: 1.0}
  auditd: {enabled: false}        # true when auditd runs: follows /var/log/audit/audit.log
"""


@app.command("example-config")
def example_config() -> None:
    """Print a commented example configuration."""
    print(EXAMPLE, end="")


@app.command()
def check(config: ConfigPath = DEFAULT_CONFIG) -> None:
    """Validate the configuration and say which sources this host allows."""
    from ingest.sensor import auditd, files, procconn
    from ingest.sensor.config import ConfigError, load_config

    try:
        cfg, digest = load_config(config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    print(f"config ok: sensor {cfg.sensor_id}, sha256 {digest}")
    src = cfg.sources
    net = Path("/proc/net/tcp")
    checks = {
        "process": (src.process.enabled, procconn.available),
        "file": (src.file.enabled, files.available),
        "network": (src.network.enabled, lambda: None if net.exists() else f"no {net}"),
        "auditd": (src.auditd.enabled, lambda: auditd.available(Path(src.auditd.path))),
    }
    for name, (enabled, probe) in checks.items():
        status = (probe() or "ok") if enabled else "disabled in the configuration"
        print(f"{name}: {status}")


@app.command()
def run(
    config: ConfigPath = DEFAULT_CONFIG,
    reset_seq: Annotated[
        bool, typer.Option(help="Number events from 0 again (a reinstall; the backend reports it).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the sensor until SIGTERM/SIGINT (a last heartbeat says it stopped cleanly);
    SIGHUP reloads the configuration."""
    from ingest.sensor.config import ConfigError
    from ingest.sensor.runner import Sensor

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        sensor = Sensor(config, reset_seq=reset_seq)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    sensor.install_signals()
    raise typer.Exit(sensor.run())
