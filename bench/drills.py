"""Fault drills (issue 8): kill -9 the detection job, restart Kafka, stop Elasticsearch for
60 s, each in the middle of a replay, then count lost and duplicated findings against an
undisturbed run and report the recovery times (docs/fault-drills.md).

    python -m bench.drills [--drill driver-kill|kafka-restart|es-outage]... [--rate 500]
                           [--source DIR] [--json OUT]

Runs on a private Kafka + Elasticsearch (ports 29092/29093 and 29200/29300, data under
.run/drills/) that it starts and stops itself: the shared services are never touched.
Exit status 1 when any drill lost or duplicated a finding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.drills.measure import DrillResult, render_table
from tests.drills.runner import DRILLS, DrillOptions, load_events, run_baseline, run_drill
from tests.drills.stack import running_stack


def run_all(
    drills: list[str], options: DrillOptions, otrf: Path, workdir: Path
) -> list[DrillResult]:
    """Baseline once, then each drill on fresh topics, index and checkpoint."""
    events = load_events(otrf)
    results: list[DrillResult] = []
    with running_stack() as stack:
        baseline = run_baseline(stack, events, workdir, options)
        for drill in drills:
            started = time.monotonic()
            result = run_drill(stack, drill, events, baseline, workdir, options)
            result.notes.append(f"drill took {time.monotonic() - started:.0f}s")
            results.append(result)
            print(render_table([result]).splitlines()[-1], flush=True)
    return results


def print_report(results: list[DrillResult]) -> None:
    print()
    print(render_table(results))
    for r in results:
        c = r.comparison
        print(
            f"\n{r.drill}: fault at {r.fault_at:.1f}s into the replay, lasted {r.outage_s:.1f}s; "
            f"{c.documents:,} finding documents, {len(c.extra)} unexpected, "
            f"{len(c.group_mismatches)} groups with a different count; "
            f"{r.kafka_records:,} records in the events topic"
        )
        for note in r.notes:
            print(f"  - {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--drill", action="append", choices=DRILLS, help="Run only this drill (repeatable)."
    )
    parser.add_argument("--rate", type=float, default=DrillOptions.rate, help="Events/s.")
    parser.add_argument(
        "--fault-after", type=float, default=DrillOptions.fault_after_s, help="Seconds in."
    )
    parser.add_argument(
        "--es-outage", type=float, default=DrillOptions.es_outage_s, help="Seconds ES is down."
    )
    parser.add_argument("--source", type=Path, help="Run the job from this source tree.")
    parser.add_argument(
        "--job-flags",
        help="Extra flags of `sigstream detect`, replacing the default "
        "'--no-sensor-health --no-correlations' (for a --source that lacks them).",
    )
    parser.add_argument("--rules", type=Path, action="append", default=[])
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)

    from common.settings import get_settings

    otrf = get_settings().shared_data / "otrf"
    if not otrf.is_dir():
        print(f"the OTRF corpus is not at {otrf} (clone with ../shared beside the repo)")
        return 2
    options = DrillOptions(
        rate=args.rate,
        fault_after_s=args.fault_after,
        es_outage_s=args.es_outage,
        rules=tuple(args.rules),
        source=args.source,
        job_flags=tuple(args.job_flags.split()) if args.job_flags is not None else None,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sigstream-drills-") as tmp:
        results = run_all(args.drill or list(DRILLS), options, otrf, Path(tmp))
    print_report(results)
    print(f"\nall drills in {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
    return 0 if all(r.comparison.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
