"""Build the SparkSession the detection job runs in.

The master URL is configuration (``SIGSTREAM_SPARK_MASTER``): ``local[2]`` by default, a
``spark://`` / ``k8s://`` / ``yarn`` URL to scale out. The Kafka connector jars come from
the Maven cache that ``infra`` fills, never from Ivy (``--packages``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pyspark.sql import SparkSession

from common.settings import Settings
from infra.services import spark_kafka_jars

FILESYSTEM_CHECKPOINTS = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)


def build_session(
    settings: Settings,
    app_name: str = "sigstream-detect",
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(spark_kafka_jars()))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.ui.enabled", "false")
        # Building DataFrames goes through py4j; capturing Python call sites doubles its cost.
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        # The rule engine runs per Arrow batch: larger batches spread its per-batch cost.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20000")
        .config("spark.sql.session.timeZone", "UTC")
        # Sysmon has fields that differ only by case (SourceProcessGuid vs ...GUID), auditd too
        # (syscall vs SYSCALL).
        .config("spark.sql.caseSensitive", "true")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.adaptive.enabled", "false")
        # Each micro-batch's foreachBatch plan wraps the stream's output, and Spark infers
        # the constraints of its ~110-column projection anew: 14% of the driver JVM's CPU
        # at a low event rate (a trigger 494 -> 429 ms). The job has no joins or filters
        # that inferred constraints would prune.
        .config("spark.sql.constraintPropagation.enabled", "false")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        # Every micro-batch writes an offsets and a commit file to the checkpoint. Through
        # Hadoop's FileContext API (Spark's default) each write cost ~55 ms on a local
        # disk, ~110 ms on the loaded 2-core machine: a quarter of a small batch. The
        # FileSystem API does the same write-then-rename in ~17 ms. Both rename
        # atomically on local disks and HDFS; for another checkpoint store, pick its
        # manager class through SIGSTREAM_SPARK_CONF.
        .config("spark.sql.streaming.checkpointFileManagerClass", FILESYSTEM_CHECKPOINTS)
    )
    if settings.spark_master.startswith("local"):
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
            "spark.driver.host", "127.0.0.1"
        )
    for key, value in {**settings.spark_conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


@contextmanager
def query_conf(spark: SparkSession, conf: Mapping[str, str]) -> Iterator[None]:
    """Start a streaming query inside this block to give it its own SQL settings: Spark
    copies the session's settings when a query starts (and a stateful query's shuffle
    partitions are then fixed by its checkpoint). The session's own values come back after."""
    runtime = spark.conf
    before = {key: runtime.get(key, None) for key in conf}
    for key, value in conf.items():
        runtime.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                runtime.unset(key)
            else:
                runtime.set(key, value)
