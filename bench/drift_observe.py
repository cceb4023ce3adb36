"""What observing fields costs the detection pass, per event, without Spark
(docs/field-drift.md "Cost"): ``FieldObservations.add`` over OTRF events as the engine sees
them (every event column, Arrow batches of 10,000), without a sensor -> version map (every
row ``unknown``, the grouping of before versions) and with one (every sensor known, spread
over ``--versions`` versions: rows grouped per (route, version)).

    python -m bench.drift_observe [--events 30000] [--versions 3] [--repeat 5]
                                  [--events-file PATH]

``--events-file``: wire-form JSON lines (default: the OTRF base set of ``bench.dataset``,
built once). Events are taken evenly over the file, so every recording is represented.
Prints the best of ``--repeat`` runs per mode, and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from detections.drift.observe import FieldObservations
from detections.drift.versions import sensor_key
from schemas.generate import arrow_event_schema

TIMES = ("event_time", "received_time", "sent_time")


def _events(path: Path, n: int) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        total = sum(1 for _ in f)
    step = max(total // n, 1)
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % step == 0 and len(out) < n:
                event = json.loads(line)
                for name in TIMES:
                    if isinstance(event.get(name), str):
                        event[name] = datetime.fromisoformat(event[name])
                out.append(event)
    return out


def _batches(events: list[dict[str, Any]], size: int = 10_000) -> list[pa.RecordBatch]:
    schema = arrow_event_schema()
    names = set(schema.names)
    rows = [{k: v for k, v in e.items() if k in names} for e in events]
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.to_batches(max_chunksize=size)


def _run(batches: list[pa.RecordBatch], versions: dict[str, str] | None) -> tuple[float, int]:
    obs = FieldObservations(versions=versions)
    started = time.perf_counter()
    for batch in batches:
        obs.add(batch)
    return time.perf_counter() - started, len(obs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events-file", type=Path)
    args = parser.parse_args(argv)
    path = args.events_file
    if path is None:
        from bench.dataset import base_events_path
        from common.settings import get_settings

        path = base_events_path(get_settings())
    events = _events(path, args.events)
    batches = _batches(events)
    n = sum(b.num_rows for b in batches)
    sensors = sorted({(str(e.get("tenant_id") or "default"), str(e["sensor_id"])) for e in events})
    known = {sensor_key(t, s): f"sensor/{i % args.versions}.0" for i, (t, s) in enumerate(sensors)}
    result: dict[str, Any] = {
        "events": n,
        "columns": len(batches[0].schema.names),
        "sensors": len(sensors),
        "load_average": os.getloadavg(),
    }
    for mode, versions in (("no version map", None), (f"{args.versions} versions", known)):
        runs = [_run(batches, versions) for _ in range(args.repeat)]
        best = min(s for s, _ in runs)
        result[mode] = {"us_per_event": round(best / n * 1e6, 2), "records": runs[0][1]}
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
