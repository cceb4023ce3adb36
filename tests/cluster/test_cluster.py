"""The detection job on real multi-process clusters (issue 9).

The ``cluster`` profile (3 Kafka brokers with replication 3 and min ISR 2, 2 Elasticsearch
nodes, a Spark standalone master with 2 one-core workers) runs the job unchanged: the
regression corpus replayed through it must give exactly the findings (deterministic ids) of
the single-node default, also when a Spark worker and a Kafka broker are killed with
SIGKILL in the middle of the replay.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from infra import cluster as infra_cluster
from infra.proc import pid_cmdline
from tests.cluster.conftest import RULES_MODE, ClusterHandle, ClusterJob, start_driver
from tests.conftest import SUMMARY_LINES

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

KILLED_BROKER = "kafka-2"
KILLED_WORKER = "spark-worker-1"


@pytest.fixture(scope="module")
def baseline(
    cluster_boot: Any,
    services: Any,
    spark: Any,
    corpus_rules: tuple[Path, list[Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> set[str]:
    """Finding ids of the regression corpus on the single-node default (local[2]).

    Asks for ``cluster_boot`` first, so the cluster profile boots meanwhile.
    """
    from tests.e2e.harness import run_detection

    corpus, rules = corpus_rules
    started = time.monotonic()
    run = run_detection(spark, [corpus], rules, tmp_path_factory.mktemp("single-node"))
    ids = {h["_id"] for h in run.findings}
    assert ids, "the single-node run produced no finding: nothing to compare"
    assert len(ids) == len(run.findings)
    SUMMARY_LINES.append(
        f"cluster tests: single-node baseline {len(ids)} findings from {run.totals.events} "
        f"events, {len(run.plan.rules)} rules ({RULES_MODE}) in {time.monotonic() - started:.0f}s"
    )
    return ids


def test_single_node_baseline_fires(baseline: set[str]) -> None:
    """Runs first: the baseline (single node) computes while the cluster boots."""
    assert len(baseline) >= 113, "every regression case should fire at least once"


def test_every_process_of_the_cluster_is_up(cluster: ClusterHandle) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    spec = cluster.spec
    current = infra_cluster.status(spec=spec)
    assert len(current) == 8
    assert all(s.state == "running" and s.pid for s in current.values()), current
    admin = KafkaAdminClient(bootstrap_servers=spec.kafka_bootstrap)
    try:
        assert len(admin.describe_cluster()["brokers"]) == 3
        topic = admin.describe_topics(["telemetry.events"])[0]
        assert len(topic["partitions"]) == spec.partitions
        assert all(len(p["replica_nodes"]) == 3 for p in topic["partitions"])
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "telemetry.events")]
        )
        # kafka-python 3 answers {"topic": {name: {key: {"value": ...}}}}
        assert configs["topic"]["telemetry.events"]["min.insync.replicas"]["value"] == "2"
    finally:
        admin.close()
    health = infra_cluster.es_health(spec)
    assert health is not None
    assert health["number_of_nodes"] == 2
    assert health["cluster_name"] == "sigstream-cluster"
    assert infra_cluster.spark_alive_workers(spec) == 2
    SUMMARY_LINES.append(
        f"cluster tests: cluster profile launched in {cluster.launch_seconds:.0f}s, then ready "
        f"{cluster.wait_seconds:.0f}s after the baseline (it boots meanwhile)"
    )


@pytest.fixture(scope="module")
def cluster_job(
    cluster: ClusterHandle,
    corpus_rules: tuple[Path, list[Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterJob]:
    """The detection job on the cluster, one application for both tests (warm executors)."""
    corpus, rules = corpus_rules
    job = start_driver(cluster, tmp_path_factory.mktemp("cluster-job"), corpus, rules, 50)
    try:
        yield job
    finally:
        (job.workdir / "stop").touch()
        try:
            job.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()


def test_regression_corpus_on_the_cluster_matches_single_node(
    cluster: ClusterHandle, cluster_job: ClusterJob, baseline: set[str]
) -> None:
    # cluster_job comes first: the cluster application starts while the baseline runs.
    summary = cluster_job.result("once", timeout=900)
    assert summary["master"] == cluster.spec.spark_master_url
    assert summary["default_parallelism"] == 2  # two workers, one core each
    assert summary["rejected"] == 0
    ids = set(summary["finding_ids"])
    assert len(ids) == summary["findings"]
    assert ids == baseline, f"lost {sorted(baseline - ids)[:5]}, extra {sorted(ids - baseline)[:5]}"
    spread = _partitions_with_data(cluster, f"test.{cluster_job.once_suffix}.events")
    assert spread > 1, "the replay should spread over several partitions"
    SUMMARY_LINES.append(
        f"cluster tests: cluster replay {summary['events']} events -> {len(ids)} findings "
        f"(= single node) over {spread} of {cluster.spec.partitions} partitions; "
        f"driver session {summary['session_seconds']}s, job {summary['job_seconds']}s"
    )


def _partitions_with_data(cluster: ClusterHandle, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=cluster.spec.kafka_bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = consumer.end_offsets(parts)
        return sum(1 for offset in ends.values() if offset > 0)
    finally:
        consumer.close()


# The drill -------------------------------------------------------------------------------


def _checkpoint(ckpt: Path) -> tuple[int, int, int]:
    """(latest planned batch, latest committed batch, events up to the committed batch)."""

    def ids(folder: Path) -> list[int]:
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())

    planned, committed = ids(ckpt / "offsets"), ids(ckpt / "commits")
    consumed = 0
    if committed:
        last = (ckpt / "offsets" / str(committed[-1])).read_text().strip().splitlines()[-1]
        consumed = sum(sum(parts.values()) for parts in json.loads(last).values())
    return (planned[-1] if planned else -1, committed[-1] if committed else -1, consumed)


def _wait(predicate: Callable[[], bool], timeout: float, what: str, driver: Any) -> float:
    started = time.monotonic()
    while not predicate():
        if driver.poll() is not None:
            raise AssertionError(f"the job exited while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def _leaders_moved(cluster: ClusterHandle, topic: str, dead_node: int) -> bool:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=cluster.spec.kafka_bootstrap, request_timeout_ms=3000
        )
    except Exception:
        return False
    try:
        parts = admin.describe_topics([topic])[0]["partitions"]
        return all(p["leader_id"] not in (-1, dead_node) for p in parts)
    except Exception:
        return False
    finally:
        admin.close()


def _executors_of(host: str, worker_port: int) -> list[int]:
    """Executor JVMs a worker launched (their command line names the worker's address)."""
    marker = f"Worker@{host}:{worker_port}"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = pid_cmdline(int(entry.name))
            if "CoarseGrainedExecutorBackend" in cmd and marker in cmd:
                pids.append(int(entry.name))
    return pids


def test_drill_kill_a_worker_and_a_broker_mid_replay(
    cluster: ClusterHandle,
    cluster_job: ClusterJob,
    baseline: set[str],
    corpus_rules: tuple[Path, list[Path]],
) -> None:
    from ingest.producer import EventProducer
    from ingest.replay import ReplayResult, replay

    corpus, _ = corpus_rules
    spec = cluster.spec
    suffix = cluster_job.stream_suffix
    topic = f"test.{suffix}.events"
    driver = cluster_job.process
    ckpt = cluster_job.workdir / "stream" / "checkpoint"
    report: dict[str, float | int] = {}
    try:
        _wait(
            lambda: (cluster_job.workdir / "stream.started").exists(),
            900,
            "the streaming query to start",
            driver,
        )
        # Replay at ~14 events/s (about 10 s) on a thread; kill a broker 3 s into it.
        result: list[ReplayResult] = []

        def send() -> None:
            with EventProducer(spec.kafka_bootstrap, topic, f"test.{suffix}.dlq") as producer:
                result.append(replay([corpus], producer, rate=14))

        sender = threading.Thread(target=send, name="drill-replay")
        sender.start()
        time.sleep(3)
        infra_cluster.kill(KILLED_BROKER, spec=spec)
        killed_broker_at = time.monotonic()
        report["broker_failover_s"] = _wait(
            lambda: _leaders_moved(cluster, topic, dead_node=2), 120, "new leaders", driver
        )
        sender.join(timeout=180)
        assert not sender.is_alive(), "the replay did not finish"
        report["replay_done_after_broker_kill_s"] = time.monotonic() - killed_broker_at
        assert result and result[0].failed == 0, result and result[0].errors
        sent = result[0].sent
        # Kill a worker while a batch is in flight (planned, not yet committed).
        _wait(
            lambda: (lambda s: s[0] > s[1])(_checkpoint(ckpt)),
            300,
            "a batch in flight",
            driver,
        )
        in_flight = _checkpoint(ckpt)[0]
        executors = _executors_of(spec.host, spec.spark_worker_ports[0])
        infra_cluster.kill(KILLED_WORKER, spec=spec)
        report["worker_batch_recovery_s"] = _wait(
            lambda: _checkpoint(ckpt)[1] >= in_flight, 300, "the in-flight batch", driver
        )
        report["executor_exited"] = int(
            bool(executors) and not any(Path(f"/proc/{p}").exists() for p in executors)
        )
        report["drain_s"] = _wait(
            lambda: _checkpoint(ckpt)[2] >= sent, 600, "every event to be processed", driver
        )
        (cluster_job.workdir / "stop").touch()
        summary = cluster_job.result("stream", timeout=180)
    finally:
        (cluster_job.workdir / "stop").touch()
        rejoin_started = time.monotonic()
        infra_cluster.up(spec=spec, timeout=240)
        report["rejoin_s"] = time.monotonic() - rejoin_started
    ids = summary["finding_ids"]
    assert len(ids) == len(set(ids)), "a finding was written twice"
    lost, extra = baseline - set(ids), set(ids) - baseline
    assert not lost and not extra, f"lost {sorted(lost)[:5]}, extra {sorted(extra)[:5]}"
    assert summary["events"] >= sent
    assert all(s.state == "running" for s in infra_cluster.status(spec=spec).values())
    _assert_index_count(cluster, f"test-{suffix}-findings", len(baseline))
    line = (
        f"cluster tests: drill ({KILLED_BROKER} and {KILLED_WORKER} SIGKILLed): "
        f"{len(ids)} findings = single node, 0 lost, 0 duplicated; "
        f"{summary['batches']} batches, {summary['duplicates']} re-written (ids already there); "
        + ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()
        )
    )
    SUMMARY_LINES.append(line)
    print(line)


def _assert_index_count(cluster: ClusterHandle, index: str, expected: int) -> None:
    es = Elasticsearch(cluster.spec.es_hosts, request_timeout=30)
    try:
        es.indices.refresh(index=index)
        assert es.count(index=index)["count"] == expected
    finally:
        es.close()
