"""Pure configuration for the local services: paths, config files, small checks.

Nothing here starts a process or touches the network, so all of it is unit-tested
(tests/unit/test_infra_config.py). The service modules only write what these functions
return and run the commands they build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common.settings import Settings

MAVEN_DIR = Path(__file__).resolve().parent / "maven"
ES_FALLBACK_BASE = Path("/var/lib/sigstream")

# Modules of the integ-test-zip distribution. Settings of any other module (ML, ILM,
# geoip, watcher, ...) make this distribution refuse to start, so the renderer only emits
# core settings and these modules' settings.
ES_MODULES = ("apm", "transport-netty4", "x-pack-core", "x-pack-security")


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """Return (host, port) of the first address in a bootstrap list or URL.

    Accepts ``host:port``, ``a:1,b:2`` and ``http://host:port/`` so the same helper reads
    ``kafka_bootstrap`` and ``es_hosts[0]``.
    """
    first = value.split(",")[0].strip()
    if "://" not in first:
        first = "tcp://" + first
    parts = urlsplit(first)
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or default_port


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID as 22 characters of unpadded base64url.

    This is what ``kafka-storage.sh random-uuid`` prints; generating it here saves a JVM start.
    Like Kafka's ``Uuid.randomUuid`` it never starts with ``-``: the storage tool's argument
    parser would take such an id (1 in 64) for an option and refuse to format.
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not value.startswith("-"):
            return value


def render_properties(values: Mapping[str, object]) -> str:
    """Java ``.properties`` text, one ``key=value`` a line, in the given order."""
    lines = []
    for key, value in values.items():
        text = str(value).replace("\\", "\\\\")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def kafka_server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    partitions: int,
    node_id: int = 1,
) -> dict[str, str]:
    """``server.properties`` for one combined broker+controller KRaft node.

    Every internal topic gets replication factor and min ISR 1: with the defaults (3) a
    single node never creates ``__consumer_offsets`` and consumers hang. ``offsets`` uses 10
    partitions instead of 50 so the first consumer group starts in well under a second on
    two cores.
    """
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(partitions),
        "auto.create.topics.enable": "true",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
    }


def kafka_log4j2_properties() -> str:
    """Log4j2 config for the broker, in properties format.

    The Kafka tarball ships ``log4j2.yaml``; the properties format needs no YAML parser on
    the class path. Everything goes to stdout, which the launcher sends to ``kafka.log``.
    """
    return render_properties(
        {
            "status": "warn",
            "name": "sigstream-kafka",
            "appender.console.type": "Console",
            "appender.console.name": "STDOUT",
            "appender.console.layout.type": "PatternLayout",
            "appender.console.layout.pattern": "[%d] %p %m (%c)%n",
            "rootLogger.level": "INFO",
            "rootLogger.appenderRef.stdout.ref": "STDOUT",
            # The request and state-change loggers are DEBUG/TRACE-chatty by design.
            "logger.request.name": "kafka.request.logger",
            "logger.request.level": "WARN",
            "logger.network.name": "kafka.network.RequestChannel$",
            "logger.network.level": "WARN",
            "logger.statechange.name": "state.change.logger",
            "logger.statechange.level": "WARN",
            "logger.authorizer.name": "kafka.authorizer.logger",
            "logger.authorizer.level": "WARN",
        }
    )


def kafka_java_command(
    java: Path, classpath_dir: Path, heap: str, log4j_config: Path, main: str, *args: str
) -> list[str]:
    """The ``java`` command line the stock ``kafka-run-class.sh`` would build."""
    return [
        str(java),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config}",
        # Kafka shuts down from its own SIGTERM handler; log4j's hook would stop logging
        # first and lose the shutdown messages.
        "-Dlog4j2.shutdownHookEnabled=false",
        "-cp",
        f"{classpath_dir}/*",
        main,
        *args,
    ]


def es_settings(
    *,
    host: str,
    port: int,
    data_dir: Path,
    logs_dir: Path,
    cluster_name: str = "sigstream",
    transport_port: int | None = None,
) -> dict[str, object]:
    """``elasticsearch.yml`` settings for a loopback single node without security.

    Bootstrap checks (vm.max_map_count, ...) are skipped because the node binds to loopback
    with ``discovery.type: single-node``. The disk watermarks are off so a nearly full CI disk
    does not turn every index read-only. ``transport_port`` pins the node-to-node port
    (else the 9300-9399 range: a second node on the machine would take the next free one).
    """
    values: dict[str, object] = {
        "cluster.name": cluster_name,
        "node.name": f"{cluster_name}-1",
        "discovery.type": "single-node",
        "network.host": host,
        "http.port": port,
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
        "xpack.security.enabled": False,
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.auto_create_index": True,
    }
    if transport_port is not None:
        values["transport.port"] = transport_port
    return values


def render_es_yml(values: Mapping[str, object]) -> str:
    """Flat ``elasticsearch.yml``: JSON scalars are valid YAML, so quoting is always right."""
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items())


def es_env(base: Mapping[str, str], java_home: Path, heap: str, tmp_dir: Path) -> dict[str, str]:
    """Environment for ``bin/elasticsearch``.

    Without ES_JAVA_OPTS the launcher sizes the heap to half the machine's memory. The
    integ-test-zip has no bundled JDK, so ES_JAVA_HOME must point at Java 17+.
    """
    # JAVA_HOME is dropped: ES ignores it when ES_JAVA_HOME is set, with a warning.
    dropped = ("ES_", "JAVA_HOME", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")
    env = {k: v for k, v in base.items() if not k.startswith(dropped)}
    env.update(
        {
            "ES_JAVA_HOME": str(java_home),
            "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
            "ES_TMPDIR": str(tmp_dir),
        }
    )
    return env


def java_major_version(java_home: Path) -> int | None:
    """Major Java version of a JDK from its ``release`` file, or None if unreadable."""
    try:
        text = (java_home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', text, re.MULTILINE)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def can_traverse(path: Path, uid: int, gids: Iterable[int]) -> bool:
    """Whether a user could reach ``path``: every existing ancestor must grant it +x.

    Needed because the Elasticsearch user is not root: a project cloned under ``/root``
    (mode 700) is invisible to it even though root can write the cache there. Missing tail
    components are ignored (they will be created, owned by that user).
    """
    groups = set(gids)
    current = Path(path).absolute()
    chain = [current, *current.parents]
    for directory in chain:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue
        if uid == 0:
            continue
        mode = st.st_mode
        if st.st_uid == uid:
            allowed = bool(mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            allowed = bool(mode & stat.S_IXGRP)
        else:
            allowed = bool(mode & stat.S_IXOTH)
        if not allowed:
            return False
    return True


def es_fallback_root(project_root: Path) -> Path:
    """Per-project folder outside the project, for when the ES user cannot reach it."""
    digest = hashlib.sha256(str(project_root.resolve()).encode()).hexdigest()[:12]
    return ES_FALLBACK_BASE / digest


@dataclass(frozen=True)
class Layout:
    """Every folder and file the local services use, derived from ``Settings``.

    Elasticsearch gets two folders of its own, ``es_cache`` (the unpacked distribution) and
    ``es_run`` (data, logs, pid file), because the unprivileged ES user must reach both:
    by default they sit beside Kafka's under cache_dir and run_dir, and move together to
    ``es_root`` (or the /var/lib fallback) when those are not reachable.
    """

    cache_dir: Path
    run_dir: Path
    es_cache: Path
    es_run: Path

    @classmethod
    def from_settings(cls, settings: Settings, es_root: Path | None = None) -> Layout:
        """Default layout, or with every Elasticsearch folder under ``es_root``."""
        root = es_root or settings.es_root
        if root is not None:
            es_cache, es_run = root / "cache", root / "run"
        else:
            es_cache = settings.cache_dir / "elasticsearch"
            es_run = settings.run_dir / "elasticsearch"
        return cls(settings.cache_dir, settings.run_dir, es_cache, es_run)

    # Kafka ---------------------------------------------------------------------------
    @property
    def kafka_jars(self) -> Path:
        return self.cache_dir / "jars" / "kafka"

    @property
    def kafka_run(self) -> Path:
        return self.run_dir / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_run / "data"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_run / "kafka.log"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka_run / "kafka.pid"

    # Spark connector -----------------------------------------------------------------
    @property
    def spark_kafka_jars(self) -> Path:
        return self.cache_dir / "jars" / "spark-kafka"

    # Elasticsearch -------------------------------------------------------------------
    def es_home(self, version: str) -> Path:
        """Unpacked distribution; versioned so changing es_version unpacks afresh."""
        return self.es_cache / f"elasticsearch-{version}"

    @property
    def es_data(self) -> Path:
        return self.es_run / "data"

    @property
    def es_logs(self) -> Path:
        return self.es_run / "logs"

    @property
    def es_tmp(self) -> Path:
        return self.es_run / "tmp"

    @property
    def es_conf(self) -> Path:
        """The node's ES_PATH_CONF: its own elasticsearch.yml, so two stacks sharing one
        cached distribution (the fault drills beside the dev stack) never rewrite each
        other's configuration."""
        return self.es_run / "config"

    @property
    def es_pid(self) -> Path:
        return self.es_run / "elasticsearch.pid"

    @property
    def es_launcher_log(self) -> Path:
        """stdout/stderr of ``bin/elasticsearch -d``: startup errors land here, not in logs/."""
        return self.es_run / "launcher.log"

    def es_server_log(self, cluster_name: str = "sigstream") -> Path:
        """The node's main log: ``<path.logs>/<cluster.name>.log``."""
        return self.es_logs / f"{cluster_name}.log"
