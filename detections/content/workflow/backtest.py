"""``sigstream rules backtest``: run rules over stored history with Spark batch to see the
alert volume they would have produced before they are deployed.

History is the events archive the job writes (Parquet, partitioned ``event_date=``, the
parsed event columns) or, for a quick look, raw corpora read with the replay adapters.
Matching is ``detections.engine.apply.detect``, the code the streaming job runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detections.compiler.plan import DetectionPlan
from detections.content.workflow.events import to_row
from schemas.generate import spark_event_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SAMPLE_COLUMNS = ("event_time", "host", "event_id", "event_type")
DETAIL_COLUMNS = ("Image", "CommandLine", "TargetImage", "ScriptBlockText", "TargetObject")


def parse_since(text: str, today: date | None = None) -> date:
    """``7d`` / ``12h`` / ``2w`` back from now, or an ISO date."""
    text = text.strip().lower()
    units = {"d": 1.0, "w": 7.0, "h": 1 / 24}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        days = float(text[:-1]) * units[text[-1]]
        now = datetime.now(UTC) if today is None else datetime(*today.timetuple()[:3], tzinfo=UTC)
        return (now - timedelta(days=days)).date()
    return date.fromisoformat(text)


@dataclass
class RuleBacktest:
    rule_id: str
    title: str
    level: str | None
    hits: int = 0
    per_day: list[tuple[str, int]] = field(default_factory=list)
    top_hosts: list[tuple[str, int]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BacktestResult:
    events: int
    days: int
    first: str | None
    last: str | None
    rules: list[RuleBacktest]


def write_archive(events: DataFrame, archive_dir: Path) -> None:
    """Append parsed events to the archive layout backtests read (also what the job writes)."""
    from pyspark.sql import functions as F

    (
        events.withColumn("event_date", F.to_date("event_time"))
        .write.mode("append")
        .partitionBy("event_date")
        .parquet(str(archive_dir))
    )


def archive_events(spark: SparkSession, archive_dir: Path, since: date | None) -> DataFrame:
    """Archived events from ``since`` on (partition pruning on ``event_date``)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not archive_dir.is_dir() or not any(archive_dir.glob("event_date=*")):
        raise FileNotFoundError(
            f"no events archive at {archive_dir} (expected event_date=YYYY-MM-DD/ folders); "
            "run the detection job with archiving on, or backtest raw files with --from"
        )
    schema = T.StructType(
        [*spark_event_schema().fields, T.StructField("event_date", T.DateType(), True)]
    )
    df = spark.read.schema(schema).option("basePath", str(archive_dir)).parquet(str(archive_dir))
    if since is not None:
        df = df.where(F.col("event_date") >= F.lit(since.isoformat()).cast("date"))
    # The job archives at least once (a micro-batch replayed after a crash is appended
    # again): an event id counts once.
    return df.drop("event_date").dropDuplicates(["event_id"])


def corpus_events(
    spark: SparkSession, paths: Iterable[Path], since: date | None = None
) -> tuple[DataFrame, int]:
    """Raw corpora (OTRF, SigmaHQ regression, .jsonl) as a DataFrame of parsed events,
    and how many records could not become events."""
    from ingest.sources import iter_items

    rows: list[dict[str, Any]] = []
    rejected = 0
    for item in iter_items(list(paths)):
        if item.event is None:
            rejected += 1
            continue
        if since is not None and item.event.event_time.date() < since:
            continue
        rows.append(to_row(item.event))
    return spark.createDataFrame(rows, schema=spark_event_schema()), rejected


def backtest(
    events: DataFrame,
    plan: DetectionPlan,
    *,
    top: int = 10,
    samples: int = 5,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Hits per rule, per day, top hosts and sample matches of ``plan`` over ``events``."""
    from pyspark.sql import functions as F

    from detections.engine.apply import detect

    say = progress or (lambda _msg: None)
    say("counting events …")
    span = events.agg(
        F.count(F.lit(1)).alias("n"),
        F.min("event_time").alias("first"),
        F.max("event_time").alias("last"),
        F.countDistinct(F.to_date("event_time")).alias("days"),
    ).first()
    assert span is not None
    say(f"matching {len(plan.rules)} rule(s) over {span['n']:,} events …")
    hits = detect(events, plan).withColumn("day", F.date_format("event_time", "yyyy-MM-dd"))
    hits = hits.persist()
    try:
        by_rule = {
            r["rule_index"]: r["count"] for r in hits.groupBy("rule_index").count().collect()
        }
        per_day: dict[int, list[tuple[str, int]]] = {}
        for r in hits.groupBy("rule_index", "day").count().orderBy("day").collect():
            per_day.setdefault(r["rule_index"], []).append((r["day"], r["count"]))
        hosts: dict[int, list[tuple[str, int]]] = {}
        for r in hits.groupBy("rule_index", "host").count().orderBy(F.desc("count")).collect():
            if len(hosts.setdefault(r["rule_index"], [])) < top:
                hosts[r["rule_index"]].append((r["host"], r["count"]))
        present = [c for c in (*SAMPLE_COLUMNS, *DETAIL_COLUMNS) if c in events.columns]
        sample_rows: dict[int, list[dict[str, Any]]] = {}
        for index in by_rule:
            rows = hits.where(F.col("rule_index") == index).select(*present).limit(samples)
            sample_rows[index] = [
                {k: v for k, v in row.asDict().items() if v is not None} for row in rows.collect()
            ]
    finally:
        hits.unpersist()
    results = [
        RuleBacktest(
            rule_id=str(p.rule.id),
            title=p.rule.title,
            level=p.rule.level,
            hits=by_rule.get(p.index, 0),
            per_day=per_day.get(p.index, []),
            top_hosts=hosts.get(p.index, []),
            samples=sample_rows.get(p.index, []),
        )
        for p in plan.rules
    ]
    return BacktestResult(
        events=int(span["n"]),
        days=int(span["days"]),
        first=str(span["first"]) if span["first"] else None,
        last=str(span["last"]) if span["last"] else None,
        rules=results,
    )


def select_rules(plan: DetectionPlan, wanted: Sequence[str]) -> DetectionPlan:
    """Only the rules whose id or title is in ``wanted`` (all when empty)."""
    if not wanted:
        return plan
    from detections.compiler.plan import plan_rules

    keep = [p.rule for p in plan.rules if str(p.rule.id) in wanted or p.rule.title in wanted]
    return plan_rules(keep, allow_unknown_fields=True)
