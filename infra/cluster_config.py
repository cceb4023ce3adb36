"""Pure configuration of the ``cluster`` profile: who listens where, and each config file.

The profile runs real multi-process clusters on loopback (3 Kafka brokers, 2 Elasticsearch
nodes, a Spark standalone master and 2 workers) beside the single-node default, on distinct
ports and data folders, so both can run at once. Nothing here starts a process; the
functions are unit-tested (tests/unit/test_cluster_config.py) and ``infra.cluster`` writes
what they return.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra import config

PROFILE = "cluster"
ES_CLUSTER_NAME = "sigstream-cluster"


@dataclass(frozen=True)
class ClusterSpec:
    """Addresses and sizes of every process of the cluster profile.

    The sizes are deliberately modest (the whole profile fits in about 5 GB of RAM next
    to the default services) and the ports sit 10,000 above the defaults.
    """

    host: str = "127.0.0.1"
    kafka_ports: tuple[int, ...] = (19092, 19094, 19096)
    kafka_controller_ports: tuple[int, ...] = (19093, 19095, 19097)
    kafka_heap: str = "384m"
    partitions: int = 6
    replication_factor: int = 3
    min_insync_replicas: int = 2
    es_http_ports: tuple[int, ...] = (19200, 19201)
    es_transport_ports: tuple[int, ...] = (19300, 19301)
    es_heap: str = "512m"
    spark_master_port: int = 17077
    spark_master_ui_port: int = 18080
    spark_worker_ports: tuple[int, ...] = (17078, 17079)
    spark_worker_ui_ports: tuple[int, ...] = (18081, 18082)
    spark_daemon_memory: str = "256m"
    spark_worker_cores: int = 1
    spark_worker_memory: str = "1g"

    def __post_init__(self) -> None:
        if len(self.kafka_ports) != len(self.kafka_controller_ports):
            raise ValueError("one controller port per Kafka broker")
        if len(self.es_http_ports) != len(self.es_transport_ports):
            raise ValueError("one transport port per Elasticsearch node")
        if len(self.spark_worker_ports) != len(self.spark_worker_ui_ports):
            raise ValueError("one UI port per Spark worker")
        if not 1 <= self.min_insync_replicas <= self.replication_factor <= len(self.kafka_ports):
            raise ValueError("need 1 <= min.insync.replicas <= replication factor <= brokers")
        ports = self.all_ports()
        if len(ports) != len(set(ports)):
            raise ValueError(f"ports must be distinct: {sorted(ports)}")

    def all_ports(self) -> list[int]:
        return [
            *self.kafka_ports,
            *self.kafka_controller_ports,
            *self.es_http_ports,
            *self.es_transport_ports,
            self.spark_master_port,
            self.spark_master_ui_port,
            *self.spark_worker_ports,
            *self.spark_worker_ui_ports,
        ]

    # Client-facing addresses ---------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"{self.host}:{port}" for port in self.kafka_ports)

    @property
    def es_hosts(self) -> list[str]:
        return [f"http://{self.host}:{port}" for port in self.es_http_ports]

    @property
    def spark_master_url(self) -> str:
        return f"spark://{self.host}:{self.spark_master_port}"

    @property
    def spark_master_ui(self) -> str:
        return f"http://{self.host}:{self.spark_master_ui_port}"

    def kafka_voters(self) -> str:
        """``controller.quorum.voters``: every broker is also a controller (3 voters)."""
        return ",".join(
            f"{node}@{self.host}:{port}"
            for node, port in enumerate(self.kafka_controller_ports, start=1)
        )

    def es_node_names(self) -> list[str]:
        return [f"es-{i}" for i in range(1, len(self.es_http_ports) + 1)]


def kafka_broker_properties(spec: ClusterSpec, node_id: int, log_dir: Path) -> dict[str, str]:
    """``server.properties`` of broker ``node_id`` (1-based): combined broker+controller.

    Starts from the single-node properties and raises every durability knob: replication
    factor 3 and ``min.insync.replicas`` 2 for data and internal topics, so with
    ``acks=all`` a write survives the loss of any one broker and one broker may be down
    without stopping producers.
    """
    index = node_id - 1
    props = config.kafka_server_properties(
        host=spec.host,
        port=spec.kafka_ports[index],
        controller_port=spec.kafka_controller_ports[index],
        log_dir=log_dir,
        partitions=spec.partitions,
        node_id=node_id,
    )
    rf, isr = str(spec.replication_factor), str(spec.min_insync_replicas)
    props.update(
        {
            "controller.quorum.voters": spec.kafka_voters(),
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "unclean.leader.election.enable": "false",
            "num.io.threads": "2",
            "num.replica.fetchers": "1",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
    )
    return props


def es_node_settings(
    spec: ClusterSpec, index: int, data_dir: Path, logs_dir: Path
) -> dict[str, object]:
    """``elasticsearch.yml`` of node ``index`` (0-based) of the 2-node cluster.

    Discovery lists every transport port; ``cluster.initial_master_nodes`` names both
    nodes, which only matters for the very first start (it bootstraps the voting
    configuration). Security and disk watermarks are off as on the single node.
    """
    values = config.es_settings(
        host=spec.host,
        port=spec.es_http_ports[index],
        data_dir=data_dir,
        logs_dir=logs_dir,
        cluster_name=ES_CLUSTER_NAME,
    )
    del values["discovery.type"]
    values["node.name"] = spec.es_node_names()[index]
    values["transport.port"] = spec.es_transport_ports[index]
    values["discovery.seed_hosts"] = [f"{spec.host}:{p}" for p in spec.es_transport_ports]
    values["cluster.initial_master_nodes"] = spec.es_node_names()
    return values


def spark_master_command(spark_home: Path, spec: ClusterSpec) -> list[str]:
    """The standalone master, via pyspark's own ``bin/spark-class`` (it execs the JVM)."""
    return [
        str(spark_home / "bin" / "spark-class"),
        "org.apache.spark.deploy.master.Master",
        "--host",
        spec.host,
        "--port",
        str(spec.spark_master_port),
        "--webui-port",
        str(spec.spark_master_ui_port),
    ]


def spark_worker_command(
    spark_home: Path, spec: ClusterSpec, index: int, work_dir: Path
) -> list[str]:
    """Worker ``index`` (0-based): 1 core and 1 GB for executors by default."""
    return [
        str(spark_home / "bin" / "spark-class"),
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        spec.host,
        "--port",
        str(spec.spark_worker_ports[index]),
        "--webui-port",
        str(spec.spark_worker_ui_ports[index]),
        "--cores",
        str(spec.spark_worker_cores),
        "--memory",
        spec.spark_worker_memory,
        "--work-dir",
        str(work_dir),
        spec.spark_master_url,
    ]


def spark_daemon_env(
    base: Mapping[str, str], spark_home: Path, java_home: Path, spec: ClusterSpec, python: str
) -> dict[str, str]:
    """Environment of the master and workers.

    SPARK_LOCAL_IP keeps every listener (RPC, block manager, UI) on loopback;
    SPARK_DAEMON_MEMORY sizes the daemons (the default is 1 GB each); SPARK_WORKER_OPTS
    cleans finished applications' work dirs; PYSPARK_PYTHON is
    the interpreter the executors' Python workers use when the driver names none.
    """
    env = {k: v for k, v in base.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    env.update(
        {
            "SPARK_HOME": str(spark_home),
            "JAVA_HOME": str(java_home),
            "SPARK_LOCAL_IP": spec.host,
            "SPARK_DAEMON_MEMORY": spec.spark_daemon_memory,
            # Each application leaves its jars and executor logs in the worker's work dir:
            # delete those of finished applications after a day.
            "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true "
            "-Dspark.worker.cleanup.interval=3600 -Dspark.worker.cleanup.appDataTtl=86400",
            "SPARK_NO_DAEMONIZE": "1",
            "PYSPARK_PYTHON": python,
        }
    )
    return env


def client_env(spec: ClusterSpec, python: str) -> dict[str, str]:
    """What a driver (``sigstream detect``, a test) needs to use the cluster profile.

    Only settings and standard Spark variables: the job itself runs unchanged.
    """
    return {
        "SIGSTREAM_SPARK_MASTER": spec.spark_master_url,
        "SIGSTREAM_KAFKA_BOOTSTRAP": spec.kafka_bootstrap,
        "SIGSTREAM_ES_HOSTS": json.dumps(spec.es_hosts),
        "SIGSTREAM_TOPIC_PARTITIONS": str(spec.partitions),
        # The driver must advertise a loopback address the executors can reach.
        "SPARK_LOCAL_IP": spec.host,
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
    }


def render_exports(env: Mapping[str, str]) -> str:
    """``export K='V'`` lines for ``eval "$(sigstream infra env --profile cluster)"``."""
    lines = []
    for key, value in env.items():
        quoted = "'" + value.replace("'", "'\\''") + "'"
        lines.append(f"export {key}={quoted}")
    return "\n".join(lines) + "\n"


def alive_workers(master_json: Mapping[str, object]) -> int:
    """ALIVE workers in the master UI's ``/json/`` answer (0 if the field is missing)."""
    workers = master_json.get("workers")
    if not isinstance(workers, list):
        return 0
    return sum(1 for w in workers if isinstance(w, dict) and w.get("state") == "ALIVE")
