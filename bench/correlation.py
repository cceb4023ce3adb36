"""Correlation stage benchmark: throughput and state size of the correlation query.

Two phases, each on its own fresh topic, index and checkpoint, run until Kafka is drained
(``availableNow``): real OTRF attack recordings (``../shared/data/otrf``), and synthetic
load built to exercise every own correlation rule over many hosts (failed-logon bursts,
recon command bursts, Office -> PowerShell -> network sequences, plus noise). Reports
events/s and, from each micro-batch's ``stateOperators`` progress, the state the
correlation operator keeps: rows (keys with pending matches) and bytes.

    python -m bench.correlation [--hosts 2000] [--events 200000] [--no-otrf]
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE_DIR,
    machine_info,
    print_kv,
    print_table,
    progress,
    rate,
    save_result,
)
from common.settings import Settings, get_settings

OTRF_FOLDERS = ("discovery", "credential_access", "execution", "lateral_movement")
RECON = [
    ("whoami.exe", "whoami /all"),
    ("net.exe", "net user"),
    ("net.exe", 'net group "domain admins" /domain'),
    ("ipconfig.exe", "ipconfig /all"),
    ("systeminfo.exe", "systeminfo"),
    ("nltest.exe", "nltest /dclist:"),
    ("tasklist.exe", "tasklist /v"),
]
PS = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
WORD = "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"


def synthetic_events(hosts: int, total: int, span_s: int, seed: int) -> list[dict[str, Any]]:
    """``total`` schema events over ``hosts`` hosts and ``span_s`` seconds, in time order
    with a little jitter: per host, a mix of scenarios that fire and that almost fire."""
    rnd = random.Random(seed)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    n = 0

    def add(host: str, t: float, kind: str, **fields: Any) -> None:
        nonlocal n
        n += 1
        logsource: dict[str, Any] = {"product": "windows", "category": kind}
        if kind == "windows_event":
            logsource = {"product": "windows", "service": "security"}
        events.append(
            {
                "event_type": kind,
                "sensor_id": f"sensor-{host}",
                "host": host,
                "event_id": f"bench-{seed}-{n}",
                "event_time": (start + timedelta(seconds=t)).isoformat(),
                "logsource": logsource,
                **fields,
            }
        )

    while len(events) < total:
        host = f"H{rnd.randrange(hosts):05d}"
        t = rnd.uniform(0, span_s)
        scenario = rnd.random()
        if scenario < 0.15:  # failed logons: 3..7 within a few minutes (fires from 5)
            for i in range(rnd.randint(3, 7)):
                add(host, t + i * rnd.uniform(5, 60), "windows_event", EventID=4625)
        elif scenario < 0.30:  # recon: 2..6 commands, distinct or repeated
            for i in range(rnd.randint(2, 6)):
                image, cmd = rnd.choice(RECON)
                add(
                    host,
                    t + i * rnd.uniform(2, 40),
                    "process_creation",
                    Image=f"C:\\Windows\\System32\\{image}",
                    CommandLine=cmd,
                )
        elif scenario < 0.35:  # office -> powershell -> network, sometimes out of order
            gap = rnd.uniform(1, 90) * (1 if rnd.random() < 0.7 else -1)
            add(
                host,
                t,
                "process_creation",
                Image=PS,
                ParentImage=WORD,
                CommandLine="powershell -nop",
            )
            add(
                host,
                t + gap,
                "network_connection",
                Image=PS,
                Initiated="true",
                DestinationIp="203.0.113.9",
                DestinationPort="443",
            )
        else:  # noise no rule matches
            add(
                host, t, "process_creation", Image="C:\\Windows\\notepad.exe", CommandLine="notepad"
            )
    events = events[:total]
    events.sort(key=lambda e: e["event_time"])
    # a little disorder within seconds, as real sensors deliver
    for i in range(0, len(events) - 1, 7):
        events[i], events[i + 1] = events[i + 1], events[i]
    return events


def run_phase(
    spark: Any,
    settings: Settings,
    name: str,
    load: Any,
    content: Any,
    lateness_s: int,
    max_offsets: int,
) -> dict[str, Any]:
    """Send events with ``load(producer)``, run the detection pass over them (it publishes
    the base rules' matches), then drain the matches with the correlation stage; return
    the stage's throughput and state numbers from its progress."""
    from detections.correlation.query import (
        CorrelationConfig,
        CorrelationTotals,
        feeding,
        start_correlations,
    )
    from detections.sinks.elasticsearch import connect, drop_findings_index
    from detections.stream.job import JobConfig, JobTotals
    from detections.stream.job import start as start_detect
    from infra.kafka import ensure_topics
    from ingest.producer import EventProducer

    run_id = uuid.uuid4().hex[:8]
    topic = f"sigstream-bench-corr-{name}-{run_id}"
    index = f"sigstream-bench-corr-{name}-{run_id}"
    ensure_topics(settings, [topic, f"{topic}.dlq"], settings.topic_partitions)
    progress(f"[{name}] sending events to {topic} …")
    with EventProducer(settings.kafka_bootstrap, topic, f"{topic}.dlq") as producer:
        sent = load(producer)
    progress(f"[{name}] {sent:,} events sent; draining with the correlation query …")
    cfg = JobConfig(
        kafka_bootstrap=settings.kafka_bootstrap,
        events_topic=topic,
        dlq_topic=f"{topic}.dlq",
        matches_topic=f"{topic}.matches",
        es_hosts=tuple(settings.es_hosts),
        findings_index=index,
        checkpoint_dir=CACHE_DIR / f"corr-checkpoint-{run_id}",
        available_now=True,
        max_offsets_per_trigger=max_offsets,
    )
    started = time.monotonic()
    detect = start_detect(spark, content.plan, feeding(cfg, content), JobTotals())
    detect.awaitTermination()
    if detect.exception() is not None:
        raise SystemExit(f"detection pass failed: {detect.exception()}")
    progress(
        f"[{name}] detection pass (base rules only) done in {time.monotonic() - started:.1f} s;"
        " draining the matches with the correlation stage …"
    )
    ccfg = CorrelationConfig(lateness_s=lateness_s)
    totals = CorrelationTotals()
    started = time.monotonic()
    query = start_correlations(spark, cfg, content, ccfg, totals)
    assert query is not None
    query.awaitTermination()
    seconds = time.monotonic() - started
    if query.exception() is not None:
        raise SystemExit(f"correlation query failed: {query.exception()}")
    batches = [json.loads(p.json) for p in query.recentProgress]
    rows = []
    for p in batches:
        ops = p.get("stateOperators") or [{}]
        op = ops[0]
        rows.append(
            {
                "batch": p["batchId"],
                "input": p.get("numInputRows", 0),
                "ms": p.get("batchDuration", 0),
                "state_rows": op.get("numRowsTotal", 0),
                "state_bytes": op.get("memoryUsedBytes", 0),
                "updated": op.get("numRowsUpdated", 0),
                "removed": op.get("numRowsRemoved", 0),
                "watermark": (p.get("eventTime") or {}).get("watermark", ""),
            }
        )
    events = sum(r["input"] for r in rows)
    es = connect(settings.es_hosts)
    try:
        drop_findings_index(es, index)
        es.options(ignore_status=404).indices.delete(index=ccfg.late(cfg))
    finally:
        es.close()
    return {
        "phase": name,
        "events": events,
        "sent": sent,
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds, 1) if seconds else None,
        "firings": totals.firings,
        "late": totals.late,
        "max_state_rows": max((r["state_rows"] for r in rows), default=0),
        "max_state_bytes": max((r["state_bytes"] for r in rows), default=0),
        "final_state_rows": rows[-1]["state_rows"] if rows else 0,
        "batches": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.correlation",
        description="Correlation query throughput and state size (rows/bytes from the "
        "query's stateOperators progress) on OTRF recordings and synthetic multi-host load.",
    )
    parser.add_argument("--hosts", type=int, default=2_000, help="synthetic hosts (group keys)")
    parser.add_argument("--events", type=int, default=200_000, help="synthetic events")
    parser.add_argument("--span", type=int, default=3_600, help="synthetic event-time span, s")
    parser.add_argument("--lateness", type=int, default=60, help="allowed lateness, s")
    parser.add_argument(
        "--max-offsets", type=int, default=50_000, help="Kafka records per micro-batch"
    )
    parser.add_argument("--no-otrf", action="store_true", help="skip the OTRF phase")
    parser.add_argument("--rules", type=Path, action="append", help="extra correlation rules")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--driver-memory", default="2g", help="Spark driver memory")
    args = parser.parse_args(argv)

    from bench.ingest import ensure_services
    from detections.content.defaults import OWN_CORRELATIONS
    from detections.correlation.query import load_content
    from detections.stream.spark_session import build_session
    from ingest.replay import replay
    from schemas.events import parse_event

    settings = get_settings()
    info = machine_info(settings)
    ensure_services(settings, ["kafka", "elasticsearch"])
    content = load_content([OWN_CORRELATIONS, *(args.rules or [])])
    progress(f"{len(content.specs)} correlations over {len(content.plan.rules)} base rules")
    spark = build_session(
        settings.model_copy(update={"spark_driver_memory": args.driver_memory}),
        app_name="sigstream-bench-correlation",
        extra_conf={"spark.ui.showConsoleProgress": "false"},
    )
    phases = []
    try:
        otrf = [settings.shared_data / "otrf" / f for f in OTRF_FOLDERS]
        otrf = [p for p in otrf if p.is_dir()]
        if otrf and not args.no_otrf:

            def send_otrf(producer: Any) -> int:
                return replay(otrf, producer).sent

            phases.append(
                run_phase(
                    spark, settings, "otrf", send_otrf, content, args.lateness, args.max_offsets
                )
            )
        elif not args.no_otrf:
            progress(f"OTRF corpus not found under {settings.shared_data / 'otrf'}: phase skipped")
        progress(f"generating {args.events:,} synthetic events over {args.hosts:,} hosts …")
        events = synthetic_events(args.hosts, args.events, args.span, args.seed)

        def send_synthetic(producer: Any) -> int:
            for e in events:
                producer.send_event(parse_event(e))
            return len(events)

        phases.append(
            run_phase(
                spark,
                settings,
                "synthetic",
                send_synthetic,
                content,
                args.lateness,
                args.max_offsets,
            )
        )
    finally:
        spark.stop()

    print_kv("machine", info)
    print("\nper phase (the whole query: Kafka read, parse, base rules, state, findings write)")
    print_table(
        [
            "phase",
            "events",
            "seconds",
            "events/s",
            "firings",
            "late",
            "max state rows",
            "max state KiB",
            "state rows at end",
        ],
        [
            [
                p["phase"],
                f"{p['events']:,}",
                p["seconds"],
                rate(p["events"], p["seconds"]),
                p["firings"],
                p["late"],
                f"{p['max_state_rows']:,}",
                f"{p['max_state_bytes'] / 1024:,.0f}",
                f"{p['final_state_rows']:,}",
            ]
            for p in phases
        ],
    )
    for p in phases:
        print(f"\n{p['phase']}: micro-batches")
        print_table(
            [
                "batch",
                "input rows",
                "ms",
                "state rows",
                "state KiB",
                "updated",
                "removed",
                "watermark",
            ],
            [
                [
                    b["batch"],
                    f"{b['input']:,}",
                    f"{b['ms']:,}",
                    f"{b['state_rows']:,}",
                    f"{b['state_bytes'] / 1024:,.0f}",
                    b["updated"],
                    b["removed"],
                    b["watermark"],
                ]
                for b in p["batches"]
            ],
        )
    path = save_result("correlation", {"machine": info, "args": vars(args), "phases": phases})
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
