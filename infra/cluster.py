"""The ``cluster`` profile: real multi-process clusters on loopback, beside the default.

Three Kafka brokers (KRaft, each broker+controller, replication factor 3, min ISR 2), two
Elasticsearch nodes forming one cluster, and a Spark standalone master with two workers
(pyspark's own ``bin/spark-class``). Every process is a detached child with a pid file
under ``<run_dir>/cluster/``, so ``status`` can show each one and a drill can kill one.
``up`` is idempotent: it starts only the members that are not running, which is also how a
killed member is brought back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.settings import Settings, get_settings
from infra import cluster_config as cc
from infra import config, kafka
from infra import elasticsearch as es
from infra import services as single
from infra.proc import (
    ServiceError,
    ServiceStatus,
    fail,
    pid_alive,
    port_open,
    progress,
    rotate,
    running_pid,
    spawn,
    terminate,
    wait_for,
)

SPARK_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
SPARK_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


@dataclass(frozen=True)
class Member:
    """One process of the cluster: how to find it again and what to show for it."""

    name: str
    kind: str  # kafka | elasticsearch | spark-master | spark-worker
    index: int  # 0-based within its kind
    port: int
    pid_file: Path
    marker: str
    log: Path
    run: Path


class ClusterLayout:
    """Folders of the cluster profile: ``<run_dir>/cluster/`` (Elasticsearch may move).

    Elasticsearch runs as the unprivileged ES user when infra runs as root; when that user
    cannot traverse the run dir, the ES nodes live under the same per-checkout fallback as
    the single node (``/var/lib/sigstream/<hash>/cluster``).
    """

    def __init__(self, settings: Settings, spec: cc.ClusterSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.root = settings.run_dir / cc.PROFILE
        self.es_root = self._es_root()

    def _es_root(self) -> Path:
        default = self.root / "elasticsearch"
        if self.settings.es_root is not None:
            return self.settings.es_root / "cluster"
        if not es.runs_as_other_user():
            return default
        ids = es._user_ids(self.settings.es_user) or (-1, [])
        if config.can_traverse(default, ids[0], ids[1]):
            return default
        return config.es_fallback_root(self.settings.cache_dir) / "cluster"

    @property
    def kafka_cluster_id(self) -> Path:
        return self.root / "kafka.cluster-id"

    def members(self) -> list[Member]:
        spec = self.spec
        out: list[Member] = []
        for i, port in enumerate(spec.kafka_ports):
            run = self.root / f"kafka-{i + 1}"
            out.append(
                Member(
                    f"kafka-{i + 1}",
                    "kafka",
                    i,
                    port,
                    run / "kafka.pid",
                    kafka.MAIN_CLASS,
                    run / "kafka.log",
                    run,
                )
            )
        for i, port in enumerate(spec.es_http_ports):
            name = spec.es_node_names()[i]
            run = self.es_root / name
            out.append(
                Member(
                    name,
                    "elasticsearch",
                    i,
                    port,
                    run / "elasticsearch.pid",
                    es.SERVER_MARKER,
                    run / "logs" / f"{cc.ES_CLUSTER_NAME}.log",
                    run,
                )
            )
        run = self.root / "spark-master"
        out.append(
            Member(
                "spark-master",
                "spark-master",
                0,
                spec.spark_master_port,
                run / "master.pid",
                SPARK_MASTER_CLASS,
                run / "master.log",
                run,
            )
        )
        for i, port in enumerate(spec.spark_worker_ports):
            run = self.root / f"spark-worker-{i + 1}"
            out.append(
                Member(
                    f"spark-worker-{i + 1}",
                    "spark-worker",
                    i,
                    port,
                    run / "worker.pid",
                    SPARK_WORKER_CLASS,
                    run / "worker.log",
                    run,
                )
            )
        return out

    def member(self, name: str) -> Member:
        for m in self.members():
            if m.name == name:
                return m
        raise KeyError(f"no cluster member {name!r}; choose from {self.names()}")

    def names(self) -> list[str]:
        return [m.name for m in self.members()]


def _ctx(settings: Settings | None, spec: cc.ClusterSpec | None) -> ClusterLayout:
    return ClusterLayout(settings or get_settings(), spec or cc.ClusterSpec())


def spark_home() -> Path:
    """The pyspark package folder: it carries ``bin/spark-class`` and all of Spark's jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def member_status(member: Member, host: str) -> ServiceStatus:
    pid = running_pid(member.pid_file, member.marker)
    if pid is not None:
        state = "running"
    elif port_open(host, member.port):
        state = "external"
    else:
        state = "stopped"
    return ServiceStatus(member.name, state, pid, f"{host}:{member.port}", member.log)


def status(
    settings: Settings | None = None, spec: cc.ClusterSpec | None = None
) -> dict[str, ServiceStatus]:
    """Every process of the profile: running (ours, pid), external (port taken) or stopped."""
    where = _ctx(settings, spec)
    return {m.name: member_status(m, where.spec.host) for m in where.members()}


# Starting ------------------------------------------------------------------------------


def _kafka_cluster_id(where: ClusterLayout) -> str:
    with contextlib.suppress(OSError):
        existing = where.kafka_cluster_id.read_text().strip()
        if existing:
            return existing
    new = config.new_cluster_id()
    where.root.mkdir(parents=True, exist_ok=True)
    where.kafka_cluster_id.write_text(new + "\n")
    return new


def _kafka_files(where: ClusterLayout, m: Member) -> tuple[Path, Path]:
    m.run.mkdir(parents=True, exist_ok=True)
    props = cc.kafka_broker_properties(where.spec, m.index + 1, m.run / "data")
    server = m.run / "server.properties"
    server.write_text(config.render_properties(props))
    log4j = m.run / "log4j2.properties"
    log4j.write_text(config.kafka_log4j2_properties())
    return server, log4j


def _start_kafka(java: Path, where: ClusterLayout, brokers: list[Member]) -> None:
    """Format the storage of new brokers (in parallel: one JVM each), then launch them."""
    jars = single.layout(where.settings).kafka_jars
    cluster_id = _kafka_cluster_id(where)
    formats: list[tuple[Member, subprocess.Popen[str]]] = []
    files: dict[str, tuple[Path, Path]] = {}
    for m in brokers:
        server, log4j = _kafka_files(where, m)
        files[m.name] = (server, log4j)
        rotate(m.log)
        if (m.run / "data" / "meta.properties").exists():
            continue
        cmd = config.kafka_java_command(
            java, jars, "128m", log4j, kafka.STORAGE_TOOL, "format", "--ignore-formatted"
        )
        cmd += ["-t", cluster_id, "-c", str(server)]
        formats.append(
            (m, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        )
    if formats:
        progress(f"formatting KRaft storage of {', '.join(m.name for m, _ in formats)}…")
    for m, proc in formats:
        out, _ = proc.communicate(timeout=180)
        with m.log.open("a") as log:
            log.write(out)
        if proc.returncode != 0:
            raise fail(m.name, f"storage format failed (exit {proc.returncode})", [m.log])
    for m in brokers:
        server, log4j = files[m.name]
        cmd = config.kafka_java_command(
            java, jars, where.spec.kafka_heap, log4j, kafka.MAIN_CLASS, str(server)
        )
        child = spawn(cmd, log_file=m.log, cwd=m.run)
        m.pid_file.write_text(f"{child.pid}\n")
        progress(f"started {m.name} (pid {child.pid}) on {where.spec.host}:{m.port}")


def _es_node_dirs(m: Member) -> dict[str, Path]:
    return {
        "config": m.run / "config",
        "data": m.run / "data",
        "logs": m.run / "logs",
        "tmp": m.run / "tmp",
    }


def _start_es(java_home: Path, where: ClusterLayout, nodes: list[Member]) -> None:
    """Each node gets its own ES_PATH_CONF (a copy of the distribution's config) and data."""
    settings = where.settings
    home = single.layout(settings).es_home(settings.es_version)
    ids = es.ensure_user(settings.es_user)
    if ids is not None and home.stat().st_uid != ids[0]:
        es._chown_tree(home, *ids)
    for m in nodes:
        dirs = _es_node_dirs(m)
        es.make_reachable_dirs(m.run, *dirs.values())
        conf = dirs["config"]
        for item in (home / "config").iterdir():
            if item.name in {"elasticsearch.yml", "elasticsearch.keystore"}:
                continue
            target = conf / item.name
            if target.exists():
                continue
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        values = cc.es_node_settings(where.spec, m.index, dirs["data"], dirs["logs"])
        (conf / "elasticsearch.yml").write_text(config.render_es_yml(values))
        if ids is not None:
            es._chown_tree(m.run, *ids)
            if not config.can_traverse(m.run, ids[0], [ids[1]]):
                raise ServiceError(m.name, f"user {settings.es_user!r} cannot reach {m.run}")
        with contextlib.suppress(OSError):
            m.pid_file.unlink()
        launcher_log = m.run / "launcher.log"
        rotate(launcher_log)
        cmd = [str(home / "bin" / "elasticsearch"), "-d", "-p", str(m.pid_file)]
        if ids is not None:
            cmd = ["runuser", "-u", settings.es_user, "--", *cmd]
        env = config.es_env(os.environ, java_home, where.spec.es_heap, dirs["tmp"])
        env["ES_PATH_CONF"] = str(conf)
        launcher = spawn(cmd, log_file=launcher_log, env=env, cwd=dirs["logs"])
        _es_launchers[m.name] = launcher
        progress(f"started {m.name} (heap {where.spec.es_heap}) on {where.spec.host}:{m.port}")


_es_launchers: dict[str, subprocess.Popen[bytes]] = {}


def _start_spark(java_home: Path, where: ClusterLayout, members: list[Member]) -> None:
    home = spark_home()
    env = cc.spark_daemon_env(os.environ, home, java_home, where.spec, sys.executable)
    for m in members:
        m.run.mkdir(parents=True, exist_ok=True)
        rotate(m.log)
        if m.kind == "spark-master":
            cmd = cc.spark_master_command(home, where.spec)
        else:
            cmd = cc.spark_worker_command(home, where.spec, m.index, m.run / "work")
        child = spawn(cmd, log_file=m.log, env=env, cwd=m.run)
        m.pid_file.write_text(f"{child.pid}\n")
        progress(f"started {m.name} (pid {child.pid}) on {where.spec.host}:{m.port}")


# Readiness -----------------------------------------------------------------------------


def _kafka_brokers(bootstrap: str) -> int:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="sigstream-infra"
        )
    except Exception:
        return 0
    try:
        return len(admin.describe_cluster().get("brokers", []))
    except Exception:
        return 0
    finally:
        admin.close()


def _get_json(url: str, timeout: float = 5.0) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
            return body if isinstance(body, dict) else None
    except (OSError, ValueError, urllib.error.URLError):
        return None


def es_health(spec: cc.ClusterSpec) -> dict[str, object] | None:
    """``_cluster/health`` from the first node that answers."""
    for host in spec.es_hosts:
        body = _get_json(f"{host}/_cluster/health?timeout=1s", timeout=3.0)
        if body is not None:
            return body
    return None


def spark_alive_workers(spec: cc.ClusterSpec) -> int:
    body = _get_json(f"{spec.spark_master_ui}/json/")
    return cc.alive_workers(body) if body else 0


def _check_alive(where: ClusterLayout, started: list[Member]) -> None:
    for m in started:
        if m.kind == "elasticsearch":
            launcher = _es_launchers.get(m.name)
            if launcher is not None and launcher.poll() not in (None, 0):
                raise fail(
                    m.name,
                    "bin/elasticsearch exited during startup",
                    [m.run / "launcher.log", m.log],
                )
            if (
                launcher is not None
                and launcher.poll() == 0
                and running_pid(m.pid_file, m.marker) is None
            ):
                raise fail(m.name, "the node exited during startup", [m.log])
        elif running_pid(m.pid_file, m.marker) is None:
            raise fail(m.name, "the process exited during startup", [m.log])


def wait_ready(where: ClusterLayout, started: list[Member], timeout: float) -> None:
    """Block until all brokers are in the cluster, ES has every node and is at least
    yellow, and the master sees every worker ALIVE."""
    spec = where.spec
    deadline = time.monotonic() + timeout
    quiet = logging.getLogger("kafka")
    previous = quiet.level
    quiet.setLevel(logging.CRITICAL)
    pending = {"kafka", "elasticsearch", "spark"}
    try:
        while pending:
            if "kafka" in pending and _kafka_brokers(spec.kafka_bootstrap) == len(spec.kafka_ports):
                pending.discard("kafka")
                progress(f"Kafka: {len(spec.kafka_ports)} brokers in the cluster")
            if "elasticsearch" in pending:
                health = es_health(spec)
                if (
                    health
                    and health.get("number_of_nodes") == len(spec.es_http_ports)
                    and health.get("status") in {"yellow", "green"}
                ):
                    pending.discard("elasticsearch")
                    progress(
                        f"Elasticsearch: {health['number_of_nodes']} nodes, {health['status']}"
                    )
            if "spark" in pending and spark_alive_workers(spec) == len(spec.spark_worker_ports):
                pending.discard("spark")
                progress(f"Spark: master with {len(spec.spark_worker_ports)} ALIVE workers")
            if not pending:
                return
            _check_alive(where, started)
            if time.monotonic() >= deadline:
                logs = [m.log for m in started] or [where.root / "missing.log"]
                raise fail(cc.PROFILE, f"not ready before the timeout: {sorted(pending)}", logs)
            time.sleep(0.5)
    finally:
        quiet.setLevel(previous)


def ensure_topic(spec: cc.ClusterSpec, topic: str, partitions: int | None = None) -> bool:
    """Create ``topic`` with the profile's partitions and replication; False if it exists."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=spec.kafka_bootstrap, client_id="sigstream-infra")
    try:
        if topic in set(admin.list_topics()):
            return False
        new = NewTopic(
            topic,
            num_partitions=partitions or spec.partitions,
            replication_factor=spec.replication_factor,
            topic_configs={"min.insync.replicas": str(spec.min_insync_replicas)},
        )
        try:
            admin.create_topics([new])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


def launch(settings: Settings | None = None, spec: cc.ClusterSpec | None = None) -> list[str]:
    """Start every member that is not running, without waiting; return their names.

    ``up`` is ``launch`` + ``ready``; the test session splits them so the cluster boots
    while the single-node baseline runs.
    """
    where = _ctx(settings, spec)
    cfg = where.settings
    single.fetch(["kafka", "elasticsearch"], spark=False, settings=cfg)
    before = status(cfg, where.spec)
    taken = [s for s in before.values() if s.state == "external"]
    if taken:
        names = ", ".join(f"{s.name} ({s.address})" for s in taken)
        raise ServiceError(cc.PROFILE, f"ports already in use by something else: {names}")
    members = where.members()
    todo = [m for m in members if before[m.name].state == "stopped"]
    for m in members:
        if m not in todo:
            progress(f"{m.name} already running (pid {before[m.name].pid})")
    busy = [
        m for m in todo if m.kind == "kafka" and port_open(where.spec.host, _controller(where, m))
    ]
    if busy:
        raise ServiceError(busy[0].name, "its controller port is already in use")
    if todo:
        java_home = single.find_java_home(cfg)
        _start_kafka(java_home / "bin" / "java", where, [m for m in todo if m.kind == "kafka"])
        _start_es(java_home, where, [m for m in todo if m.kind == "elasticsearch"])
        _start_spark(java_home, where, [m for m in todo if m.kind.startswith("spark")])
    return [m.name for m in todo]


def ready(
    settings: Settings | None = None,
    spec: cc.ClusterSpec | None = None,
    timeout: float = 240.0,
    launched: list[str] | None = None,
) -> dict[str, ServiceStatus]:
    """Wait until the three clusters are whole, then create the events and DLQ topics.

    ``launched`` names the members just started, whose early death fails the wait at once.
    """
    where = _ctx(settings, spec)
    cfg = where.settings
    wait_ready(where, [where.member(n) for n in launched or []], timeout)
    for topic in (cfg.events_topic, cfg.dlq_topic, cfg.summaries_topic, cfg.matches_topic):
        if ensure_topic(where.spec, topic):
            progress(
                f"created {topic} ({where.spec.partitions} partitions, "
                f"replication {where.spec.replication_factor})"
            )
    return status(cfg, where.spec)


def up(
    settings: Settings | None = None,
    spec: cc.ClusterSpec | None = None,
    timeout: float = 240.0,
) -> dict[str, ServiceStatus]:
    """Start every member that is not running (all of them the first time), wait until the
    three clusters are whole, create the events and DLQ topics. Idempotent."""
    launched = launch(settings, spec)
    return ready(settings, spec, timeout, launched)


def _controller(where: ClusterLayout, m: Member) -> int:
    return where.spec.kafka_controller_ports[m.index]


def down(
    settings: Settings | None = None,
    spec: cc.ClusterSpec | None = None,
    *,
    wipe: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """Stop every member this profile started (workers and master first, brokers last, so
    nothing logs a storm of errors about the others); ``wipe`` deletes all their data."""
    where = _ctx(settings, spec)
    order = {"spark-worker": 0, "spark-master": 1, "elasticsearch": 2, "kafka": 3}
    stopped: list[str] = []
    for group in sorted(set(order.values())):
        members = [m for m in where.members() if order[m.kind] == group]
        pids = {m: running_pid(m.pid_file, m.marker) for m in members}
        live = {m: p for m, p in pids.items() if p is not None}
        if live:
            progress(f"stopping {', '.join(m.name for m in live)}…")
        for pid in live.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        pids_now = list(live.values())
        wait_for(lambda pids=pids_now: not any(pid_alive(p) for p in pids), timeout)
        for m, pid in live.items():
            if pid_alive(pid):
                progress(f"{m.name} ignored SIGTERM for {timeout:.0f}s and was killed")
            terminate(pid, 1.0)  # SIGKILL if still alive; reaps our own children
            with contextlib.suppress(OSError):
                m.pid_file.unlink()
            _es_launchers.pop(m.name, None)
            stopped.append(m.name)
    if wipe:
        shutil.rmtree(where.root, ignore_errors=True)
        shutil.rmtree(where.es_root, ignore_errors=True)
        progress(
            f"deleted the cluster data in {where.root}"
            + (f" and {where.es_root}" if not where.es_root.is_relative_to(where.root) else "")
        )
    return stopped


def kill(name: str, settings: Settings | None = None, spec: cc.ClusterSpec | None = None) -> int:
    """SIGKILL one member (a failure drill); returns its pid. ``up`` brings it back."""
    where = _ctx(settings, spec)
    m = where.member(name)
    pid = running_pid(m.pid_file, m.marker)
    if pid is None:
        raise ServiceError(name, "not running")
    os.kill(pid, signal.SIGKILL)
    return pid


@contextlib.contextmanager
def running(
    settings: Settings | None = None,
    spec: cc.ClusterSpec | None = None,
    timeout: float = 240.0,
) -> Iterator[dict[str, ServiceStatus]]:
    """The cluster up for a block; stopped at the end only if this call started it."""
    before = status(settings, spec)
    started_here = not any(s.state == "running" for s in before.values())
    try:
        statuses = up(settings, spec, timeout)
    except BaseException:
        if started_here:
            down(settings, spec)
        raise
    try:
        yield statuses
    finally:
        if started_here:
            down(settings, spec)
