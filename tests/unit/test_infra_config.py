"""The pure parts of infra: config rendering, path rules, small parsers. No services."""

from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from common.settings import Settings
from infra import config, fetch, proc


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("127.0.0.1:9092", 9092, ("127.0.0.1", 9092)),
        ("10.0.0.5:19092,10.0.0.6:19092", 9092, ("10.0.0.5", 19092)),
        ("http://127.0.0.1:9200", 9200, ("127.0.0.1", 9200)),
        ("https://es.example:9243/", 9200, ("es.example", 9243)),
        ("localhost", 9092, ("localhost", 9092)),
    ],
)
def test_parse_hostport(value: str, default: int, expected: tuple[str, int]) -> None:
    assert config.parse_hostport(value, default) == expected


def test_cluster_id_is_22_chars_of_base64url() -> None:
    ids = {config.new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in ids)


def test_cluster_id_never_starts_with_a_dash() -> None:
    """The storage tool would parse ``-t -abc...`` as an option (1 id in 64 did)."""
    assert not any(config.new_cluster_id().startswith("-") for _ in range(2000))


def test_render_properties_keeps_order_and_escapes_backslashes() -> None:
    text = config.render_properties({"b": 1, "a": r"C:\data"})
    assert text == "b=1\na=C:\\\\data\n"


def _kafka_props(tmp: Path) -> dict[str, str]:
    return config.kafka_server_properties(
        host="127.0.0.1", port=9092, controller_port=9093, log_dir=tmp / "data", partitions=2
    )


def test_kafka_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _kafka_props(tmp_path)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["num.partitions"] == "2"
    assert props["auto.create.topics.enable"] == "true"


def test_kafka_internal_topics_fit_one_node(tmp_path: Path) -> None:
    """Any replication factor or min ISR above 1 makes a single node hang on first use."""
    props = _kafka_props(tmp_path)
    factors = {k: v for k, v in props.items() if k.endswith(("replication.factor", "min.isr"))}
    assert len(factors) >= 5
    assert set(factors.values()) == {"1"}
    assert props["min.insync.replicas"] == "1"


def test_kafka_log4j2_config_is_properties_format() -> None:
    text = config.kafka_log4j2_properties()
    assert "rootLogger.level=INFO" in text
    assert "appender.console.type=Console" in text


def test_kafka_java_command(tmp_path: Path) -> None:
    log4j = tmp_path / "log4j2.properties"
    cmd = config.kafka_java_command(
        Path("/jdk/bin/java"), tmp_path, "512m", log4j, "kafka.Kafka", "s.p"
    )
    assert cmd[0] == "/jdk/bin/java"
    assert {"-Xms512m", "-Xmx512m", "-XX:+UseG1GC"} <= set(cmd)
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path}/*"
    assert cmd[-2:] == ["kafka.Kafka", "s.p"]


def _es_values(tmp: Path) -> dict[str, object]:
    return config.es_settings(
        host="127.0.0.1", port=9200, data_dir=tmp / "data", logs_dir=tmp / "logs"
    )


def test_es_yml_round_trips_through_yaml(tmp_path: Path) -> None:
    values = _es_values(tmp_path)
    assert yaml.safe_load(config.render_es_yml(values)) == values


def test_es_settings_are_the_loopback_single_node(tmp_path: Path) -> None:
    values = _es_values(tmp_path)
    assert values["cluster.name"] == "sigstream"
    assert values["discovery.type"] == "single-node"
    assert values["network.host"] == "127.0.0.1"
    assert values["http.port"] == 9200
    assert values["xpack.security.enabled"] is False
    assert values["cluster.routing.allocation.disk.threshold_enabled"] is False
    assert values["path.data"] == str(tmp_path / "data")


def test_es_transport_port_is_pinned_only_when_given(tmp_path: Path) -> None:
    assert "transport.port" not in _es_values(tmp_path)
    pinned = config.es_settings(
        host="127.0.0.1",
        port=29200,
        data_dir=tmp_path / "d",
        logs_dir=tmp_path / "l",
        transport_port=29300,
    )
    assert pinned["transport.port"] == 29300
    assert yaml.safe_load(config.render_es_yml(pinned))["transport.port"] == 29300


def test_es_config_dir_is_per_run_dir_not_in_the_shared_cache(tmp_path: Path) -> None:
    """Two stacks sharing one cache (the drills' and the dev stack) keep separate configs."""
    a = config.Layout.from_settings(Settings(cache_dir=tmp_path / "c", run_dir=tmp_path / "a"))
    b = config.Layout.from_settings(Settings(cache_dir=tmp_path / "c", run_dir=tmp_path / "b"))
    assert a.es_home("8.19.21") == b.es_home("8.19.21")
    assert a.es_conf == tmp_path / "a" / "elasticsearch" / "config"
    assert a.es_conf != b.es_conf


def test_es_settings_name_only_modules_the_distribution_has(tmp_path: Path) -> None:
    """The integ-test-zip refuses to start on settings of modules it lacks (ML, ILM, ...)."""
    for key in _es_values(tmp_path):
        if key.startswith("xpack."):
            assert key.startswith("xpack.security."), key
        for absent in ("ml.", "ilm.", "watcher.", "ingest.geoip", "monitoring."):
            assert absent not in key, key


def test_es_env_sets_heap_and_java(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "JAVA_HOME": "/old", "ES_JAVA_OPTS": "-Xmx12g", "ES_PATH_CONF": "/x"}
    env = config.es_env(base, Path("/jdk17"), "512m", tmp_path)
    assert env["ES_JAVA_OPTS"] == "-Xms512m -Xmx512m"
    assert env["ES_JAVA_HOME"] == "/jdk17"
    assert env["ES_TMPDIR"] == str(tmp_path)
    assert "JAVA_HOME" not in env
    assert "ES_PATH_CONF" not in env
    assert env["PATH"] == "/bin"


@pytest.mark.parametrize(
    ("release", "major"),
    [
        ('JAVA_VERSION="17.0.15"\n', 17),
        ('IMPLEMENTOR="x"\nJAVA_VERSION="25"\n', 25),
        ('JAVA_VERSION="1.8.0_302"\n', 8),
        ("nothing here\n", None),
    ],
)
def test_java_major_version(tmp_path: Path, release: str, major: int | None) -> None:
    (tmp_path / "release").write_text(release)
    assert config.java_major_version(tmp_path) == major


def test_java_major_version_without_release_file(tmp_path: Path) -> None:
    assert config.java_major_version(tmp_path / "missing") is None


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can traverse (pytest's tmp_path sits under a 700 folder)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def test_can_traverse_blocked_by_a_private_ancestor(open_dir: Path) -> None:
    private = open_dir / "home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    target = private / "project" / ".cache"  # need not exist yet
    stranger = 54321
    assert not config.can_traverse(target, stranger, [])
    private.chmod(0o755)
    assert config.can_traverse(target, stranger, [])


def test_can_traverse_by_owner_and_group(open_dir: Path) -> None:
    private = open_dir / "home"
    private.mkdir()
    st = private.stat()
    private.chmod(0o710)  # owner and group may traverse, others may not
    assert config.can_traverse(private, st.st_uid, [])
    assert config.can_traverse(private, 54321, [st.st_gid])
    assert not config.can_traverse(private, 54321, [])
    assert config.can_traverse(private, 0, [])  # root


def test_es_fallback_root_is_stable_and_per_project() -> None:
    a = config.es_fallback_root(Path("/root/ci/sigstream/.cache"))
    assert a == config.es_fallback_root(Path("/root/ci/sigstream/.cache"))
    assert a != config.es_fallback_root(Path("/root/other/.cache"))
    assert a.parent == Path("/var/lib/sigstream")
    assert re.fullmatch(r"[0-9a-f]{12}", a.name)


def test_layout_defaults_and_es_root_override(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "c", run_dir=tmp_path / "r")
    layout = config.Layout.from_settings(settings)
    assert layout.kafka_jars == tmp_path / "c" / "jars" / "kafka"
    assert layout.spark_kafka_jars == tmp_path / "c" / "jars" / "spark-kafka"
    assert layout.kafka_data == tmp_path / "r" / "kafka" / "data"
    assert layout.es_home("8.19.21") == tmp_path / "c" / "elasticsearch" / "elasticsearch-8.19.21"
    assert layout.es_data == tmp_path / "r" / "elasticsearch" / "data"
    moved = config.Layout.from_settings(settings, es_root=Path("/var/lib/sigstream/abc"))
    assert moved.es_data == Path("/var/lib/sigstream/abc/run/data")
    assert moved.es_home("8.19.21").parent == Path("/var/lib/sigstream/abc/cache")
    assert moved.kafka_data == layout.kafka_data


@pytest.mark.parametrize(
    ("jar", "artifact"),
    [
        ("kafka-clients-3.9.2.jar", "kafka-clients"),
        ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),
        ("commons-pool2-2.13.1.jar", "commons-pool2"),
        ("zstd-jni-1.5.7-7.jar", "zstd-jni"),
        ("scala-parallel-collections_2.13-1.2.0.jar", "scala-parallel-collections_2.13"),
    ],
)
def test_artifact_name(jar: str, artifact: str) -> None:
    assert fetch.artifact_name(jar) == artifact


def test_fetch_marker_must_match_exactly(tmp_path: Path) -> None:
    assert not fetch.is_fetched(tmp_path, fetch.kafka_key("4.3.1"))
    (tmp_path / fetch.MARKER).write_text(fetch.kafka_key("4.3.1") + "\n")
    assert fetch.is_fetched(tmp_path, fetch.kafka_key("4.3.1"))
    assert not fetch.is_fetched(tmp_path, fetch.kafka_key("4.2.0"))


def test_unzip_keeps_modes_and_strips_top(tmp_path: Path) -> None:
    archive = tmp_path / "es.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        script = zipfile.ZipInfo("es-1/bin/elasticsearch")
        script.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(script, "#!/bin/sh\n")
        conf = zipfile.ZipInfo("es-1/config/elasticsearch.yml")
        conf.external_attr = (stat.S_IFREG | 0o644) << 16
        zf.writestr(conf, "")
    target = tmp_path / "home"
    target.mkdir()
    fetch.unzip_with_modes(archive, target, strip_top="es-1/")
    assert os.access(target / "bin" / "elasticsearch", os.X_OK)
    assert (target / "config" / "elasticsearch.yml").stat().st_mode & 0o777 == 0o644


def test_error_lines_start_at_the_latest_launch(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    log.write_text(
        "[t] ERROR old failure\n"
        f"{proc.START_MARK}2026-01-01 starting: java\n"
        "[t] INFO fine\n"
        "[t] ERROR Unable to start acceptor for CONTROLLER (kafka.network.DataPlaneAcceptor)\n"
        "Caused by: java.net.BindException: Address already in use\n"
        "\tconfig dump = 1\n"
    )
    errors = proc.error_lines(log)
    assert errors == [
        "[t] ERROR Unable to start acceptor for CONTROLLER (kafka.network.DataPlaneAcceptor)",
        "Caused by: java.net.BindException: Address already in use",
    ]
    assert proc.tail(log, 1) == ["\tconfig dump = 1"]
