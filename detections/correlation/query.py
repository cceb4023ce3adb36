"""The correlation stage on Spark: a streaming query beside the detect query.

Kafka (own checkpoint) -> parse -> ``detect()`` with a plan of only the base rules ->
one row per (correlation, group key, match) -> ``applyInPandasWithState`` keyed by
(correlation, group key), event-time timeouts -> ``foreachBatch`` writes correlation
findings (deterministic ids, ``op_type=create``) and late-match reports.

The semantics live in :mod:`detections.correlation.state`; this module only moves rows.
Spark drops rows behind the watermark before an event-time-timeout state function sees
them (counted in ``numRowsDroppedByWatermark`` but not reported). To report each late
match instead, the watermark attribute the state operator sees is a guard column that is
never late; the real watermark (over every valid event's ``event_time``) still drives the
timeouts, and the state machine applies Spark's own lateness rule to each match.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark import Accumulator, AccumulatorParam
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from detections.compiler import DEFAULT_CONFIG, CompilerConfig, compile_path
from detections.compiler.sigma_to_ir import rule_files
from detections.correlation.compile import base_plan, compile_correlations
from detections.correlation.findings import (
    KEY_SEPARATOR,
    LATE_MAPPINGS,
    correlation_finding,
    late_document,
)
from detections.correlation.model import CorrelationRejection, CorrelationSpec
from detections.correlation.state import Firing, KeyState, Late, Match, advance
from detections.engine import engine_inputs, matched_rows, rule_specs
from detections.job import JobConfig, kafka_source
from detections.matcher import MatcherSpec
from detections.parse import parse_records, valid_events
from detections.plan import DetectionPlan, plan_rules
from sigstream.safe_yaml import ContentError, load_yaml_documents, read_content

log = logging.getLogger("sigstream.correlate")

_CORRELATION = re.compile(r"^correlation:", re.MULTILINE)
#: A time no event reaches: the guard column the state operator's late filter reads (within
#: pandas' nanosecond range, since the column reaches the state function).
_NEVER_LATE = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CorrelationContent:
    """What the correlation query runs: the base rules (their own small plan) and the
    correlations resolved against it, plus the correlations quarantined and why."""

    plan: DetectionPlan
    specs: tuple[CorrelationSpec, ...] = ()
    rejections: tuple[CorrelationRejection, ...] = ()


@dataclass(frozen=True)
class CorrelationConfig:
    lateness_s: int = 60  # how far behind the newest event a match may arrive and count
    checkpoint_dir: Path | None = None  # default: <job checkpoint>-correlations
    late_index: str | None = None  # default: <findings index>-correlation-late

    def checkpoint(self, cfg: JobConfig) -> Path:
        path = cfg.checkpoint_dir
        return self.checkpoint_dir or path.with_name(f"{path.name}-correlations")

    def late(self, cfg: JobConfig) -> str:
        return self.late_index or f"{cfg.findings_index}-correlation-late"


@dataclass
class CorrelationTotals:
    batches: int = 0
    firings: int = 0
    created: int = 0
    duplicates: int = 0
    late: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    rule_errors: dict[str, str] = field(default_factory=dict)  # base rule id -> error


def load_content(
    paths: Sequence[Path], config: CompilerConfig = DEFAULT_CONFIG
) -> CorrelationContent:
    """Correlations under ``paths`` with just the rules they may reference compiled: files
    holding correlations, and files naming a referenced id or name (a text search), so a
    folder of thousands of rules without correlations costs one read per file."""
    texts = {}
    for path in rule_files(paths):
        try:
            texts[path] = read_content(path).decode("utf-8")
        except (ContentError, UnicodeDecodeError):
            continue  # the rule loader reports unreadable files
    with_corr = [p for p, t in texts.items() if _CORRELATION.search(t)]
    if not with_corr:
        return CorrelationContent(plan_rules([]))
    refs = set()
    for path in with_corr:
        refs |= _references(texts[path])
    wanted = sorted({*with_corr, *(p for p, t in texts.items() if any(r in t for r in refs))})
    rules, rejections = compile_path(wanted, config)
    plan = plan_rules(rules, rejections)
    found = compile_correlations([(str(p), texts[p]) for p in wanted], plan)
    return runnable(plan, found.specs, found.rejections)


def runnable(
    plan: DetectionPlan,
    specs: Sequence[CorrelationSpec],
    rejections: Sequence[CorrelationRejection] = (),
) -> CorrelationContent:
    """The content to run: correlations whose base rules the engine refuses (say, a regex
    Python cannot compile) are quarantined with the engine's reason."""
    from detections.engine import compile_matcher

    base = base_plan(plan, specs)
    refused = {str(base.rules[i].rule.id): why for i, why in compile_matcher(base).errors.items()}
    keep, quarantined = [], list(rejections)
    for spec in specs:
        bad = [r for r in spec.rules if r in refused]
        if bad:
            message = f"{spec.path}: base rule {bad[0]} refused by the engine: {refused[bad[0]]}"
            quarantined.append(
                CorrelationRejection(spec.path, spec.id, "base_rule_quarantined", message)
            )
        else:
            keep.append(spec)
    return CorrelationContent(base_plan(plan, keep), tuple(keep), tuple(quarantined))


def _references(text: str) -> set[str]:
    """The base rule names/ids a file's correlations reference (only plain strings: the
    compiler refuses the rest with a reason)."""
    refs: set[str] = set()
    try:
        docs = [d for d in load_yaml_documents(text) if isinstance(d, dict)]
    except ContentError:
        return refs  # compile_correlations reports the file
    for doc in docs:
        corr = doc.get("correlation")
        if isinstance(corr, dict):
            rules = corr.get("rules") or []
            listed = [rules] if isinstance(rules, str) else rules if isinstance(rules, list) else []
            refs |= {r for r in listed if isinstance(r, str) and r}
    return refs


# --- rows into the state operator ------------------------------------------------------------


def _field(name: str, columns: Sequence[str]) -> Column:
    """An event field as a string column: a schema column, else the ``extra`` map."""
    if name in columns:
        return F.col(name).cast("string")
    return F.col("extra")[name]


def _needed_columns(content: CorrelationContent, columns: Sequence[str]) -> list[str]:
    needed = ["event_id", "event_time", "host", "sensor_id", "tenant_id"]
    for spec in content.specs:
        for rule in spec.rules:
            names = [*spec.group_by, *([spec.condition.field] if spec.condition.field else [])]
            for name in names:
                target = spec.field_for(rule, name)
                needed.append(target if target in columns else "extra")
    return list(dict.fromkeys(n for n in needed if n in columns))


class _ErrorsParam(AccumulatorParam):  # type: ignore[type-arg]
    """Accumulates rule index -> error from the executors (first error per rule wins)."""

    def zero(self, value: dict[int, str]) -> dict[int, str]:
        return {}

    def addInPlace(self, a: dict[int, str], b: dict[int, str]) -> dict[int, str]:
        return {**b, **a}


def rule_errors(spark: SparkSession) -> Accumulator:  # type: ignore[type-arg]
    return spark.sparkContext.accumulator({}, _ErrorsParam())


def tolerant_detect(
    events: DataFrame,
    plan: DetectionPlan,
    columns: Sequence[str],
    errors: Accumulator | None = None,  # type: ignore[type-arg]
) -> DataFrame:
    """Like ``detections.engine.detect``, but a base rule that raises on a batch only
    loses its own matches (the others' flow on) and its error goes to ``errors``: one bad
    base rule must not fail the query, which would stop the whole job."""
    spec = MatcherSpec.of(rule_specs(plan))
    output = list(columns)
    names, computed = engine_inputs(plan, events.columns)
    shipped = [*names, *[c for c in output if c not in names]]
    schema = T.StructType(
        [T.StructField("rule_index", T.IntegerType(), False), *[events.schema[n] for n in output]]
    )

    def match_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matcher = spec.matcher()
        failed: dict[int, str] = dict(matcher.errors)  # refused by the engine up front
        if failed and errors is not None:
            errors.add(dict(failed))
        for batch in batches:
            result = matcher.match(batch, failed.keys())
            if result.errors:
                failed.update(result.errors)
                if errors is not None:
                    errors.add(dict(result.errors))
            if result.rows.size:
                yield matched_rows(batch.select(output), result.rows, result.rules)

    return events.select(*shipped, *computed).mapInArrow(match_partition, schema)


def keyed_matches(
    events: DataFrame,
    content: CorrelationContent,
    lateness_s: int,
    errors: Accumulator | None = None,  # type: ignore[type-arg]
) -> DataFrame:
    """One row per (correlation, group key, base-rule match), with the guard column."""
    columns = events.columns
    timed = events.withWatermark("event_time", f"{lateness_s} seconds")
    matches = tolerant_detect(timed, content.plan, _needed_columns(content, columns), errors)
    index = {str(p.rule.id): p.index for p in content.plan.rules}
    entries = []
    for spec in content.specs:
        for rule in dict.fromkeys(spec.rules):
            parts = [
                F.coalesce(_field(spec.field_for(rule, g), columns), F.lit(""))
                for g in spec.group_by
            ]
            key = F.concat_ws(KEY_SEPARATOR, *parts) if parts else F.lit("")
            value = (
                _field(spec.field_for(rule, spec.condition.field), columns)
                if spec.condition.field
                else F.lit(None).cast("string")
            )
            entry = F.struct(
                F.lit(spec.id).alias("corr"),
                key.alias("group_key"),
                F.lit(rule).alias("rule"),
                value.alias("value"),
            )
            entries.append(F.when(F.col("rule_index") == index[rule], entry))
    exploded = matches.select(
        F.explode(F.array(*entries)).alias("m"),
        "event_id",
        F.unix_millis("event_time").alias("time_ms"),
        "host",
        "sensor_id",
        "tenant_id",
    ).where(F.col("m").isNotNull())
    delay_ms = lateness_s * 1000
    guard = F.lit(_NEVER_LATE).alias("late_guard", metadata={"spark.watermarkDelayMs": delay_ms})
    return exploded.select("m.*", "event_id", "time_ms", "host", "sensor_id", "tenant_id", guard)


# --- the state function ----------------------------------------------------------------------

OUTPUT = T.StructType(
    [
        T.StructField("kind", T.StringType()),  # "firing" or "late"
        T.StructField("corr", T.StringType()),  # correlation id (state survives rule edits)
        T.StructField("group_key", T.StringType()),
        T.StructField("window_start", T.LongType()),
        T.StructField("window_end", T.LongType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("watermark", T.LongType()),
        T.StructField("matches", T.StringType()),  # JSON list of Match.to_list()
    ]
)
STATE = T.StructType([T.StructField("state", T.StringType())])


def state_function(
    specs: Sequence[CorrelationSpec],
) -> Callable[[Any, Iterator[Any], GroupState], Iterator[Any]]:
    """The applyInPandasWithState function: a thin adapter around ``state.advance``."""
    import pandas as pd

    by_id = {spec.id: spec for spec in specs}

    def correlate(key: Any, frames: Iterator[pd.DataFrame], state: GroupState) -> Iterator[Any]:
        corr, group_key = str(key[0]), str(key[1])
        spec = by_id.get(corr)
        if spec is None:  # a correlation removed since the checkpoint: forget its state
            for _ in frames:
                pass
            if state.exists:
                state.remove()
            return
        saved = KeyState.from_json(state.get[0]) if state.exists else KeyState()
        new = [
            Match(
                int(r.time_ms),
                r.rule,
                r.event_id,
                None if pd.isna(r.value) else r.value,
                r.host,
                r.sensor_id,
                r.tenant_id,
            )
            for frame in frames
            for r in frame.itertuples(index=False)
        ]
        watermark = int(state.getCurrentWatermarkMs())
        step = advance(spec, group_key, saved, new, watermark)
        if step.empty:
            if state.exists:
                state.remove()
        else:
            state.update((step.state.to_json(),))
            assert step.deadline_ms is not None
            # Spark times a key out once the watermark is *past* the timestamp.
            state.setTimeoutTimestamp(max(step.deadline_ms - 1, watermark))
        rows: list[tuple[Any, ...]] = [
            (
                "firing",
                corr,
                group_key,
                f.window_start_ms,
                f.window_end_ms,
                float(f.value),
                watermark,
                json.dumps([m.to_list() for m in f.matches]),
            )
            for f in step.firings
        ]
        rows += [
            (
                "late",
                corr,
                group_key,
                None,
                None,
                None,
                late.watermark_ms,
                json.dumps([late.match.to_list()]),
            )
            for late in step.late
        ]
        if rows:
            yield pd.DataFrame(rows, columns=OUTPUT.fieldNames())

    return correlate


def decode(row: dict[str, Any]) -> tuple[list[Firing], list[Late]]:
    """Output rows back into firings and late reports (on the driver)."""
    matches = tuple(Match.from_list(m) for m in json.loads(row["matches"]))
    if row["kind"] == "firing":
        return [
            Firing(
                "",  # filled by the caller from the spec
                row["group_key"],
                int(row["window_start"]),
                int(row["window_end"]),
                float(row["value"]),
                matches,
            )
        ], []
    return [], [Late(m, int(row["watermark"])) for m in matches]


# --- the sink ----------------------------------------------------------------------------------


def batch_writer(
    content: CorrelationContent,
    cfg: JobConfig,
    ccfg: CorrelationConfig,
    totals: CorrelationTotals,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
    errors: Accumulator | None = None,  # type: ignore[type-arg]
) -> Callable[[DataFrame, int], None]:
    """foreachBatch: firings -> findings index, late matches -> late index; base rules
    that failed on the batch are logged (their matches of that batch are lost)."""
    from detections.findings import finding_document
    from detections.sinks.elasticsearch import connect, write_documents

    ids = {p.index: str(p.rule.id) for p in content.plan.rules}

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        rows = [r.asDict() for r in batch.collect()]
        if errors is not None and errors.value:
            for index, error in errors.value.items():
                if ids[index] not in totals.rule_errors:
                    log.error("correlation base rule %s failed: %s", ids[index], error)
                totals.rule_errors[ids[index]] = error
        findings, late_docs = [], []
        now = datetime.now(UTC)
        by_id = {spec.id: spec for spec in content.specs}
        for row in rows:
            spec = by_id[row["corr"]]
            firings, lates = decode(row)
            for f in firings:
                f = Firing(
                    spec.id, f.group_key, f.window_start_ms, f.window_end_ms, f.value, f.matches
                )
                findings.append(finding_document(correlation_finding(spec, f, now)))
            late_docs += [late_document(spec, row["group_key"], x) for x in lates]
        stats: dict[str, Any] = {
            "batch": batch_id,
            "firings": len(findings),
            "late": len(late_docs),
        }
        if findings or late_docs:
            es = connect(cfg.es_hosts, **cfg.es_options)
            try:
                if findings:
                    result = write_documents(es, cfg.findings_index, findings)
                    stats["created"], stats["duplicates"] = result.created, result.duplicates
                if late_docs:
                    write_documents(es, ccfg.late(cfg), late_docs)
            finally:
                es.close()
        for _, doc in late_docs:
            log.warning(
                "late match (not counted): correlation %s rule %s event %s at %s, watermark %s",
                doc["correlation_id"],
                doc["rule_id"],
                doc["event_id"],
                doc["event_time"],
                doc["watermark"],
            )
        totals.batches += 1
        totals.firings += len(findings)
        totals.created += int(stats.get("created", 0))
        totals.duplicates += int(stats.get("duplicates", 0))
        totals.late += len(late_docs)
        stats["seconds"] = time.monotonic() - started
        totals.history.append(stats)
        if findings or late_docs:
            log.info(
                "correlation batch %d: %d firings (%d new), %d late matches reported",
                batch_id,
                len(findings),
                stats.get("created", 0),
                len(late_docs),
            )
        if on_batch:
            on_batch(stats)

    return handle


def ensure_indices(cfg: JobConfig, ccfg: CorrelationConfig) -> None:
    from detections.sinks.elasticsearch import (
        connect,
        ensure_findings_index,
        ensure_index,
        put_template,
    )

    es = connect(cfg.es_hosts, **cfg.es_options)
    try:
        ensure_findings_index(es, cfg.findings_index)
        late = ccfg.late(cfg)
        put_template(es, f"{late}-template", [late], LATE_MAPPINGS)
        ensure_index(es, late, LATE_MAPPINGS)
    finally:
        es.close()


def start_correlations(
    spark: SparkSession,
    cfg: JobConfig,
    content: CorrelationContent,
    ccfg: CorrelationConfig | None = None,
    totals: CorrelationTotals | None = None,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
) -> StreamingQuery | None:
    """Start the correlation query (None when there is no correlation to run). Bind
    ``content`` (``functools.partial``) to use it as a ``detections.job.Companion``."""
    ccfg = ccfg or CorrelationConfig()
    for r in content.rejections:
        log.warning("correlation %s quarantined: %s: %s", r.rule_id, r.reason, r.message)
    if not content.specs:
        return None
    ensure_indices(cfg, ccfg)
    reader = kafka_source(spark, cfg)
    if cfg.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(cfg.max_offsets_per_trigger))
    events = valid_events(parse_records(reader.load()))
    errors = rule_errors(spark)
    keyed = keyed_matches(events, content, ccfg.lateness_s, errors)
    fired = keyed.groupBy("corr", "group_key").applyInPandasWithState(
        state_function(content.specs),
        OUTPUT,
        STATE,
        "append",
        GroupStateTimeout.EventTimeTimeout,
    )
    handler = batch_writer(content, cfg, ccfg, totals or CorrelationTotals(), on_batch, errors)
    writer = (
        fired.writeStream.queryName("sigstream-correlate")
        .option("checkpointLocation", str(ccfg.checkpoint(cfg)))
        .foreachBatch(handler)
    )
    if cfg.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    log.info(
        "correlation query: %d correlations over %d base rules, lateness %ds",
        len(content.specs),
        len(content.plan.rules),
        ccfg.lateness_s,
    )
    return writer.start()
