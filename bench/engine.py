"""Detection-engine throughput: Sigstream's Spark engine vs rsigma, same events, same rules.

What is timed is the engine, not Kafka: the amplified OTRF events (``bench.dataset``) are
read from Parquet (parsed by the job's own parser), a sample is cached in Spark, and then
``detections.engine.apply.detect(events, plan).groupBy("rule_index").count()`` runs over it.
Per rule-set size (a seeded random sample of the planned SigmaHQ Windows rules) it reports:

* compile + plan time (``detections.compiler.plan.load_plan`` over that set's rule files),
* engine compile time (``detections.engine.apply.compile_matcher``: rule programs, literal
  indexes; each Spark Python worker does the same once per plan),
* the first run (includes Spark's analysis, optimisation and code generation) on a small
  warm-up sample (``--warm-events``), then steady-state runs: the same warm-up sample
  again, and a larger sample (``--steady-events``); events/s is the larger run's events /
  wall time,
* the per-query fixed cost (what each micro-batch pays whatever its size) and the marginal
  event rate, from the two steady runs (t = fixed + n / marginal),
* peak RSS of the Spark driver JVM and of the Python process.

Each rule set runs in its own child process (its own JVM), so first-run and peak-memory
numbers of one set do not leak into the next. By default the steady run evaluates every
event of the amplified set (read from Parquet, not cached); ``--steady-events N`` times a
uniform, seeded sample instead (cached in memory). rsigma evaluates the very same events.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import rsigma
from bench.common import (
    CACHE_DIR,
    machine_info,
    mb,
    print_kv,
    print_table,
    proc_status_kb,
    progress,
    python_peak_mb,
    save_result,
)
from bench.dataset import DEFAULT_SEED, SAMPLE_SCALE, ensure
from common.settings import Settings, get_settings

#: Sample fractions the benchmark draws from (few distinct ones, so samples are reused).
STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process and all its descendants (Spark's Python
    workers are children of the JVM), from /proc/<pid>/stat."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    wanted, total, frontier = {pid}, 0.0, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in wanted:
                wanted.add(child)
                frontier.append(child)
    total = sum(stats[p][1] for p in wanted if p in stats)
    return total / os.sysconf("SC_CLK_TCK")


def sample_fraction(n: int, events: int) -> float:
    """The smallest sampling step that gives at least ``events`` of ``n`` (or all)."""
    return next((s for s in STEPS if s * n >= events), 1.0)


# --- one rule set, in a child process ---------------------------------------------------


def run_rule_set(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one rule set; runs in its own process (see the module docstring)."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    from detections.compiler.plan import load_plan
    from detections.engine.apply import compile_matcher, detect
    from detections.stream.spark_session import build_session

    label = args.label
    started = time.monotonic()
    plan = load_plan([Path(args.rules_dir)])
    compile_s = time.monotonic() - started
    progress(f"[{label}] compiled and planned {len(plan.rules)} rules in {compile_s:.1f}s")

    settings = Settings(spark_driver_memory=args.driver_memory)
    spark = build_session(
        settings,
        app_name=f"sigstream-bench-engine-{label}",
        extra_conf={"spark.ui.showConsoleProgress": "false"},
    )
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
    # As many partitions as cores, like a micro-batch read from the 2-partition topic: each
    # task pays a fixed cost (deserialising and initialising every rule's expression).
    partitions = args.partitions or spark.sparkContext.defaultParallelism

    started = time.monotonic()
    matcher = compile_matcher(plan)
    build_s = time.monotonic() - started
    progress(
        f"[{label}] compiled the engine's rule programs in {build_s:.1f}s "
        f"({len(matcher.errors)} refused)"
    )

    source = spark.read.parquet(args.parquet)

    def sample(fraction: float) -> tuple[DataFrame, int]:
        threshold = rsigma.sample_threshold(fraction)
        df = source
        if threshold < SAMPLE_SCALE:
            bucket = F.crc32(F.col("event_id").cast("binary")) % SAMPLE_SCALE
            df = df.where(bucket < threshold)
        if fraction >= 1.0:  # the whole set: read it as it is, too big to cache
            return df, df.count()
        df = df.repartition(partitions).cache()
        return df, df.count()

    def timed_run(events: DataFrame) -> tuple[float, float, Counter[str]]:
        cpu0, t0 = _cpu_seconds(jvm_pid), time.monotonic()
        rows = detect(events, plan, explain=args.explain).groupBy("rule_index").count().collect()
        seconds, cpu = time.monotonic() - t0, _cpu_seconds(jvm_pid) - cpu0
        counts = Counter({str(plan.rules[r["rule_index"]].rule.id): int(r["count"]) for r in rows})
        return seconds, cpu, counts

    warm_df, warm_n = sample(args.warm_fraction)
    progress(f"[{label}] first run on {warm_n:,} events (analysis + codegen + evaluation) …")
    first_s, _, _ = timed_run(warm_df)
    progress(f"[{label}] first run {first_s:.1f}s; steady run on the same events …")
    warm_s, _, _ = timed_run(warm_df)
    warm_rate = warm_n / warm_s

    fraction = 1.0 if args.full else args.steady_fraction
    if fraction == args.warm_fraction:
        main_df, main_n = warm_df, warm_n
    else:
        warm_df.unpersist()
        main_df, main_n = sample(fraction)
    progress(
        f"[{label}] {warm_rate:,.0f} events/s on the warm-up sample; "
        f"steady run on {main_n:,} events ({fraction:.1%} of {args.events:,}) …"
    )
    main_s, main_cpu, counts = timed_run(main_df)
    progress(f"[{label}] {main_n / main_s:,.0f} events/s, {sum(counts.values()):,} matches")

    marginal_rate = overhead = None
    if main_n > warm_n and main_s > warm_s:
        per_event = (main_s - warm_s) / (main_n - warm_n)
        marginal_rate = 1 / per_event
        overhead = max(0.0, warm_s - warm_n * per_event)
    result = {
        "label": label,
        "rules": len(plan.rules),
        "rejected": len(plan.rejections),
        "quarantined": len(matcher.errors),
        "compile_plan_s": compile_s,
        "build_s": build_s,
        "warm_events": warm_n,
        "first_run_s": first_s,
        "warm_steady_s": warm_s,
        "events": main_n,
        "fraction": fraction,
        "threshold": rsigma.sample_threshold(fraction),
        "steady_s": main_s,
        "events_per_s": main_n / main_s,
        "cpu_s": main_cpu,
        "marginal_events_per_s": marginal_rate,
        "per_query_overhead_s": overhead,
        "matches": sum(counts.values()),
        "per_rule": dict(counts),
        "titles": {str(p.rule.id): p.rule.title for p in plan.rules},
        "jvm_peak_kb": proc_status_kb(jvm_pid, "VmHWM"),
        "python_peak_mb": python_peak_mb(),
        "partitions": partitions,
        "explain": bool(args.explain),
    }
    spark.stop()
    return result


# --- the whole benchmark, in the parent process -----------------------------------------


def select_rule_sets(
    settings: Settings, sizes: list[str], seed: int
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Plan the full SigmaHQ Windows set once; write one folder of rule files per size."""
    from detections.compiler.plan import load_plan
    from detections.content.defaults import default_rule_paths

    paths = default_rule_paths(settings)
    progress(f"compiling the full rule corpus ({', '.join(str(p) for p in paths)}) …")
    started = time.monotonic()
    plan = load_plan(paths)
    seconds = time.monotonic() - started
    info = {
        "corpus": [str(p) for p in paths],
        "planned": len(plan.rules),
        "rejected": len(plan.rejections),
        "seconds": seconds,
    }
    progress(f"{len(plan.rules)} rules planned, {len(plan.rejections)} rejected, in {seconds:.1f}s")
    files = sorted({Path(p.rule.path) for p in plan.rules if p.rule.path})
    root = Path(os.path.commonpath([str(p) for p in paths]))
    folders: dict[str, Path] = {}
    for size in sizes:
        if size == "all":
            chosen = files
        else:
            count = min(int(size), len(files))
            chosen = sorted(random.Random(seed).sample(files, count))
        folders[size] = rsigma.write_rule_folder(chosen, root, CACHE_DIR / f"rules-{size}-s{seed}")
    return folders, info


def run_child(args: argparse.Namespace, size: str, folder: Path, parquet: Path) -> dict[str, Any]:
    out = CACHE_DIR / f"engine-{size}.json"
    out.unlink(missing_ok=True)
    cmd = (
        [
            sys.executable,
            "-m",
            "bench.engine",
            "--one-set",
            str(folder),
            "--label",
            size,
            "--json-out",
            str(out),
            "--parquet",
            str(parquet),
            "--events",
            str(args.events),
            "--warm-fraction",
            str(args.warm_fraction),
            "--steady-fraction",
            str(args.steady_fraction),
            "--driver-memory",
            args.driver_memory,
            "--partitions",
            str(args.partitions or 0),
        ]
        + (["--full"] if args.full else [])
        + (["--explain"] if args.explain else [])
    )
    subprocess.run(cmd, check=True)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def compare(result: dict[str, Any], run: rsigma.RsigmaRun, limit: int = 12) -> list[list[Any]]:
    """Rules whose match counts differ between the engines, largest difference first."""
    ours: dict[str, int] = result["per_rule"]
    rows = []
    for rule_id in set(ours) | set(run.per_rule):
        a, b = ours.get(rule_id, 0), run.per_rule.get(rule_id, 0)
        if a != b:
            rows.append([rule_id, result["titles"].get(rule_id, "?")[:60], a, b])
    rows.sort(key=lambda r: (-abs(r[2] - r[3]), r[0]))
    return rows[:limit] if limit else rows


def _f(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description="Throughput of the Sigstream detection engine (and rsigma) over amplified "
        "OTRF telemetry, for 100, 1,000 and all planned SigmaHQ Windows rules.",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="size of the amplified event set (default 2,000,000; --quick 50,000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50k events, smaller samples: a smoke run of the whole harness (~6 min)",
    )
    parser.add_argument(
        "--sizes",
        default="100,1000,all",
        help="rule-set sizes, comma separated ('all' = every planned rule)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="rule and event sampling")
    parser.add_argument(
        "--steady-events",
        type=int,
        default=None,
        help="time a sample of this many events instead of the whole set (--quick: 25,000)",
    )
    parser.add_argument(
        "--warm-events",
        type=int,
        default=10_000,
        help="events in the first-run / warm-up sample (default 10,000)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="evaluate every event of the set (the default unless --quick or "
        "--steady-events; about 2 min per rule set for 2M events on a 2-core box) "
        "for 2M events on a 2-core box)",
    )
    parser.add_argument("--driver-memory", default="6g", help="Spark driver memory (default 6g)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="partitions of the cached events (default: one per core, as the job's batches)",
    )
    parser.add_argument("--no-rsigma", action="store_true", help="skip the rsigma comparison")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also compute why each match matched (a finding's sigstream.match, as JSON), "
        "as the detect job does: measures its cost",
    )
    # internal: one rule set in a child process
    parser.add_argument("--one-set", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--warm-fraction", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--steady-fraction", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one_set:
        args.rules_dir = args.one_set
        result = run_rule_set(args)
        Path(args.json_out).write_text(json.dumps(result))
        return

    args.events = args.events or (50_000 if args.quick else 2_000_000)
    args.full = args.full or not (args.quick or args.steady_events)
    args.steady_events = args.steady_events or (25_000 if args.quick else 100_000)
    args.warm_fraction = sample_fraction(args.events, args.warm_events)
    args.steady_fraction = max(args.warm_fraction, sample_fraction(args.events, args.steady_events))
    settings = get_settings()
    info = machine_info(settings)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]

    paths = ensure(args.events, args.seed)
    folders, corpus = select_rule_sets(settings, sizes, args.seed)
    exe = None if args.no_rsigma else rsigma.binary()

    results: list[dict[str, Any]] = []
    runs: dict[str, rsigma.RsigmaRun | None] = {}
    for size in sizes:
        progress(f"=== rule set '{size}' ===")
        result = run_child(args, size, folders[size], paths["parquet"])
        results.append(result)
        runs[size] = None
        if exe:
            ls = [Path(f) for f in folders[size].rglob("*.yml")]
            categories, services = _logsources(ls)
            pipeline = rsigma.routing_pipeline(
                categories, services, CACHE_DIR / f"rsigma-routing-{size}.yml"
            )
            events, n = rsigma.sample_file(paths["rsigma"], result["threshold"])
            if n != result["events"]:
                raise RuntimeError(f"rsigma sample has {n} events, Spark's {result['events']}")
            runs[size] = rsigma.run(exe, folders[size], pipeline, events, n)
            run = runs[size]
            assert run is not None
            progress(
                f"rsigma: {n / run.eval_seconds:,.0f} events/s, {run.matches:,} matches "
                f"(Sigstream {result['matches']:,})"
            )

    print_kv("Machine", info)
    print(
        f"\nEvents: {args.events:,} amplified from ../shared/data/otrf "
        f"(seed {args.seed}); rules: {corpus['planned']} planned of the SigmaHQ Windows corpus "
        f"({corpus['rejected']} rejected at compile/plan, {corpus['seconds']:.1f}s for all)."
    )
    print("\nSigstream engine (Spark local mode; times in seconds)\n")
    print_table(
        [
            "rules",
            "loaded",
            "compile+plan",
            "engine compile",
            "first run (events)",
            "steady events",
            "steady s",
            "events/s",
            "marginal ev/s",
            "per-query s",
            "events/CPU-s",
            "JVM peak",
            "Python peak",
        ],
        [
            [
                r["label"],
                r["rules"],
                _f(r["compile_plan_s"]),
                _f(r["build_s"]),
                f"{r['first_run_s']:.1f} ({r['warm_events']:,})",
                f"{r['events']:,}",
                _f(r["steady_s"]),
                _f(r["events_per_s"], 0),
                _f(r["marginal_events_per_s"], 0),
                _f(r["per_query_overhead_s"]),
                _f(r["events"] / r["cpu_s"], 0) if r["cpu_s"] else "n/a",
                mb(r["jvm_peak_kb"]),
                f"{r['python_peak_mb']:,.0f} MB",
            ]
            for r in results
        ],
    )
    print("\nSigstream vs rsigma (same events, same rules)\n")
    if not exe:
        print(
            "rsigma: not installed (cargo install rsigma, or set RSIGMA=/path/to/rsigma); "
            "the comparison columns are empty."
        )
    rows = []
    for r in results:
        run = runs.get(r["label"])
        if run is None:
            rows.append([r["label"], f"{r['events']:,}", _f(r["events_per_s"], 0)] + ["-"] * 6)
            continue
        ours = r["events_per_s"]
        theirs = run.events / run.eval_seconds
        rows.append(
            [
                r["label"],
                f"{r['events']:,}",
                _f(ours, 0),
                _f(theirs, 0),
                f"{ours / theirs:.3f}",
                _f(run.load_seconds),
                f"{r['matches']:,}",
                f"{run.matches:,}",
                "yes" if r["per_rule"] == dict(run.per_rule) else "NO",
            ]
        )
    print_table(
        [
            "rules",
            "events",
            "Sigstream ev/s",
            "rsigma ev/s",
            "Sigstream/rsigma",
            "rsigma load s",
            "Sigstream matches",
            "rsigma matches",
            "agree per rule",
        ],
        rows,
    )
    if any(runs.values()):
        print(
            "\nrsigma ev/s excludes its rule load (timed on an empty input); it runs on one "
            "core, Sigstream on local[2]. Per CPU-second: "
            + "; ".join(
                f"{r['label']}: Sigstream {r['events'] / r['cpu_s']:,.0f}, "
                f"rsigma {run.events / max(run.cpu_seconds - run.load_seconds, 1e-9):,.0f}"
                for r in results
                if (run := runs.get(r["label"])) is not None and r["cpu_s"]
            )
        )
    for r in results:
        run = runs.get(r["label"])
        if run is None:
            continue
        diffs = compare(r, run, limit=0)
        if diffs:
            print(f"\nRules whose match counts differ ({r['label']} rules; {len(diffs)} rules):\n")
            print_table(["rule id", "title", "Sigstream", "rsigma"], diffs[:15])
    path = save_result(
        "engine",
        {
            "args": {k: v for k, v in vars(args).items() if not k.startswith("one_")},
            "machine": info,
            "corpus": corpus,
            "results": [
                {k: v for k, v in r.items() if k not in ("per_rule", "titles")} for r in results
            ],
            "rsigma": {
                size: None
                if run is None
                else {
                    "events": run.events,
                    "seconds": run.seconds,
                    "load_seconds": run.load_seconds,
                    "cpu_seconds": run.cpu_seconds,
                    "peak_rss_kb": run.peak_rss_kb,
                    "matches": run.matches,
                    "rules_loaded": run.rules_loaded,
                }
                for size, run in runs.items()
            },
        },
    )
    print(f"\n(results saved to {path})")


def _logsources(files: list[Path]) -> tuple[set[str], set[str]]:
    """Categories and services named by the rules in ``files`` (for rsigma's pipeline)."""
    import yaml

    categories: set[str] = set()
    services: set[str] = set()
    for path in files:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            logsource = (doc or {}).get("logsource") or {}
            if logsource.get("category"):
                categories.add(str(logsource["category"]).lower())
            if logsource.get("service"):
                services.add(str(logsource["service"]).lower())
    return categories, services


if __name__ == "__main__":
    main()
