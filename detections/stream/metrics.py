"""The detect job's Prometheus metrics, kept on the driver.

Executors are separate Python workers: each task reports its numbers in its stats row
(``worker.STATS_SCHEMA``: counts, per-rule numbers, dead letters by reason code, finding
documents by level, latency bucket counts) and the driver adds them up per micro-batch
(``job.BatchStats``); :meth:`DetectMetrics.observe_batch` turns a batch into metrics.
Streaming progress (lag behind Kafka, batch durations of every query of the application)
is read at scrape time from each query's ``lastProgress`` on the driver.

Label cardinality is bounded: reason codes and levels are fixed vocabularies; per-rule
series exist for the ``rule_series`` rules with the highest evaluation cost and the
``rule_series`` rules with the most matches (rules without matches have no match series),
and for every rule quarantined at run time (as many as there are rules, and rare).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from common.metrics import LATENCY_BUCKETS

#: Micro-batch durations, seconds (0.5 s trigger; a cold first batch takes tens of seconds).
BATCH_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


@dataclass
class RuleTotals:
    events: int = 0
    matches: int = 0
    seconds: float = 0.0
    errors: int = 0


class DetectMetrics:
    """Every metric of the detection pass, in its own registry (``.registry``)."""

    def __init__(self, rule_series: int = 50, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.rule_series = rule_series
        self.rules: dict[str, RuleTotals] = {}
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.spark: Any = None
        r = self.registry
        self.batches = Counter(
            "sigstream_detect_batches", "Micro-batches the detection pass completed.", registry=r
        )
        self.events = Counter(
            "sigstream_detect_events",
            "Valid events the detection pass read from the events topic and evaluated.",
            registry=r,
        )
        self.dead_letters = Counter(
            "sigstream_detect_dead_letters",
            "Records of the events topic that are not valid events, written to the DLQ, by "
            "reason code (the full reason is in the record's DLQ header).",
            ["reason"],
            registry=r,
        )
        self.matches = Counter(
            "sigstream_detect_rule_matches",
            "(rule, event) matches, whatever became of them (finding, shadow, feed only).",
            registry=r,
        )
        self.findings = Counter(
            "sigstream_detect_findings",
            "Finding documents written, by destination (active: the analysts' index; "
            "shadow) and rule level.",
            ["destination", "level"],
            registry=r,
        )
        self.created = Counter(
            "sigstream_detect_findings_new",
            "Finding documents new to Elasticsearch (the rest were already there: replays).",
            registry=r,
        )
        self.eval_seconds = Counter(
            "sigstream_detect_rule_eval_seconds",
            "Seconds the rule engine spent in all tasks (summed over tasks, CPU-like).",
            registry=r,
        )
        self.quarantines = Counter(
            "sigstream_detect_rule_quarantines",
            "Rules quarantined at run time (raised, or over their time budget).",
            registry=r,
        )
        self.duration = Histogram(
            "sigstream_detect_batch_duration_seconds",
            "Wall time of one detection micro-batch on the driver (read, match, write).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.last_batch = Gauge(
            "sigstream_detect_last_batch_timestamp_seconds",
            "Unix time the last detection micro-batch completed.",
            registry=r,
        )
        self.rules_loaded = Gauge(
            "sigstream_detect_rules_loaded", "Rules in the running plan.", registry=r
        )
        self.rules_quarantined = Gauge(
            "sigstream_detect_rules_quarantined",
            "Rules of the running plan the engine skips (refused at start or quarantined "
            "at run time).",
            registry=r,
        )
        r.register(_Collected(self))

    def watch(self, spark: Any) -> None:
        """Report the streaming progress of the queries of ``spark`` at scrape time."""
        self.spark = spark

    def observe_batch(self, stats: Any) -> None:
        """One completed micro-batch (``detections.stream.job.BatchStats``)."""
        self.batches.inc()
        self.events.inc(stats.events)
        for reason, n in stats.dlq_reasons.items():
            self.dead_letters.labels(reason).inc(n)
        self.matches.inc(stats.matches)
        for key, n in stats.levels.items():
            destination, _, level = key.partition(":")
            self.findings.labels(destination, level).inc(n)
        self.created.inc(stats.created)
        self.eval_seconds.inc(stats.match_seconds)
        self.duration.observe(stats.seconds)
        self.last_batch.set(time.time())
        self.rules_loaded.set(stats.rules_loaded)
        self.rules_quarantined.set(stats.rules_quarantined)
        for index, (events, matches, seconds) in stats.rules.items():
            totals = self.rules.setdefault(stats.rule_ids[index], RuleTotals())
            totals.events += int(events)
            totals.matches += int(matches)
            totals.seconds += float(seconds)
        for rule_id in stats.new_quarantines:
            self.rules.setdefault(rule_id, RuleTotals()).errors += 1
            self.quarantines.inc()
        if stats.latency:
            for i, n in enumerate(stats.latency[:-1]):
                self.latency_buckets[i] += int(n)
            self.latency_sum += float(stats.latency[-1])


class _Collected(Collector):
    """What is computed at scrape time: the per-rule top-N, the latency histogram (added
    up from the tasks' bucket counts) and the streaming queries' progress."""

    def __init__(self, metrics: DetectMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []  # families are built at collect time

    def collect(self) -> Iterator[Metric]:
        yield from self._rules()
        yield self._latency()
        if self.m.spark is not None:
            yield from stream_progress(self.m.spark)

    def _rules(self) -> Iterator[Metric]:
        n = self.m.rule_series
        rules = list(self.m.rules.items())
        costly = sorted(rules, key=lambda kv: kv[1].seconds, reverse=True)[:n]
        seconds = CounterMetricFamily(
            "sigstream_rule_eval_seconds",
            f"Seconds the rule's evaluation took, summed over tasks (the {n} costliest rules).",
            labels=["rule_id"],
        )
        evaluated = CounterMetricFamily(
            "sigstream_rule_evaluated_events",
            f"Events the rule evaluated (its logsource's events; the {n} costliest rules).",
            labels=["rule_id"],
        )
        for rule_id, t in costly:
            seconds.add_metric([rule_id], t.seconds)
            evaluated.add_metric([rule_id], t.events)
        matching = sorted(
            ((k, t) for k, t in rules if t.matches), key=lambda kv: kv[1].matches, reverse=True
        )[:n]
        matches = CounterMetricFamily(
            "sigstream_rule_matches",
            f"Events the rule matched (the {n} rules with the most matches).",
            labels=["rule_id"],
        )
        for rule_id, t in matching:
            matches.add_metric([rule_id], t.matches)
        errors = CounterMetricFamily(
            "sigstream_rule_errors",
            "Run-time failures of the rule (raised or over budget: quarantined), every "
            "rule that had one.",
            labels=["rule_id"],
        )
        for rule_id, t in rules:
            if t.errors:
                errors.add_metric([rule_id], t.errors)
        yield from (seconds, evaluated, matches, errors)

    def _latency(self) -> Metric:
        cumulative, buckets = 0, []
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.m.latency_buckets, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family = HistogramMetricFamily(
            "sigstream_detect_event_to_finding_seconds",
            "Seconds from the gateway receiving an event (received_time) to its finding "
            "being written to the findings index.",
        )
        family.add_metric([], buckets, sum_value=self.m.latency_sum)
        return family


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    """A source's offsets ({topic: {partition: offset}}), given as JSON text or parsed."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def kafka_lag(source: Any) -> dict[str, int]:
    """Records behind per topic of one Kafka source's progress: the latest offsets Kafka
    had when the batch was planned minus the offsets the batch processed up to."""
    end, latest = _offsets(source.get("endOffset")), _offsets(source.get("latestOffset"))
    lag: dict[str, int] = {}
    for topic, partitions in latest.items():
        if not isinstance(partitions, dict):
            continue
        done = end.get(topic, {})
        lag[topic] = sum(
            max(int(offset) - int(done.get(p, 0)), 0)
            for p, offset in partitions.items()
            if isinstance(offset, int)
        )
    return lag


def stream_progress(spark: Any) -> Iterator[Metric]:
    """Gauges from the last progress of every active streaming query on this driver."""
    lag = GaugeMetricFamily(
        "sigstream_stream_kafka_lag_records",
        "Records of the topic not yet processed by the query: Kafka's latest offsets when "
        "its last micro-batch was planned minus the offsets it processed up to.",
        labels=["query", "topic"],
    )
    duration = GaugeMetricFamily(
        "sigstream_stream_batch_duration_seconds",
        "Duration of the query's last micro-batch (Spark's triggerExecution).",
        labels=["query"],
    )
    rows = GaugeMetricFamily(
        "sigstream_stream_processed_rows_per_second",
        "Rows per second the query's last micro-batch processed.",
        labels=["query"],
    )
    active = GaugeMetricFamily(
        "sigstream_stream_query_active", "1 for each active streaming query.", labels=["query"]
    )
    try:
        queries = list(spark.streams.active)
    except Exception:  # the session is stopping: no progress to report
        queries = []
    for query in queries:
        try:
            name = query.name or str(query.id)
            progress = query.lastProgress
        except Exception:
            continue
        active.add_metric([name], 1)
        if not progress:
            continue
        duration.add_metric([name], progress.get("durationMs", {}).get("triggerExecution", 0) / 1e3)
        rows.add_metric([name], float(progress.get("processedRowsPerSecond") or 0.0))
        for source in progress.get("sources", []):
            for topic, behind in kafka_lag(source).items():
                lag.add_metric([name, topic], behind)
    yield from (lag, duration, rows, active)
