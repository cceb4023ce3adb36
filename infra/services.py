"""Bring the local Kafka and Elasticsearch up and down; hand Spark its Kafka connector.

The public surface is ``up``, ``down``, ``status``, ``fetch``, ``reset_data`` and
``spark_kafka_jars``. All are idempotent: ``up`` starts only what is not running and fetches
only what the cache lacks, ``down`` leaves alone what it did not start. A service some other
tool already runs on the configured address is reported as ``external`` and used as is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from common.settings import Settings, get_settings
from infra import elasticsearch as es
from infra import fetch as fetching
from infra import kafka
from infra.config import Layout, java_major_version
from infra.proc import ServiceError, ServiceStatus, progress

SERVICES: tuple[str, ...] = (kafka.NAME, es.NAME)
MIN_JAVA = 17


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def _select(services: Iterable[str] | str | None) -> list[str]:
    if services is None:
        return list(SERVICES)
    names = [services] if isinstance(services, str) else list(services)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
    return [n for n in SERVICES if n in names]


def layout(settings: Settings | None = None) -> Layout:
    """Where everything lives (Elasticsearch possibly moved to /var/lib, see README)."""
    return es.resolve_layout(_settings(settings))


def find_java_home(settings: Settings | None = None) -> Path:
    """A JDK with Java 17+: settings.java_home, $JAVA_HOME, `java` on PATH, /usr/lib/jvm/*.

    Kafka 4 and Elasticsearch 8.19 both need 17+; the first candidate that qualifies wins,
    so on this machine it is the system OpenJDK 17.
    """
    cfg = _settings(settings)
    candidates: list[Path] = []
    if cfg.java_home is not None:
        candidates.append(cfg.java_home)
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        candidates.append(Path(java).resolve().parent.parent)
    jvm_dir = Path("/usr/lib/jvm")
    if jvm_dir.is_dir():
        candidates.extend(sorted(p for p in jvm_dir.iterdir() if p.is_dir()))
    for home in candidates:
        major = java_major_version(home)
        if major is not None and major >= MIN_JAVA and (home / "bin" / "java").exists():
            return home
    raise ServiceError("java", f"no Java {MIN_JAVA}+ found (tried {[str(c) for c in candidates]})")


def _spark_kafka_version(settings: Settings) -> str:
    version = settings.spark_kafka_version or fetching.pyspark_version()
    if version is None:
        raise ServiceError(
            "spark-kafka", "pyspark is not installed; set SIGSTREAM_SPARK_KAFKA_VERSION"
        )
    return version


def fetch(
    services: Iterable[str] | str | None = None,
    *,
    spark: bool = True,
    settings: Settings | None = None,
) -> dict[str, Path]:
    """Download whatever the cache lacks (no-op and no Maven run when it is complete).

    Returns the folder of each bundle. Spark's connector is fetched last, so a missing
    connector version (see ``spark_kafka_jars``) never blocks the services.
    """
    cfg = _settings(settings)
    where = layout(cfg)
    maven_settings = fetching.maven_settings_file(cfg.maven_settings)
    out: dict[str, Path] = {}
    for name in _select(services):
        if name == kafka.NAME:
            out[name] = fetching.fetch_kafka(where.kafka_jars, cfg.kafka_version, maven_settings)
        elif name == es.NAME:
            es.make_reachable_dirs(where.es_cache)
            out[name] = fetching.fetch_elasticsearch(where.es_cache, cfg.es_version, maven_settings)
    if spark:
        fetching.fetch_spark_kafka(
            where.spark_kafka_jars, _spark_kafka_version(cfg), maven_settings
        )
        out["spark-kafka"] = where.spark_kafka_jars
    return out


def spark_kafka_jars(settings: Settings | None = None) -> list[str]:
    """Jar paths for ``spark.jars`` that enable Spark's Kafka source and sink.

    spark-sql-kafka and spark-token-provider at exactly the installed pyspark's version
    (override: SIGSTREAM_SPARK_KAFKA_VERSION), plus the kafka-clients and commons-pool2
    they name; everything else they need is already in pyspark/jars. Fetched on first use.
    """
    cfg = _settings(settings)
    jars = fetching.fetch_spark_kafka(
        layout(cfg).spark_kafka_jars,
        _spark_kafka_version(cfg),
        fetching.maven_settings_file(cfg.maven_settings),
    )
    return [str(p) for p in jars]


def status(settings: Settings | None = None) -> dict[str, ServiceStatus]:
    """Per service: running (ours, with pid), external (someone else's) or stopped."""
    cfg = _settings(settings)
    where = layout(cfg)
    return {kafka.NAME: kafka.status(cfg, where), es.NAME: es.status(cfg, where)}


def up(
    services: Iterable[str] | str | None = None,
    *,
    timeout: float = 180.0,
    settings: Settings | None = None,
) -> dict[str, ServiceStatus]:
    """Fetch what is missing, start what is not running, wait until each answers.

    Kafka and Elasticsearch boot in parallel (both are started before either is waited
    for). ``timeout`` covers the wait for readiness, not the first-run downloads. Raises
    ServiceError naming the service and its log (after printing the log's tail).
    """
    cfg = _settings(settings)
    names = _select(services)
    where = layout(cfg)
    fetch(names, spark=False, settings=cfg)
    java_home: Path | None = None
    before = status(cfg)
    started: list[str] = []
    kafka_pid: int | None = None
    for name in names:
        current = before[name]
        if current.up:
            progress(f"{name} already {current.state} on {current.address}")
            continue
        java_home = java_home or find_java_home(cfg)
        if name == kafka.NAME:
            kafka_pid = kafka.start(java_home / "bin" / "java", cfg, where)
        else:
            es.start(java_home, cfg, where, where.es_home(cfg.es_version))
        started.append(name)
    deadline = time.monotonic() + timeout
    if kafka.NAME in names:
        kafka.wait_ready(cfg, where, kafka_pid, deadline, announce=kafka.NAME in started)
        kafka.ensure_topics(
            cfg,
            [cfg.events_topic, cfg.dlq_topic, cfg.summaries_topic, cfg.matches_topic],
            cfg.topic_partitions,
        )
    if es.NAME in names:
        es.wait_ready(cfg, where, deadline, announce=es.NAME in started)
    result = status(cfg)
    for name in names:
        progress(f"{name} ready on {result[name].address}")
    return {name: result[name] for name in names}


def down(
    services: Iterable[str] | str | None = None,
    *,
    wipe: bool = False,
    timeout: float = 30.0,
    settings: Settings | None = None,
) -> list[str]:
    """Stop the services infra started (SIGTERM, then SIGKILL after ``timeout``).

    ``wipe=True`` also deletes their data (topics, indices) for a clean slate; caches stay.
    External services are never touched. Returns the names that were stopped.
    """
    cfg = _settings(settings)
    names = _select(services)
    where = layout(cfg)
    stopped: list[str] = []
    for name in names:
        module = kafka if name == kafka.NAME else es
        if module.stop(where, timeout):
            stopped.append(name)
        elif module.status(cfg, where).state == "external":
            progress(
                f"{name} on {module.status(cfg, where).address} was not started here: left alone"
            )
    if wipe:
        reset_data(names, settings=cfg)
    return stopped


def reset_data(
    services: Iterable[str] | str | None = None, *, settings: Settings | None = None
) -> None:
    """Delete the data of stopped services (Kafka log dirs and cluster id, ES indices)."""
    cfg = _settings(settings)
    names = _select(services)
    where = layout(cfg)
    current = status(cfg)
    running = [n for n in names if current[n].state == "running"]
    if running:
        raise ServiceError(running[0], "stop it before deleting its data (down(wipe=True))")
    if kafka.NAME in names:
        shutil.rmtree(where.kafka_data, ignore_errors=True)
        (where.kafka_run / "cluster.id").unlink(missing_ok=True)
        progress(f"deleted Kafka data in {where.kafka_data}")
    if es.NAME in names:
        es.wipe(where)
        progress(f"deleted Elasticsearch data in {where.es_data}")


@contextlib.contextmanager
def running(
    services: Iterable[str] | str | None = None,
    *,
    timeout: float = 180.0,
    settings: Settings | None = None,
) -> Iterator[dict[str, ServiceStatus]]:
    """Services up for the duration of a block (test sessions, the demo).

    On exit it stops only what this call started, so a developer's already-running stack
    (or an external cluster) survives a test run; a failed start is cleaned up too.
    """
    names = _select(services)
    before = status(settings)
    started_here = [n for n in names if not before[n].up]
    try:
        statuses = up(names, timeout=timeout, settings=settings)
    except BaseException:
        if started_here:
            down(started_here, settings=settings)
        raise
    try:
        yield statuses
    finally:
        if started_here:
            down(started_here, settings=settings)
