"""The running sensor: collectors -> bounded per-source buffers -> ``SensorAgent`` (seq,
spool, gateway) and heartbeats that carry the sources' status and the tamper hashes.

Backpressure never reaches the host: a collector's ``emit`` only appends to its source's
buffer and returns; when the buffer is full the event is counted in
``dropped_by_source`` (sent in every heartbeat, summed into ``events_dropped``) and the
collector goes on reading its socket. The spool behind the agent absorbs gateway outages.
SIGHUP reloads the configuration (a bad file keeps the old one, logged); SIGTERM/SIGINT
stop cleanly: collectors stop, buffered events are spooled, a last heartbeat says why,
and the spool is flushed for a bounded time.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.agent import SensorAgent
from ingest.client import GatewayClient
from ingest.sensor.auditd import AuditdCollector
from ingest.sensor.config import ConfigError, load_config
from ingest.sensor.execs import ExecCollector
from ingest.sensor.files import FileCollector
from ingest.sensor.network import NetworkCollector
from ingest.sensor.tamper import sensor_digest

log = logging.getLogger(__name__)

AGENT_VERSION = "sigstream-sensor/1"


class SourceBuffer:
    """A bounded buffer of one source's events: ``put`` never blocks, it counts drops."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.accepted = 0
        self._lock = threading.Lock()

    def put(self, event: dict[str, Any]) -> bool:
        with self._lock:
            if len(self.items) >= self.size:
                self.dropped += 1
                return False
            self.items.append(event)
            self.accepted += 1
            return True

    def take(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            n = min(limit, len(self.items))
            return [self.items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)


def stop_reason_for(signum: int) -> str:
    """The reason a clean stop names (systemd sets INVOCATION_ID for its services)."""
    name = signal.Signals(signum).name
    return f"{name} (systemd stop)" if os.environ.get("INVOCATION_ID") else name


class Sensor:
    def __init__(self, config_path: Path, *, reset_seq: bool = False) -> None:
        self.config_path = config_path
        self.config, self.config_sha256 = load_config(config_path)
        self.reset_seq = reset_seq
        self.collectors: dict[str, Any] = {}
        self.buffers: dict[str, SourceBuffer] = {}
        self.disabled: dict[str, str] = {}
        self.code_sha256 = sensor_digest()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.stop_reason = "stopped"
        self.agent: SensorAgent | None = None
        self.client: GatewayClient | None = None

    # -- status for heartbeats -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        sources = {name: c.status() for name, c in self.collectors.items()}
        sources |= {name: f"unavailable: {why}" for name, why in self.disabled.items()}
        dropped = {name: b.dropped for name, b in self.buffers.items()}
        proc = self.collectors.get("process")
        if proc is not None and proc.kernel_overruns:
            dropped["process_kernel_overruns"] = proc.kernel_overruns
        self.code_sha256 = sensor_digest()  # a change on disk shows in the next heartbeat
        return {
            "sensor_sha256": self.code_sha256,
            "config_sha256": self.config_sha256,
            "sources": sources,
            "dropped_by_source": dropped,
        }

    # -- collectors ------------------------------------------------------------------------

    def _emit(self, name: str) -> Callable[[dict[str, Any]], bool]:
        buffer = self.buffers[name]
        return buffer.put

    def start_collectors(self) -> None:
        cfg = self.config
        src = cfg.sources
        wanted: dict[str, Any] = {}
        if src.process.enabled:
            wanted["process"] = ExecCollector(
                cfg.sensor_id, cfg.host, nice=src.process.nice, realtime=src.process.realtime
            )
        else:
            self.disabled["process"] = "disabled in the configuration"
        lookup = wanted["process"].known if "process" in wanted else None
        if src.file.enabled:
            wanted["file"] = FileCollector(
                cfg.sensor_id,
                cfg.host,
                src.file.paths,
                src.file.recursive,
                src.file.max_marks,
                lookup=lookup,
            )
        else:
            self.disabled["file"] = "disabled in the configuration"
        if src.network.enabled:
            wanted["network"] = NetworkCollector(
                cfg.sensor_id, cfg.host, src.network.interval_s, lookup=lookup
            )
        else:
            self.disabled["network"] = "disabled in the configuration"
        if src.auditd.enabled:
            wanted["auditd"] = AuditdCollector(cfg.sensor_id, cfg.host, Path(src.auditd.path))
        for name, collector in wanted.items():
            self.buffers[name] = SourceBuffer(cfg.queue_size)
            self.collectors[name] = collector
            collector.start(self._emit(name))
            log.info("source %s: %s", name, collector.status())

    # -- reload ----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Apply the configuration file again; a bad file keeps the old configuration."""
        try:
            new, digest = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        fixed = self.config.restart_needed(new)
        if fixed:
            log.warning("reload: %s change only on restart; kept as running", ", ".join(fixed))
            keep = {n: getattr(self.config, n) for n in fixed if "." not in n}
            sources = new.sources.model_copy(
                update={
                    n: getattr(new.sources, n).model_copy(
                        update={"enabled": getattr(self.config.sources, n).enabled}
                    )
                    for n in type(new.sources).model_fields
                }
            )
            new = new.model_copy(update={**keep, "sources": sources})
        if "file" in self.collectors:
            f = new.sources.file
            self.collectors["file"].reconfigure(f.paths, f.recursive, f.max_marks)
        if "network" in self.collectors:
            self.collectors["network"].reconfigure(new.sources.network.interval_s)
        for buffer in self.buffers.values():
            buffer.size = new.queue_size
        if self.agent is not None:
            self.agent.heartbeat_interval_s = new.heartbeat_interval_s
        self.config, self.config_sha256 = new, digest
        log.info("configuration reloaded (sha256 %s)", digest[:12])
        return True

    # -- the main loop -----------------------------------------------------------------------

    def pump(self, limit: int = 2000) -> int:
        """Move buffered events to the agent (numbered, spooled); returns how many."""
        assert self.agent is not None
        moved = 0
        for buffer in self.buffers.values():
            events = buffer.take(limit)
            if events:
                moved += self.agent.submit(events)
        return moved

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()

    def install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            self.request_stop(stop_reason_for(signum))

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def run(self, flush_timeout_s: float = 10.0) -> int:
        # The exec reader must get the GIL within about a millisecond: a short-lived
        # process is gone from procfs soon after its exec (default interval: 5 ms).
        sys.setswitchinterval(0.0005)
        cfg = self.config
        token = cfg.gateway.token_file.read_text().strip()
        verify: bool | str = str(cfg.gateway.ca) if cfg.gateway.ca else True
        cfg.spool_dir.mkdir(parents=True, exist_ok=True)
        self.client = GatewayClient(
            cfg.gateway.url, token, cfg.spool_dir, verify=verify, batch_events=cfg.batch_events
        )
        self.start_collectors()
        self.agent = SensorAgent(
            self.client,
            cfg.sensor_id,
            cfg.host,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            agent_version=AGENT_VERSION,
            reset_seq=self.reset_seq,
            status=self.status,
        )
        self.client.start()
        self.agent.start()
        log.info("sensor %s running (config sha256 %s)", cfg.sensor_id, self.config_sha256[:12])
        try:
            while not self._stop.is_set():
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                if not self.pump():
                    self._stop.wait(0.05)
        finally:
            self.shutdown(flush_timeout_s)
        return 0

    def shutdown(self, flush_timeout_s: float) -> None:
        if self.agent is not None:
            self.agent.close()  # no periodic heartbeat while the sources stop
        for collector in self.collectors.values():
            collector.stop()
        if self.agent is not None:
            while self.pump():
                pass
            self.agent.heartbeat(stop_reason=self.stop_reason)
        if self.client is not None:
            try:
                if not self.client.flush(timeout_s=flush_timeout_s):
                    log.warning("gateway unreachable: unsent events stay in the spool")
            finally:
                self.client.close()
        log.info("sensor stopped: %s", self.stop_reason)
