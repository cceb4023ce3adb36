"""The cost of "why it matched", without Spark: the engine (``Matcher.match``) over the
same Arrow batches with and without match details, alternating, in one process.

``bench.engine --explain`` measures the detect pass as the job runs it; on a shared,
loaded machine its before/after runs see different load. Here both modes alternate on the
same batches in one process, so load drift hits both alike: the difference is the cost.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import CACHE_DIR, progress


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.explain",
        description="Engine events/s with and without match details (why it matched), "
        "alternating on the same batches of the amplified OTRF events.",
    )
    parser.add_argument(
        "--parquet",
        type=Path,
        default=CACHE_DIR / "events-200000-s4-v3.parquet",
        help="parsed events (python -m bench.dataset --events 200000 builds the default)",
    )
    parser.add_argument("--events", type=int, default=40_000, help="events per round")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per Arrow batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    args = parser.parse_args(argv)

    import pyarrow.dataset as ds

    from common.settings import get_settings
    from detections.compiler.plan import load_plan
    from detections.content.defaults import default_rule_paths
    from detections.engine.apply import compile_matcher

    if not args.parquet.exists():
        parser.error(f"{args.parquet} not found: build it with python -m bench.dataset")
    plan = load_plan(default_rule_paths(get_settings()))
    matcher = compile_matcher(plan, explained=True)
    table = ds.dataset(args.parquet).head(args.events)
    batches = table.to_batches(max_chunksize=args.batch)
    progress(f"{len(plan.rules)} rules, {table.num_rows:,} events in {len(batches)} batches")
    matcher.match(batches[0])  # warm: literal automatons are built on first use
    seconds = {False: 0.0, True: 0.0}
    matches = explain_s = 0
    for round_ in range(args.rounds):
        for explain in (False, True) if round_ % 2 == 0 else (True, False):
            started = time.perf_counter()
            for batch in batches:
                result = matcher.match(batch, explain=explain)
                if explain:
                    matches += int(result.rows.size)
                    explain_s += result.explain_seconds
            seconds[explain] += time.perf_counter() - started
    n = table.num_rows * args.rounds
    off, on = n / seconds[False], n / seconds[True]
    print(f"without details: {off:,.0f} events/s")
    print(f"with details:    {on:,.0f} events/s ({(off - on) / off:+.1%} cost)")
    print(
        f"{matches / args.rounds:,.0f} matches per round; explaining them took "
        f"{explain_s / args.rounds:.3f} s per round "
        f"({explain_s / max(matches, 1) * 1e6:,.0f} µs per match)"
    )


if __name__ == "__main__":
    main()
