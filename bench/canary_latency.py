"""Canary latency of the running stack: rounds of canaries for every deployed rule with
tests, through the configured gateway, Kafka and the running detection job, and the time
from injection to (a) the job matching the canary (the finding's ``event.ingested``) and
(b) the finding being visible in Elasticsearch (looked for every ``--poll`` seconds, so
(b) is quantised to that).

Needs a running gateway and ``sigstream detect`` and the canary settings
(SIGSTREAM_CANARY_GATEWAY_URL, _TOKEN, _GATEWAY_CA; docs/canaries.md)::

    python -m bench.canary_latency --rounds 6 --interval 15 --poll 0.1

Prints numbers; asserts nothing. Samples of one round share micro-batches, so they are
not independent: report the number of rounds with the number of rules.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no samples"
    return (
        f"{name}: n={len(values)} p50 {statistics.median(values):.2f} s, "
        f"p95 {quantile(values, 0.95):.2f} s, max {max(values):.2f} s, min {min(values):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between rounds")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between looks")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    from common.settings import get_settings
    from sigstream.commands.canary import gateway_target, make_runner

    s = get_settings()
    target = gateway_target(s)
    if target is None:
        raise SystemExit("set SIGSTREAM_CANARY_GATEWAY_URL and SIGSTREAM_CANARY_TOKEN")
    runner = make_runner(
        s, target=target, interval_s=args.interval, timeout_s=args.timeout, poll_s=args.poll
    )
    visible: list[float] = []
    matched: list[float] = []
    failed: list[str] = []
    rules: set[str] = set()

    ours: set[str] = set()  # rounds this run injected (an earlier process's are not counted)

    def collect(evaluated: Any, injected: Any) -> None:
        if injected is not None and injected.round_name:
            ours.add(injected.round_name)
        for v in evaluated.verdicts:
            if v.round_name not in ours or v.not_firing:
                continue
            h = v.health
            rules.add(h.rule_id)
            if h.latency_s is not None:
                visible.append(h.latency_s)
            if h.job_latency_s is not None:
                matched.append(h.job_latency_s)
        failed.extend(
            f"{v.health.title}: {v.health.cause}"
            for v in evaluated.verdicts
            if v.not_firing and v.round_name in ours
        )

    load_before = os.getloadavg()
    started = time.monotonic()
    runner.run(rounds=args.rounds, on_report=collect)
    load_after = os.getloadavg()
    print(
        f"{args.rounds} rounds x {len(rules)} rules in {time.monotonic() - started:.0f} s "
        f"(poll {args.poll} s, job trigger {s.trigger_s} s); load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores"
    )
    print(describe("injected -> matched in the job (event.ingested)", matched))
    print(describe("injected -> finding visible in Elasticsearch", visible))
    print(f"not firing: {len(failed)}")
    for line in failed[:10]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
