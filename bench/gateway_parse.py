"""The gateway's per-event CPU without HTTP, TLS or Kafka: one thread, one 1,000-event
gzip body at a time, CPU time (``time.process_time``) per event for

* ``events``: ``parse.parse_batch`` (decode, scan, validate, encode) of a /v1/events body;
* ``bulk``: ``bulk.parse_bulk`` + ``bulk.to_batch`` + the answer's bytes for the same
  schema events as a bulk body (all written);
* ``bulk-ecs``: the same for Winlogbeat 8 (ECS) records through the layouts adapter.

What ``bench/gateway.py`` measures end to end minus the server around it: the part that
holds one process's interpreter, so 1e6 / (µs per event) is one core's ceiling.

    python -m bench.gateway_parse [--reps 20]
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.gateway import bulk_body, ecs_record, make_event
from ingest.gateway import bulk
from ingest.gateway.parse import Identity, Limits, parse_batch
from ingest.gateway.pipeline import Result

EVENTS = 1000


def runs() -> dict[str, Callable[[], object]]:
    ident, limits, now = Identity("bench", "s1"), Limits(), datetime.now(UTC)
    events = [make_event("s1", n) for n in range(EVENTS)]
    ndjson = gzip.compress(b"\n".join(events) + b"\n")
    bodies = {
        "bulk": gzip.compress(bulk_body(events)),
        "bulk-ecs": gzip.compress(bulk_body([ecs_record("s1", n) for n in range(EVENTS)])),
    }

    def bulk_run(body: bytes) -> Callable[[], object]:
        def run() -> object:
            ops = bulk.parse_bulk(body, "gzip", limits)
            batch = bulk.to_batch(ops, ident, limits, now)
            result = Result(batch.events, [], batch.rejects, batch.lines)
            assert len(batch.events) == EVENTS, batch.rejects[:1]
            return bulk.answer_bytes(ops, {o.index: o for o in result.outcomes()}, 1)

        return run

    def events_run() -> object:
        batch = parse_batch(ndjson, ident, limits, now, "gzip")
        assert len(batch.events) == EVENTS, batch.rejects[:1]
        return batch

    return {"events": events_run, **{k: bulk_run(b) for k, b in bodies.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=20, help="bodies per kind")
    args = parser.parse_args(argv)
    for kind, run in runs().items():
        run()  # warm: imports, schema caches
        best = []
        for _ in range(3):
            started = time.process_time()
            for _ in range(args.reps):
                run()
            best.append((time.process_time() - started) / args.reps / EVENTS * 1e6)
        us = min(best)
        print(f"{kind:9} {us:7.1f} µs/event CPU  ({1e6 / us:,.0f} events/s per core)")


if __name__ == "__main__":
    main()
