"""The cluster profile's pure configuration: ports, broker and node settings, commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import cluster_config as cc


def test_default_spec_ports_are_distinct_and_away_from_the_defaults() -> None:
    spec = cc.ClusterSpec()
    ports = spec.all_ports()
    assert len(ports) == len(set(ports)) == 16
    assert not {9092, 9093, 9200, 9300} & set(ports)


def test_spec_rejects_clashing_ports_and_impossible_durability() -> None:
    with pytest.raises(ValueError, match="distinct"):
        cc.ClusterSpec(es_http_ports=(19092, 19201))
    with pytest.raises(ValueError, match="replication"):
        cc.ClusterSpec(replication_factor=4)
    with pytest.raises(ValueError, match="controller"):
        cc.ClusterSpec(kafka_controller_ports=(19093,))


def test_client_addresses() -> None:
    spec = cc.ClusterSpec()
    assert spec.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert spec.es_hosts == ["http://127.0.0.1:19200", "http://127.0.0.1:19201"]
    assert spec.spark_master_url == "spark://127.0.0.1:17077"


def test_each_broker_is_a_voter_with_replication_3_and_min_isr_2(tmp_path: Path) -> None:
    spec = cc.ClusterSpec()
    props = cc.kafka_broker_properties(spec, 2, tmp_path / "data")
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    )
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["num.partitions"] == "6"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_es_nodes_discover_each_other_instead_of_single_node(tmp_path: Path) -> None:
    spec = cc.ClusterSpec()
    values = cc.es_node_settings(spec, 1, tmp_path / "d", tmp_path / "l")
    assert "discovery.type" not in values
    assert values["node.name"] == "es-2"
    assert values["http.port"] == 19201
    assert values["transport.port"] == 19301
    assert values["discovery.seed_hosts"] == ["127.0.0.1:19300", "127.0.0.1:19301"]
    assert values["cluster.initial_master_nodes"] == ["es-1", "es-2"]
    assert values["cluster.name"] == cc.ES_CLUSTER_NAME
    rendered = cc.config.render_es_yml(values)
    assert 'discovery.seed_hosts: ["127.0.0.1:19300", "127.0.0.1:19301"]\n' in rendered


def test_spark_commands_use_pyspark_spark_class(tmp_path: Path) -> None:
    spec = cc.ClusterSpec()
    master = cc.spark_master_command(tmp_path, spec)
    assert master[:2] == [str(tmp_path / "bin" / "spark-class"), cc_master_class()]
    assert master[master.index("--port") + 1] == "17077"
    worker = cc.spark_worker_command(tmp_path, spec, 1, tmp_path / "w")
    assert worker[-1] == "spark://127.0.0.1:17077"
    assert worker[worker.index("--port") + 1] == "17079"
    assert worker[worker.index("--cores") + 1] == "1"
    assert worker[worker.index("--memory") + 1] == "1g"


def cc_master_class() -> str:
    return "org.apache.spark.deploy.master.Master"


def test_daemon_env_stays_on_loopback_and_drops_foreign_spark_settings(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "SPARK_HOME": "/elsewhere", "PYSPARK_PYTHON": "python2"}
    env = cc.spark_daemon_env(base, tmp_path, Path("/jdk"), cc.ClusterSpec(), "/py")
    assert env["SPARK_HOME"] == str(tmp_path)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["SPARK_DAEMON_MEMORY"] == "256m"
    assert env["PYSPARK_PYTHON"] == "/py"
    assert env["PATH"] == "/bin"


def test_client_env_exports_are_shell_safe() -> None:
    env = cc.client_env(cc.ClusterSpec(), "/opt/py thon/bin/python")
    text = cc.render_exports(env | {"X": "it's"})
    assert "export SIGSTREAM_SPARK_MASTER='spark://127.0.0.1:17077'\n" in text
    assert "export PYSPARK_PYTHON='/opt/py thon/bin/python'\n" in text
    assert "export X='it'\\''s'\n" in text
    assert env["SIGSTREAM_ES_HOSTS"] == '["http://127.0.0.1:19200", "http://127.0.0.1:19201"]'


def test_alive_workers_counts_only_alive() -> None:
    answer = {"workers": [{"state": "ALIVE"}, {"state": "DEAD"}, {"state": "ALIVE"}]}
    assert cc.alive_workers(answer) == 2
    assert cc.alive_workers({}) == 0


def test_cluster_layout_gives_each_member_its_own_files(tmp_path: Path) -> None:
    from common.settings import Settings
    from infra.cluster import ClusterLayout

    settings = Settings(run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", es_root=tmp_path)
    layout = ClusterLayout(settings, cc.ClusterSpec())
    members = layout.members()
    assert [m.name for m in members] == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "es-1",
        "es-2",
        "spark-master",
        "spark-worker-1",
        "spark-worker-2",
    ]
    assert len({m.pid_file for m in members}) == len({m.log for m in members}) == 8
    assert all(m.run.is_relative_to(tmp_path / "run" / "cluster") for m in members[:3])
    # SIGSTREAM_ES_ROOT moves the ES nodes, as it does the single node.
    assert layout.member("es-2").run == tmp_path / "cluster" / "es-2"
    with pytest.raises(KeyError):
        layout.member("kafka-4")


def test_any_spark_setting_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.settings import Settings

    monkeypatch.setenv("SIGSTREAM_SPARK_CONF", '{"spark.executor.memory": "4g"}')
    assert Settings().spark_conf == {"spark.executor.memory": "4g"}
