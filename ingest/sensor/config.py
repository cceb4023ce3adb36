"""The sensor's configuration file (YAML), validated; what may change on reload.

Loading is pure apart from reading the file: a bad file raises ``ConfigError`` with the
reason, and the running sensor keeps its old configuration (``runner.Sensor.reload``).
Paths, intervals and queue sizes change on SIGHUP; the gateway, credential, spool and
sensor id need a restart (a reload that changes them says so and keeps the old ones).
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.safe_yaml import ContentError, load_yaml

#: Where writes are worth seeing on a Linux server: staging directories of droppers,
#: scheduled-task, service, sudo and shell-profile persistence, SSH keys.
DEFAULT_FILE_PATHS = (
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/etc/cron.d",
    "/etc/cron.daily",
    "/etc/cron.hourly",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/etc/crontab",
    "/var/spool/cron/crontabs",
    "/etc/systemd/system",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/profile.d",
    "/etc/ld.so.preload",
    "/root/.ssh",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewayConfig(_Strict):
    url: str = "https://127.0.0.1:8443"
    token_file: Path = Path("/etc/sigstream/sensor.token")
    ca: Path | None = None  # None: the system's trust store


class ProcessSource(_Strict):
    enabled: bool = True
    # The exec reader must read procfs before a short-lived process is gone: SCHED_FIFO
    # (lowest real-time priority) when ``realtime``, else this nice value (CAP_SYS_NICE).
    realtime: bool = True
    nice: int = Field(default=-10, ge=-20, le=19)


class FileSource(_Strict):
    enabled: bool = True
    paths: list[str] = Field(default_factory=lambda: list(DEFAULT_FILE_PATHS))
    recursive: bool = False
    max_marks: int = Field(default=256, ge=1, le=8192)


class NetworkSource(_Strict):
    enabled: bool = True
    interval_s: float = Field(default=1.0, ge=0.1, le=60)


class AuditdSource(_Strict):
    """Optional: follow auditd's log when auditd runs (reported unavailable otherwise)."""

    enabled: bool = False
    path: str = "/var/log/audit/audit.log"


class Sources(_Strict):
    process: ProcessSource = Field(default_factory=ProcessSource)
    file: FileSource = Field(default_factory=FileSource)
    network: NetworkSource = Field(default_factory=NetworkSource)
    auditd: AuditdSource = Field(default_factory=AuditdSource)


class SensorConfig(_Strict):
    sensor_id: str = Field(default_factory=lambda: socket.gethostname().lower(), min_length=1)
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    spool_dir: Path = Path("/var/lib/sigstream-sensor/spool")
    heartbeat_interval_s: float = Field(default=60.0, ge=1, le=3600)
    queue_size: int = Field(default=10_000, ge=10, le=1_000_000)  # per source
    batch_events: int = Field(default=500, ge=1, le=10_000)
    sources: Sources = Field(default_factory=Sources)

    def restart_needed(self, new: SensorConfig) -> list[str]:
        """Settings that differ in ``new`` and only take effect on a restart."""
        fixed = ("sensor_id", "host", "gateway", "spool_dir", "batch_events")
        out = [n for n in fixed if getattr(self, n) != getattr(new, n)]
        for name in Sources.model_fields:  # a source is started or not at start
            if getattr(self.sources, name).enabled != getattr(new.sources, name).enabled:
                out.append(f"sources.{name}.enabled")
        return out


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says why."""


def parse_config(text: bytes) -> SensorConfig:
    try:
        data = load_yaml(text) or {}
    except ContentError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping")
    try:
        return SensorConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from exc


def load_config(path: Path) -> tuple[SensorConfig, str]:
    """The configuration and the sha256 of the file's bytes (tamper evidence)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_config(raw), hashlib.sha256(raw).hexdigest()
