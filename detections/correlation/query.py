"""The correlation stage on Spark: a streaming query beside the detect query.

It reads only the matches topic the detection pass publishes (one compact record per
correlation base-rule match, keyed by correlation group: ``detections.correlation.feed``),
never the events: the events are read and parsed once, by the detect query.

matches topic (own checkpoint) -> ``applyInPandasWithState`` keyed by (correlation,
tenant, group key), each key on its own event-time clock with processing-time timers
(``detections.correlation.clock``; no global watermark, so a sensor uploading an old
spool still correlates) -> ``foreachBatch`` writes correlation findings (deterministic
ids, ``op_type=create``) and late-match reports.

The semantics live in :mod:`detections.correlation.clock` and
:mod:`detections.correlation.state`; this module only moves rows.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout

from common.safe_yaml import ContentError, load_yaml_documents, read_content
from detections.compiler import DEFAULT_CONFIG, CompilerConfig, compile_path
from detections.compiler.plan import DetectionPlan, plan_rules
from detections.compiler.sigma_to_ir import rule_files
from detections.correlation.clock import ClockConfig, on_matches, on_timer
from detections.correlation.compile import base_plan, compile_correlations
from detections.correlation.feed import CorrelationFeed, record
from detections.correlation.finding_docs import LATE_MAPPINGS, correlation_finding, late_document
from detections.correlation.model import CorrelationRejection, CorrelationSpec
from detections.correlation.modes import CorrelationModes, destination
from detections.correlation.state import Firing, KeyState, Late, Match
from detections.correlation.ticks import TICK_KEY, TICK_VALUE_PATTERN, Ticker
from detections.stream.derived import DerivedPublisher
from detections.stream.job import JobConfig, kafka_source
from detections.stream.spark_session import query_conf

log = logging.getLogger("sigstream.correlate")

_CORRELATION = re.compile(r"^correlation:", re.MULTILINE)


@dataclass(frozen=True)
class CorrelationContent:
    """What the correlation query runs: the base rules (their own small plan) and the
    correlations resolved against it, plus the correlations quarantined and why."""

    plan: DetectionPlan
    specs: tuple[CorrelationSpec, ...] = ()
    rejections: tuple[CorrelationRejection, ...] = ()


@dataclass(frozen=True)
class CorrelationConfig:
    lateness_s: int = 60  # how far behind its key's newest match a match may arrive and count
    checkpoint_dir: Path | None = None  # default: <job checkpoint>-correlations
    late_index: str | None = None  # default: <findings index>-correlation-late
    # Matches older than this (processing time) are late for any group; None: no horizon
    # (replays of recorded telemetry, months old, must still correlate).
    horizon_s: int | None = None
    ttl_s: int = 3_600  # the longest a quiet key waits (processing time) for a decision
    # Processing-time timers (quiet keys decided without new matches). None: on, except
    # with availableNow. Spark runs a batch on every trigger for a query with such timers,
    # so `processAllAvailable()` never returns on it: tests that drive the query that way
    # turn them off.
    timers: bool | None = None
    # With timers: the stage runs no batch without data, and a clock tick on the matches
    # topic every this many seconds lets Spark decide timed-out keys
    # (``detections.correlation.ticks``). None: a batch on every trigger (Spark's default).
    tick_s: float | None = 5.0

    def with_timers(self, cfg: JobConfig) -> bool:
        return (not cfg.available_now) if self.timers is None else self.timers

    def clock(self) -> ClockConfig:
        horizon = self.horizon_s * 1000 if self.horizon_s else None
        return ClockConfig(self.lateness_s * 1000, horizon, self.ttl_s * 1000)

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
    chained: int = 0  # firings published as matches of correlations downstream
    rejected: int = 0  # malformed matches-topic records sent to the DLQ


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
    from detections.engine.apply import compile_matcher

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

#: One record of the matches topic (``detections.correlation.feed.record``).
MATCH_SCHEMA = T.StructType(
    [
        T.StructField("corr", T.StringType()),
        T.StructField("tenant_id", T.StringType()),
        T.StructField("group_key", T.StringType()),
        T.StructField("time_ms", T.LongType()),
        T.StructField("rule", T.StringType()),
        T.StructField("event_id", T.StringType()),
        T.StructField("value", T.StringType()),
        T.StructField("host", T.StringType()),
        T.StructField("sensor_id", T.StringType()),
    ]
)


#: The fields a match cannot do without (``feed.record`` always writes them).
REQUIRED_FIELDS = ("corr", "group_key", "time_ms", "rule", "event_id")
#: The reserved correlation id of the keys that carry malformed records through the state
#: operator to the sink (no correlation id has a colon: ids are UUIDs or rule names).
MALFORMED = "sigstream:malformed"
#: Malformed records of one partition spread over this many keys (a key's rows go to one
#: call of the state function; the cost of a batch of garbage stays a few calls).
MALFORMED_SPREAD = 16
#: The DLQ reason prefix of a malformed matches-topic record.
INVALID = "correlation_match_invalid"
DLQ_STAGE = "correlate"


def match_problem(value: Any) -> str | None:
    """Why one decoded matches-topic value (a JSON document) is not a keyed match, or
    None. The pure twin of :func:`keyed_matches`' reason column (unit tests)."""
    if not isinstance(value, dict):
        return f"{INVALID}: not a JSON object"
    types = {"time_ms": int}
    for name in REQUIRED_FIELDS:
        v = value.get(name)
        if v is None or isinstance(v, bool) or not isinstance(v, types.get(name, str)):
            return f"{INVALID}: missing or invalid {name}"
    if value["corr"] == MALFORMED:
        return f"{INVALID}: reserved correlation id"
    return None


def _reason(text: Any, m: Any) -> Any:
    """The reason column: None for a keyed match, else why the record is refused."""
    reason = F.when(text.isNull(), F.lit(f"{INVALID}: no value"))
    reason = reason.when(F.get_json_object(text, "$").isNull(), F.lit(f"{INVALID}: not JSON"))
    reason = reason.when(F.json_object_keys(text).isNull(), F.lit(f"{INVALID}: not a JSON object"))
    for name in REQUIRED_FIELDS:
        reason = reason.when(m[name].isNull(), F.lit(f"{INVALID}: missing or invalid {name}"))
    return reason.when(m["corr"] == MALFORMED, F.lit(f"{INVALID}: reserved correlation id"))


def keyed_matches(records: DataFrame) -> DataFrame:
    """Kafka rows of the matches topic -> one row per keyed match. The detect job writes
    this topic; a record it could not have written (not JSON, no correlation, key, time,
    rule or event id) is not dropped: it gets the reserved key ``MALFORMED`` (its group
    key the partition and a spread of its offset), its reason, origin and original bytes,
    and the state function passes it through to the sink, which sends it to the DLQ."""
    # The stage's own clock ticks (detections.correlation.ticks) carry no match. Only a
    # record with the tick key *and* a tick's exact value is one: anything else keyed like
    # a tick is a foreign record and goes through the checks below (to the DLQ).
    is_tick = (F.coalesce(F.col("key").cast("string"), F.lit("")) == F.lit(TICK_KEY)) & F.coalesce(
        F.col("value").cast("string").rlike(TICK_VALUE_PATTERN), F.lit(False)
    )
    records = records.where(~is_tick)
    text = F.col("value").cast("string")
    m = F.from_json(text, MATCH_SCHEMA)
    staged = records.select(
        m.alias("m"),
        _reason(text, m).alias("reason"),
        F.col("key").alias("raw_key"),
        F.col("value").alias("raw_value"),
        F.concat_ws(
            ":", F.col("topic"), F.col("partition").cast("string"), F.col("offset").cast("string")
        ).alias("origin"),
        F.concat_ws(
            ":",
            F.col("partition").cast("string"),
            F.pmod(F.col("offset"), F.lit(MALFORMED_SPREAD)).cast("string"),
        ).alias("spread"),
    )
    bad = F.col("reason").isNotNull()
    mc = F.col("m")
    return staged.select(
        F.when(bad, F.lit(MALFORMED)).otherwise(mc["corr"]).alias("corr"),
        F.when(bad, F.lit(""))
        .otherwise(F.coalesce(mc["tenant_id"], F.lit("default")))
        .alias("tenant_id"),
        F.when(bad, F.col("spread")).otherwise(mc["group_key"]).alias("group_key"),
        F.when(bad, F.lit(0).cast("long")).otherwise(mc["time_ms"]).alias("time_ms"),
        F.when(bad, F.lit("")).otherwise(mc["rule"]).alias("rule"),
        F.when(bad, F.lit("")).otherwise(mc["event_id"]).alias("event_id"),
        F.when(bad, F.lit(None).cast("string")).otherwise(mc["value"]).alias("value"),
        F.when(bad, F.lit("")).otherwise(F.coalesce(mc["host"], F.lit(""))).alias("host"),
        F.when(bad, F.lit("")).otherwise(F.coalesce(mc["sensor_id"], F.lit(""))).alias("sensor_id"),
        "reason",
        F.when(bad, F.col("origin")).alias("origin"),
        F.when(bad, F.col("raw_key")).alias("raw_key"),
        F.when(bad, F.col("raw_value")).alias("raw_value"),
    )


# --- the state function ----------------------------------------------------------------------

OUTPUT = T.StructType(
    [
        T.StructField("kind", T.StringType()),  # "firing", "late" or "rejected"
        T.StructField("corr", T.StringType()),  # correlation id (state survives rule edits)
        T.StructField("group_key", T.StringType()),
        T.StructField("window_start", T.LongType()),
        T.StructField("window_end", T.LongType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("watermark", T.LongType()),
        T.StructField("matches", T.StringType()),  # JSON list of Match.to_list()
        # "rejected" rows only: a malformed record of the matches topic, for the DLQ
        T.StructField("reason", T.StringType()),
        T.StructField("origin", T.StringType()),  # topic:partition:offset
        T.StructField("raw_key", T.BinaryType()),
        T.StructField("raw_value", T.BinaryType()),
    ]
)
_NO_REJECT = (None, None, None, None)
STATE = T.StructType([T.StructField("state", T.StringType())])


def state_function(
    specs: Sequence[CorrelationSpec], clock: ClockConfig, timers: bool = True
) -> Callable[[Any, Iterator[Any], GroupState], Iterator[Any]]:
    """The applyInPandasWithState function: a thin adapter around the key clock
    (``detections.correlation.clock``), keyed by (correlation, tenant, group key).
    Without ``timers`` (``--once``: a query with processing-time timeouts never runs out
    of work, so availableNow would never end) quiet keys keep their state for the next
    run instead."""
    import pandas as pd

    by_id = {spec.id: spec for spec in specs}

    def correlate(key: Any, frames: Iterator[pd.DataFrame], state: GroupState) -> Iterator[Any]:
        corr, group_key = str(key[0]), str(key[2])
        if corr == MALFORMED:  # malformed records: through to the sink (the DLQ), no state
            yield from rejected_rows(frames)
            return
        spec = by_id.get(corr)
        if spec is None:  # a correlation removed since the checkpoint: forget its state
            for _ in frames:
                pass
            if state.exists:
                state.remove()
            return
        saved = KeyState.from_json(state.get[0]) if state.exists else KeyState()
        if state.hasTimedOut:
            step = on_timer(spec, group_key, saved, clock)
        else:
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
            now = int(state.getCurrentProcessingTimeMs())
            step = on_matches(spec, group_key, saved, new, now, clock)
        if step.remove:
            if state.exists:
                state.remove()
        else:
            assert step.timer_ms is not None
            state.update((step.state.to_json(),))
            if timers:
                state.setTimeoutDuration(step.timer_ms)
        rows: list[tuple[Any, ...]] = [
            (
                "firing",
                corr,
                group_key,
                f.window_start_ms,
                f.window_end_ms,
                float(f.value),
                None,
                json.dumps([m.to_list() for m in f.matches]),
                *_NO_REJECT,
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
                *_NO_REJECT,
            )
            for late in step.late
        ]
        if rows:
            yield pd.DataFrame(rows, columns=OUTPUT.fieldNames())

    return correlate


def rejected_rows(frames: Iterator[Any]) -> Iterator[Any]:
    """The output rows ("rejected") of the malformed records of a reserved key: their
    reason, origin and original bytes, nothing else."""
    import pandas as pd

    for frame in frames:
        if not len(frame):
            continue
        n = len(frame)
        yield pd.DataFrame(
            {
                "kind": ["rejected"] * n,
                "corr": [MALFORMED] * n,
                "group_key": frame["group_key"].tolist(),
                "window_start": [None] * n,
                "window_end": [None] * n,
                "value": [None] * n,
                "watermark": [None] * n,
                "matches": [None] * n,
                "reason": frame["reason"].tolist(),
                "origin": frame["origin"].tolist(),
                "raw_key": frame["raw_key"].tolist(),
                "raw_value": frame["raw_value"].tolist(),
            },
            columns=OUTPUT.fieldNames(),
        )


def dlq_record(row: dict[str, Any]) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The DLQ record of a "rejected" output row: original key and value, reason headers."""
    from common.dlq import dlq_headers

    return (
        _bytes(row.get("raw_key")),
        _bytes(row.get("raw_value")),
        dlq_headers(str(row["reason"]), str(row["origin"]), DLQ_STAGE),
    )


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


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
) -> Callable[[DataFrame, int], None]:
    """foreachBatch: firings -> findings index (but those of correlations only chains
    read), late matches -> late index, and each firing of an upstream correlation -> one
    match per correlation downstream of it, back to the matches topic (read by the next
    micro-batch: a chain advances one link per batch)."""
    from detections.correlation.chain import chain_match, downstream_of, silent_correlation_ids
    from detections.sinks.elasticsearch import connect, write_documents
    from detections.sinks.finding_docs import finding_document

    by_id = {spec.id: spec for spec in content.specs}
    downstream = downstream_of(content.specs)
    silent = silent_correlation_ids(content.specs)
    publisher = DerivedPublisher(cfg.producer_config())  # chained matches, DLQ records
    follower = CorrelationModes(cfg.deploy_dir, cfg.trusted_keys) if cfg.deploy_dir else None

    clients: list[Any] = []  # one Elasticsearch client for the stage's life (its pool)

    def client() -> Any:
        if not clients:
            clients.append(connect(cfg.es_hosts, from_settings=False, **cfg.es_options))
        return clients[0]

    def handle(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        rows = [r.asDict() for r in batch.collect()]
        collected = time.monotonic()
        rejected = [dlq_record(r) for r in rows if r["kind"] == "rejected"]
        rows = [r for r in rows if r["kind"] != "rejected"]
        if rejected:  # before the batch ends: its offsets commit only once they are in Kafka
            publisher.publish(cfg.dlq_topic, rejected)
            _warn_rejected(batch_id, rejected, cfg.dlq_topic)
        modes = follower.current() if follower is not None else {}
        indices: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        late_docs, chained = [], []
        fired = 0
        now = datetime.now(UTC)
        for row in rows:
            spec = by_id[row["corr"]]
            firings, lates = decode(row)
            for f in firings:
                f = Firing(
                    spec.id, f.group_key, f.window_start_ms, f.window_end_ms, f.value, f.matches
                )
                last = max(f.matches)
                where = destination(modes, spec.id, last.tenant_id, last.sensor_id)
                if where is None:  # the kill switch: not written, feeds no chain
                    continue
                fired += 1
                index = cfg.findings_index if where == "active" else cfg.shadow_index
                if spec.id not in silent and index is not None:
                    document = finding_document(correlation_finding(spec, f, now))
                    indices.setdefault(index, []).append(document)
                for down in downstream.get(spec.id, ()):
                    chained.append(record(down.id, *chain_match(spec, f, down)))
            late_docs += [late_document(spec, row["group_key"], x) for x in lates]
        if chained:
            publisher.publish(cfg.matches_topic, chained)
        findings = indices.get(cfg.findings_index, [])
        stats: dict[str, Any] = {
            "batch": batch_id,
            "firings": fired,
            "late": len(late_docs),
            "chained": len(chained),
            "rejected": len(rejected),
        }
        if indices or late_docs:
            es = client()
            for index, documents in indices.items():
                result = write_documents(es, index, documents)
                if index == cfg.findings_index:
                    stats["created"], stats["duplicates"] = result.created, result.duplicates
                else:
                    stats["shadow"] = result.created
            if late_docs:
                write_documents(es, ccfg.late(cfg), late_docs)
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
        totals.firings += fired
        totals.chained += len(chained)
        totals.created += int(stats.get("created", 0))
        totals.duplicates += int(stats.get("duplicates", 0))
        totals.late += len(late_docs)
        totals.rejected += len(rejected)
        stats["seconds"] = time.monotonic() - started
        stats["spark_seconds"] = collected - started  # the stage's Spark job (state included)
        if findings or late_docs:
            log.info(
                "correlation batch %d: %d firings (%d new findings), %d late matches reported",
                batch_id,
                fired,
                stats.get("created", 0),
                len(late_docs),
            )
        if on_batch:
            on_batch(stats)

    return handle


def _warn_rejected(
    batch_id: int, rejected: Sequence[tuple[Any, Any, list[tuple[str, bytes]]]], dlq: str
) -> None:
    from common.dlq import DLQ_ORIGIN_HEADER, DLQ_REASON_HEADER

    examples = "; ".join(
        f"{dict(h)[DLQ_ORIGIN_HEADER].decode()}: {dict(h)[DLQ_REASON_HEADER].decode()}"
        for _, _, h in rejected[:3]
    )
    more = f" (and {len(rejected) - 3} more)" if len(rejected) > 3 else ""
    log.warning(
        "correlation batch %d: %d malformed matches-topic records sent to %s: %s%s",
        batch_id,
        len(rejected),
        dlq,
        examples,
        more,
    )


def ensure_indices(cfg: JobConfig, ccfg: CorrelationConfig) -> None:
    from detections.sinks.elasticsearch import (
        connect,
        ensure_findings_index,
        ensure_index,
        put_template,
    )

    es = connect(cfg.es_hosts, from_settings=False, **cfg.es_options)
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
    """Start the correlation stage (None when there is no correlation to run). It reads
    the matches the detect query publishes (``cfg.matches_topic``: run that query with
    ``feeding(cfg, content)``), never the events. Bind ``content``
    (``functools.partial``) to use it as a ``detections.stream.job.Companion``."""
    ccfg = ccfg or CorrelationConfig()
    for r in content.rejections:
        log.warning("correlation %s quarantined: %s: %s", r.rule_id, r.reason, r.message)
    if not content.specs:
        return None
    ensure_indices(cfg, ccfg)
    DerivedPublisher(cfg.producer_config()).ensure_topics(
        [cfg.matches_topic, cfg.dlq_topic], cfg.internal_partitions
    )
    totals = totals if totals is not None else CorrelationTotals()
    log.info(
        "correlation stage: %d correlations over %d base rules, per-key lateness %ds, horizon %s s",
        len(content.specs),
        len(content.plan.rules),
        ccfg.lateness_s,
        ccfg.horizon_s,
    )
    query = _start_query(spark, cfg, content, ccfg, totals, on_batch)
    if ccfg.with_timers(cfg) and ccfg.tick_s:
        running = query
        topic = cfg.matches_topic
        Ticker(cfg.producer_config(), topic, ccfg.tick_s, lambda: running.isActive).start()
    if cfg.runs_until_drained() and any(spec.upstream for spec in content.specs):
        # Alone and available-now: a chain advances one link per run; run again while
        # firings were published downstream (at most once per link: no cycles compile).
        for _ in content.specs:
            before = totals.chained
            query.awaitTermination()
            if query.exception() is not None or totals.chained == before:
                break
            query = _start_query(spark, cfg, content, ccfg, totals, on_batch)
    return query


def _start_query(
    spark: SparkSession,
    cfg: JobConfig,
    content: CorrelationContent,
    ccfg: CorrelationConfig,
    totals: CorrelationTotals,
    on_batch: Callable[[dict[str, Any]], None] | None,
) -> StreamingQuery:
    keyed = keyed_matches(kafka_source(spark, cfg, cfg.matches_topic).load())
    fired = keyed.groupBy("corr", "tenant_id", "group_key").applyInPandasWithState(
        state_function(content.specs, ccfg.clock(), timers=ccfg.with_timers(cfg)),
        OUTPUT,
        STATE,
        "append",
        GroupStateTimeout.ProcessingTimeTimeout
        if ccfg.with_timers(cfg)
        else GroupStateTimeout.NoTimeout,
    )
    handler = batch_writer(content, cfg, ccfg, totals, on_batch)
    writer = (
        fired.writeStream.queryName("sigstream-correlate")
        .option("checkpointLocation", str(ccfg.checkpoint(cfg)))
        .foreachBatch(handler)
    )
    if cfg.runs_until_drained():
        writer = writer.trigger(availableNow=True)
    else:  # with --once too: beside the detect query, drained by ``detections.job.run``
        writer = writer.trigger(processingTime=f"{cfg.trigger_seconds} seconds")
    conf = {"spark.sql.shuffle.partitions": str(cfg.state_partitions)}
    if ccfg.with_timers(cfg) and ccfg.tick_s:
        # No batch without data: the ticks bring one every ``tick_s`` for the timers.
        conf["spark.sql.streaming.noDataMicroBatches.enabled"] = "false"
    with query_conf(spark, conf):
        return writer.start()


def feeding(cfg: JobConfig, content: CorrelationContent) -> JobConfig:
    """The detect job's config that feeds ``content``'s correlations: their base rules'
    matches go to the matches topic (the rules are added to the running plan if it lacks
    them), and base rules of ``generate: false`` correlations write no findings."""
    import dataclasses

    from detections.correlation.compile import correlation_only_rule_ids

    if not content.specs:
        return cfg
    return dataclasses.replace(
        cfg,
        correlation_feed=CorrelationFeed.of(content.specs),
        feed_rules=tuple(p.rule for p in content.plan.rules),
        silent_rule_ids=cfg.silent_rule_ids | correlation_only_rule_ids(content.specs),
    )
