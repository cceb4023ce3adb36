"""What the streaming job costs while no events arrive (issue 18: the stateful stages must
not take the detection pass's cores).

``sigstream detect`` (streaming, all default rules, correlations and sensor health on)
runs as a subprocess on an empty topic of its own; after ``--settle`` seconds (start-up,
first batches) the cores its process tree uses are sampled for ``--measure`` seconds.
Variants: ``ticks`` (the default: the correlation stage runs no batch without data, a
clock tick every ``SIGSTREAM_CORRELATION_TICK_S``), ``every-trigger``
(``SIGSTREAM_CORRELATION_TICK_S=0``: Spark's default, a batch on every trigger for a query
with timers) and ``detect`` (``--no-correlations --no-sensor-health``). Each variant also
reports how many micro-batches each query ran while measured (Spark's event log).

    python -m bench.idle [--settle 60] [--measure 60] [--variants ticks,every-trigger,detect]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import print_table, progress, save_result
from bench.throughput import CpuSampler, _epoch, _service_pids, job_env, progress_events
from common.settings import PROJECT_ROOT, Settings, get_settings
from infra.kafka import ensure_topics

VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "ticks": ({}, []),
    "every-trigger": ({"SIGSTREAM_CORRELATION_TICK_S": "0"}, []),
    "detect": ({}, ["--no-correlations", "--no-sensor-health"]),
}


def batches_by_query(eventlog: Path, since: float, until: float) -> dict[str, int]:
    """Micro-batches each streaming query ran between ``since`` and ``until`` (epoch s)."""
    counts: dict[str, int] = {}
    for path in eventlog.glob("*"):
        for p in progress_events(path.read_text(errors="replace").splitlines()):
            if since <= _epoch(p["timestamp"]) <= until:
                counts[p.get("name") or "?"] = counts.get(p.get("name") or "?", 0) + 1
    return counts


def run_variant(settings: Settings, variant: str, work: Path, settle: float, measure: float):  # type: ignore[no-untyped-def]
    extra_env, args = VARIANTS[variant]
    prefix = f"sigstream-bench-idle-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [prefix, f"{prefix}.dlq"], settings.topic_partitions)
    folder = work / variant
    env = {**job_env(settings, prefix, prefix, folder), **extra_env}
    cmd = [
        sys.executable,
        "-c",
        "from sigstream.cli import app; app()",
        "detect",
        "--checkpoint",
        str(folder / "checkpoint" / "detect"),
        *args,
    ]
    progress(
        f"[{variant}] sigstream {' '.join(cmd[3:])} (settle {settle:.0f}s, measure {measure:.0f}s)"
    )
    with (folder / "job.log").open("w") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            time.sleep(settle)
            if proc.poll() is not None:
                raise RuntimeError(f"{variant}: the job exited early, see {folder / 'job.log'}")
            sampler = CpuSampler(proc.pid, _service_pids(settings))
            began = time.time()
            sampler.start()
            time.sleep(measure)
            sampler.stop()
            ended = time.time()
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the job stops its queries
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    job = sum(c for role, c in sampler.cores.items() if role.startswith("job:"))
    batches = batches_by_query(folder / "eventlog", began, ended)
    return {
        "variant": variant,
        "job_cores": job,
        "cores": sampler.cores,
        "machine_busy": sampler.machine_busy,
        "batches": batches,
        "measured_s": ended - began,
        "summary": sampler.summary(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--settle", type=float, default=60.0, help="seconds before measuring")
    parser.add_argument("--measure", type=float, default=60.0, help="seconds measured")
    parser.add_argument(
        "--variants",
        default="ticks,every-trigger,detect",
        help=f"comma-separated of {', '.join(VARIANTS)}",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    work = settings.cache_dir / "bench" / "idle"
    results = []
    for variant in args.variants.split(","):
        result = run_variant(settings, variant.strip(), work, args.settle, args.measure)
        progress(f"[{variant}] job {result['job_cores']:.2f} cores; batches {result['batches']}")
        results.append(result)
    shutil.rmtree(work, ignore_errors=True)
    print(
        "\nThe streaming job with no events arriving "
        "(cores of its process tree, sampled from /proc)\n"
    )
    rows = []
    for r in results:
        batches = ", ".join(f"{k} {v}" for k, v in sorted(r["batches"].items())) or "none"
        rows.append([r["variant"], f"{r['job_cores']:.2f}", f"{r['measured_s']:.0f}", batches])
    print_table(["variant", "job cores", "measured s", "micro-batches while measured"], rows)
    for r in results:
        print(f"  {r['variant']}: {r['summary']}")
    save_result("idle", {"results": results})


if __name__ == "__main__":
    main()
