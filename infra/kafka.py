"""Kafka 4.x, one combined broker+controller node in KRaft mode, as a plain JVM process.

The broker runs from the jars ``infra.fetch`` copied out of Maven Central, with the same
``java`` command line the tarball's scripts would build. Storage is formatted once (the
StorageTool costs a JVM start, so it is skipped when ``meta.properties`` exists).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.client_options import kafka_python_kwargs
from common.settings import Settings
from infra import config
from infra.config import Layout
from infra.proc import (
    ServiceError,
    ServiceStatus,
    exited_during_startup,
    fail,
    port_open,
    progress,
    rotate,
    running_pid,
    spawn,
    terminate,
)

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"
# Still the Scala object in the kafka_2.13 jar on 4.x (org.apache.kafka.tools has no
# StorageTool); checked against kafka_2.13-4.3.1.jar.
STORAGE_TOOL = "kafka.tools.StorageTool"


def address(settings: Settings) -> tuple[str, int]:
    return config.parse_hostport(settings.kafka_bootstrap, 9092)


def bootstrap(settings: Settings) -> str:
    host, port = address(settings)
    return f"{host}:{port}"


def status(settings: Settings, layout: Layout) -> ServiceStatus:
    pid = running_pid(layout.kafka_pid, MAIN_CLASS)
    host, port = address(settings)
    if pid is not None:
        state = "running"
    elif port_open(host, port):
        state = "external"
    else:
        state = "stopped"
    return ServiceStatus(NAME, state, pid, f"{host}:{port}", layout.kafka_log)


def write_config(settings: Settings, layout: Layout) -> tuple[Path, Path]:
    """Write server.properties and log4j2.properties into the run dir; return their paths."""
    host, port = address(settings)
    layout.kafka_run.mkdir(parents=True, exist_ok=True)
    props = config.kafka_server_properties(
        host=host,
        port=port,
        controller_port=settings.kafka_controller_port,
        log_dir=layout.kafka_data,
        partitions=settings.topic_partitions,
    )
    server = layout.kafka_run / "server.properties"
    server.write_text(config.render_properties(props))
    log4j = layout.kafka_run / "log4j2.properties"
    log4j.write_text(config.kafka_log4j2_properties())
    return server, log4j


def cluster_id(layout: Layout) -> str:
    """The id in formatted storage, else a persisted one, else a new one (then persisted)."""
    meta = layout.kafka_data / "meta.properties"
    with contextlib.suppress(OSError):
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    id_file = layout.kafka_run / "cluster.id"
    with contextlib.suppress(OSError):
        existing = id_file.read_text().strip()
        if existing:
            return existing
    new = config.new_cluster_id()
    id_file.write_text(new + "\n")
    return new


def format_storage(
    java: Path, settings: Settings, layout: Layout, server: Path, log4j: Path
) -> None:
    """``StorageTool format --ignore-formatted``: needed once before the first start."""
    if (layout.kafka_data / "meta.properties").exists():
        return
    progress("formatting Kafka KRaft storage…")
    cmd = config.kafka_java_command(
        java,
        layout.kafka_jars,
        "256m",
        log4j,
        STORAGE_TOOL,
        "format",
        "--ignore-formatted",
        "-t",
        cluster_id(layout),
        "-c",
        str(server),
    )
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    with layout.kafka_log.open("a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise fail(NAME, f"storage format failed (exit {result.returncode})", [layout.kafka_log])


def start(java: Path, settings: Settings, layout: Layout) -> int:
    """Format if needed and launch the broker detached; return its pid (not yet ready)."""
    host, _ = address(settings)
    if port_open(host, settings.kafka_controller_port):
        raise ServiceError(
            NAME,
            f"controller port {host}:{settings.kafka_controller_port} is already in use "
            "(set SIGSTREAM_KAFKA_CONTROLLER_PORT)",
        )
    server, log4j = write_config(settings, layout)
    rotate(layout.kafka_log)
    format_storage(java, settings, layout, server, log4j)
    cmd = config.kafka_java_command(
        java, layout.kafka_jars, settings.kafka_heap, log4j, MAIN_CLASS, str(server)
    )
    child = spawn(cmd, log_file=layout.kafka_log, cwd=layout.kafka_run)
    layout.kafka_pid.write_text(f"{child.pid}\n")
    progress(f"started Kafka {settings.kafka_version} (pid {child.pid}), log {layout.kafka_log}")
    return child.pid


def _metadata_ok(servers: str) -> bool:
    """A real metadata round trip, not just an open port: the broker answers requests."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers, request_timeout_ms=5000, client_id="sigstream-infra"
        )
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def wait_ready(
    settings: Settings, layout: Layout, pid: int | None, deadline: float, announce: bool = True
) -> None:
    """Block until the broker answers a metadata request, or raise naming the log."""
    host, port = address(settings)
    if announce:
        progress(f"waiting for Kafka on {host}:{port}…")
    # kafka-python logs every refused connection at WARNING while the broker boots.
    quiet = logging.getLogger("kafka")
    previous = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        while True:
            if port_open(host, port) and _metadata_ok(f"{host}:{port}"):
                return
            if pid is not None and running_pid(layout.kafka_pid, MAIN_CLASS) is None:
                reason = exited_during_startup("the broker process", pid, layout.kafka_pid)
                raise fail(NAME, reason, [layout.kafka_log])
            if time.monotonic() >= deadline:
                raise fail(
                    NAME, f"not ready on {host}:{port} before the timeout", [layout.kafka_log]
                )
            time.sleep(0.5)
    finally:
        quiet.setLevel(previous)


def _admin(settings: Settings) -> KafkaAdminClient:
    """A kafka-python admin client with the settings' security options."""
    from kafka.admin import KafkaAdminClient

    options = {**kafka_python_kwargs(settings), "bootstrap_servers": bootstrap(settings)}
    return KafkaAdminClient(**options, client_id="sigstream-infra")


def ensure_topics(settings: Settings, topics: list[str], partitions: int) -> list[str]:
    """Create missing topics (replication factor 1); return the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            progress(f"created Kafka topics {', '.join(missing)} ({partitions} partitions)")
        return missing
    finally:
        admin.close()


def list_topics(settings: Settings) -> set[str]:
    admin = _admin(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def delete_topics(settings: Settings, topics: list[str], chunk: int = 50) -> None:
    """Delete ``topics`` (the broker removes their files a minute later)."""
    admin = _admin(settings)
    try:
        for i in range(0, len(topics), chunk):
            admin.delete_topics(topics[i : i + chunk])
    finally:
        admin.close()


def stop(layout: Layout, timeout: float) -> bool:
    """Stop our broker (controlled shutdown on SIGTERM); False if it was not running."""
    pid = running_pid(layout.kafka_pid, MAIN_CLASS)
    if pid is None:
        return False
    progress(f"stopping Kafka (pid {pid})…")
    if not terminate(pid, timeout):
        progress(f"Kafka ignored SIGTERM for {timeout:.0f}s and was killed")
    with contextlib.suppress(OSError):
        layout.kafka_pid.unlink()
    return True
