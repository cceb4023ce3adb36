"""Run the real pipeline for a test: replay files to fresh Kafka topics, run the detection
job until the topic is drained, and read the findings back from Elasticsearch."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch
from pyspark.sql import SparkSession

from common.settings import get_settings
from detections.compiler.plan import DetectionPlan, load_plan
from detections.stream.job import JobConfig, JobTotals, run
from ingest.producer import EventProducer
from ingest.replay import ReplayResult, replay


@dataclass
class StackRun:
    plan: DetectionPlan
    replayed: ReplayResult
    totals: JobTotals
    findings: list[dict[str, Any]]
    config: JobConfig
    extra: dict[str, Any] = field(default_factory=dict)


def job_config(workdir: Path, suffix: str | None = None, **overrides: Any) -> JobConfig:
    s = get_settings()
    suffix = suffix or uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap": s.kafka_bootstrap,
        "events_topic": f"test.{suffix}.events",
        "dlq_topic": f"test.{suffix}.dlq",
        "matches_topic": f"test.{suffix}.matches",
        "summaries_topic": f"test.{suffix}.summaries",
        "es_hosts": tuple(s.es_hosts),
        "findings_index": f"test-{suffix}-findings",
        "checkpoint_dir": workdir / "checkpoint",
        "available_now": True,
    }
    values.update(overrides)
    return JobConfig(**values)


def read_findings(cfg: JobConfig) -> list[dict[str, Any]]:
    es = Elasticsearch(list(cfg.es_hosts), request_timeout=60)
    try:
        es.indices.refresh(index=cfg.findings_index)
        hits: list[dict[str, Any]] = []
        resp = es.search(
            index=cfg.findings_index, size=10_000, query={"match_all": {}}, sort=["_doc"]
        )
        hits.extend(h["_source"] | {"_id": h["_id"]} for h in resp["hits"]["hits"])
        return hits
    finally:
        es.close()


def run_detection(
    spark: SparkSession,
    inputs: Sequence[Path],
    rule_paths: Sequence[Path],
    workdir: Path,
    cfg: JobConfig | None = None,
    plan: DetectionPlan | None = None,
) -> StackRun:
    cfg = cfg or job_config(workdir)
    plan = plan or load_plan(list(rule_paths))
    with EventProducer(cfg.kafka_bootstrap, cfg.events_topic, cfg.dlq_topic) as producer:
        replayed = replay(inputs, producer)
    assert replayed.failed == 0, replayed.errors
    totals = run(spark, plan, cfg)
    return StackRun(plan, replayed, totals, read_findings(cfg), cfg)
