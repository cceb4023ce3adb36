"""Sensor-health benchmark: a synthetic fleet (10,000 sensors by default) summarized per
round as the detect tasks do (``detections.health.feed``; since issue 18 the health query
reads per-sensor summaries, so "records" below are summaries, one per sensor and round),
through Kafka and the real sensor-health streaming query; reports records/s processed,
state rows and bytes
(the query's ``stateOperators`` progress), and health findings by kind against what the
fleet was told to do.

Two phases: a backlog of ``--backlog-rounds`` rounds sent at once (throughput: the query
drains it in large batches), then paced rounds of heartbeats only (``--round-s`` apart,
the fleet's real-time life, so healthy sensors stay audible) until every silent,
dropping, restarting and skewed sensor has its finding or ``--max-wait`` passes. Run
with ``make bench-fleet`` or ``python -m bench.fleet --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from bench.common import CACHE_DIR, machine_info, print_kv, print_table, progress, save_result
from bench.ingest import delete_topics, ensure_services
from common.settings import get_settings


def found_by_kind(es: Any, index: str, tenant: str) -> dict[str, set[str]]:
    """Health finding kind -> sensors with such a finding (match documents)."""
    from detections.health.finding_docs import HEALTH_RULES

    kind_of = {r.id: k for k, r in HEALTH_RULES.items()}
    es.indices.refresh(index=index)
    found: dict[str, set[str]] = defaultdict(set)
    resp = es.search(
        index=index,
        size=10_000,
        query={"term": {"sigstream.tenant_id": tenant}},
        source=["rule.id", "sigstream.sensor_id"],
    )
    for hit in resp["hits"]["hits"]:
        src = hit["_source"]
        found[kind_of.get(src["rule"]["id"], "other")].add(src["sigstream"]["sensor_id"])
    return dict(found)


def state_numbers(progress_: dict[str, Any]) -> dict[str, Any]:
    ops = progress_.get("stateOperators") or [{}]
    op = ops[0]
    custom = op.get("customMetrics") or {}
    return {
        "rows": op.get("numRowsTotal"),
        "memory_bytes": op.get("memoryUsedBytes"),
        "rocksdb_sst_bytes": custom.get("rocksdbTotalSizeOfL0Files")
        or custom.get("rocksdbSstFileSize"),
        "updated_rows": op.get("numRowsUpdated"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description="Sensor health at fleet scale: throughput, state size, findings by kind.",
    )
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--events-per-round", type=int, default=2)
    parser.add_argument("--backlog-rounds", type=int, default=6, help="rounds sent at once")
    parser.add_argument("--round-s", type=float, default=5.0, help="seconds between live rounds")
    parser.add_argument("--heartbeat-every", type=int, default=2, help="rounds between heartbeats")
    parser.add_argument("--trigger", type=float, default=2.0, help="micro-batch trigger, s")
    parser.add_argument("--gap-grace", type=float, default=10.0, help="gap grace, s")
    parser.add_argument("--max-wait", type=float, default=300.0, help="give up after s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--driver-memory", default="3g")
    parser.add_argument("--quick", action="store_true", help="1,000 sensors, short waits")
    args = parser.parse_args(argv)
    if args.quick:
        args.sensors, args.max_wait = 1_000, 180.0

    from detections.health.feed import SummaryFeed
    from detections.health.query import HealthBatch, checkpoint_for, start
    from detections.health.state import HealthConfig
    from detections.sinks.elasticsearch import connect, drop_findings_index
    from detections.stream.job import JobConfig
    from detections.stream.spark_session import build_session
    from infra.kafka import ensure_topics
    from ingest.fleet import Fleet, FleetSpec, run_fleet

    settings = get_settings()
    info = machine_info(settings)
    ensure_services(settings, ["kafka", "elasticsearch"])
    run_id = uuid.uuid4().hex[:8]
    topic = f"sigstream-bench-fleet-{run_id}"
    index = f"sigstream-bench-fleet-{run_id}"
    sensors_index = f"{index}-sensors"
    checkpoint = CACHE_DIR / f"fleet-checkpoint-{run_id}"
    ensure_topics(
        settings, [topic, f"{topic}.dlq", f"{topic}.summaries"], settings.topic_partitions
    )
    spec = FleetSpec(
        sensors=args.sensors,
        events_per_round=args.events_per_round,
        heartbeat_every=args.heartbeat_every,
        round_s=args.round_s,
        silent_after=args.backlog_rounds,  # silent sensors stop when the live phase starts
        incident_round=args.backlog_rounds // 2,
        tenant_id=f"bench-{run_id}",
        seed=args.seed,
    )
    fleet = Fleet.build(spec)
    expected = fleet.expected()
    health = HealthConfig(gap_grace_s=args.gap_grace, skew_threshold_s=300)
    cfg = JobConfig(
        kafka_bootstrap=settings.kafka_bootstrap,
        events_topic=topic,
        dlq_topic=f"{topic}.dlq",
        summaries_topic=f"{topic}.summaries",
        es_hosts=tuple(settings.es_hosts),
        findings_index=index,
        checkpoint_dir=checkpoint,
        trigger_seconds=args.trigger,
    )
    # The health query reads per-sensor summaries (issue 18): the fleet's events are
    # summarized per round, as detect tasks would, and the summaries produced.
    producer = SummaryFeed(settings.kafka_bootstrap, cfg.summaries_topic)
    progress(f"backlog: {args.backlog_rounds} rounds of {args.sensors:,} sensors …")
    t = time.monotonic()
    backlog = run_fleet(
        fleet, producer.send, args.backlog_rounds, paced=False, flush=producer.flush
    )
    progress(f"{backlog:,} records in Kafka in {time.monotonic() - t:.1f}s")

    progress("starting Spark and the sensor-health query …")
    spark = build_session(
        settings.model_copy(update={"spark_driver_memory": args.driver_memory}),
        app_name="sigstream-bench-fleet",
        extra_conf={"spark.ui.showConsoleProgress": "false"},
    )
    es = connect(settings.es_hosts)
    batches: dict[int, dict[str, Any]] = {}
    stop = threading.Event()
    live_sent = [0]
    found: dict[str, set[str]] = {}
    started = time.monotonic()

    def batch_done(b: HealthBatch) -> None:
        progress(
            f"  health batch {b.batch_id}: {b.sensors:,} sensors, state {b.state_seconds:.1f}s, "
            f"writes {b.write_seconds:.1f}s, findings {dict(b.findings)}"
        )

    query = start(spark, cfg, health, sensors_index, on_batch=batch_done)

    # The live phase sends heartbeats only: the backlog measured throughput, the live
    # phase is what makes silence observable (healthy sensors must stay audible).
    fleet.spec = dataclasses.replace(spec, events_per_round=0)

    def live() -> None:
        live_sent[0] = run_fleet(
            fleet,
            producer.send,
            10_000,
            first_round=args.backlog_rounds,
            flush=producer.flush,
            stop=stop.is_set,
        )

    sender = threading.Thread(target=live, daemon=True)
    sender.start()
    try:
        while time.monotonic() - started < args.max_wait:
            if query.exception() is not None:
                raise SystemExit(f"query failed: {query.exception()}")
            for p in query.recentProgress:
                if int(p["batchId"]) not in batches:
                    d = p["durationMs"]
                    progress(
                        f"batch {p['batchId']}: {int(p['numInputRows']):,} records in "
                        f"{d.get('triggerExecution', 0) / 1000:.1f}s (foreachBatch "
                        f"{d.get('addBatch', 0) / 1000:.1f}s)"
                    )
                batches[int(p["batchId"])] = p
            found = found_by_kind(es, index, spec.tenant_id)
            counts = {k: f"{len(found.get(k, ()))}/{len(v)}" for k, v in expected.items()}
            rows = sum(int(b["numInputRows"]) for b in batches.values())
            progress(f"{len(batches)} batches, {rows:,} records processed, findings {counts}")
            if all(found.get(k, set()) >= v for k, v in expected.items()):
                break
            time.sleep(5)
    finally:
        stop.set()
        sender.join(timeout=30)
        for p in query.recentProgress:
            batches[int(p["batchId"])] = p
        query.stop()
        producer.close()
    wall = time.monotonic() - started

    with_input = [b for b in batches.values() if int(b["numInputRows"]) > 0]
    processed = sum(int(b["numInputRows"]) for b in with_input)
    busy = sum(b["durationMs"]["triggerExecution"] for b in with_input) / 1000
    biggest = max(with_input, key=lambda b: int(b["numInputRows"]), default=None)
    last = max(batches.values(), key=lambda b: int(b["batchId"]))
    state = state_numbers(last)
    found = found_by_kind(es, index, spec.tenant_id)

    print_kv("Machine", info)
    print_kv(
        "Fleet",
        {
            "sensors": f"{spec.sensors:,}",
            "misbehaving (each kind)": ", ".join(f"{k} {len(v)}" for k, v in expected.items()),
            "heartbeat interval": f"{spec.heartbeat_interval_s} s (silent after "
            f"{health.silence_multiplier:g}x)",
            "records": f"{backlog:,} backlog + {live_sent[0]:,} live",
        },
    )
    print("\nThroughput (batches with input)")
    print_table(
        ["batches", "records", "busy s", "records/s", "largest batch", "its records/s"],
        [
            [
                len(with_input),
                f"{processed:,}",
                f"{busy:.1f}",
                f"{processed / busy:,.0f}" if busy else "n/a",
                f"{int(biggest['numInputRows']):,}" if biggest else "n/a",
                f"{float(biggest['processedRowsPerSecond']):,.0f}" if biggest else "n/a",
            ]
        ],
    )
    print("\nState (last batch)")
    rows_total = state["rows"] or 0
    sst = state["rocksdb_sst_bytes"] or 0
    print_table(
        [
            "sensors",
            "state rows (buckets)",
            "RocksDB SST bytes",
            "SST bytes/sensor",
            "memory bytes",
        ],
        [
            [
                f"{spec.sensors:,}",
                f"{rows_total:,}",
                f"{sst:,}",
                f"{sst / spec.sensors:,.0f}",
                f"{state['memory_bytes'] or 0:,}",
            ]
        ],
    )
    print("\nHealth findings by kind (sensors)")
    table = []
    for kind, want in expected.items():
        got = found.get(kind, set())
        table.append([kind, len(want), len(got), len(got - want), len(want - got)])
    for kind in sorted(set(found) - set(expected)):
        table.append([kind, 0, len(found[kind]), len(found[kind]), 0])
    print_table(["kind", "expected", "found", "unexpected", "missed"], table)
    print(f"\nwall time with the query running: {wall:.0f}s")
    path = save_result(
        "fleet",
        {
            "machine": info,
            "sensors": spec.sensors,
            "records_processed": processed,
            "busy_s": busy,
            "records_per_s": processed / busy if busy else None,
            "state": state,
            "findings": {k: len(v) for k, v in found.items()},
            "expected": {k: len(v) for k, v in expected.items()},
            "exact": all(found.get(k, set()) == v for k, v in expected.items()),
        },
    )
    progress(f"result saved to {path}")
    drop_findings_index(es, index)
    es.options(ignore_status=404).indices.delete(index=sensors_index)
    es.close()
    delete_topics(settings, [topic, f"{topic}.dlq", f"{topic}.summaries"])
    shutil.rmtree(checkpoint_for(checkpoint), ignore_errors=True)
    spark.stop()


if __name__ == "__main__":
    main()
