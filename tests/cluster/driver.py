"""A detection-job driver process for the cluster tests.

Each Spark application needs its own process (one SparkContext per process, and the test
process already holds the local[2] session), so the cluster tests start this module as a
subprocess with the cluster profile's environment (``infra.cluster_config.client_env``:
SIGSTREAM_SPARK_MASTER=spark://..., the 3 brokers, the 2 ES nodes). It runs the detection
job *unchanged*: the session comes from
``detections.stream.spark_session.build_session`` and the queries from
``detections.stream.job`` via the e2e harness.

    python -m tests.cluster.driver --workdir W --inputs DIR [--rules P ...]
        [--once-suffix A] [--stream-suffix B --max-offsets N]

With ``--once-suffix`` it replays the inputs to ``test.A.events`` and processes them
(availableNow), then writes ``W/once.json``. With ``--stream-suffix`` it then processes
``test.B.events`` continuously (the drill replays into it and kills processes meanwhile),
announces ``W/stream.started`` and stops when ``W/stop`` exists, writing ``W/stream.json``.
Both queries run in one application, so the second one finds the executors warm.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from common.settings import get_settings
from detections.compiler.plan import load_plan
from detections.stream.job import JobTotals, start
from detections.stream.spark_session import build_session
from tests.e2e.harness import job_config, read_findings, run_detection


def _rule_paths(given: list[str] | None) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    from sigstream.cli import default_rule_paths

    return default_rule_paths(get_settings())


def _summary(totals: JobTotals, findings: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return {
        "job_seconds": round(seconds, 1),
        "batches": totals.batches,
        "events": totals.events,
        "rejected": totals.rejected,
        "created": totals.created,
        "duplicates": totals.duplicates,
        "finding_ids": sorted(h["_id"] for h in findings),
        "findings": len(findings),
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so a polling test never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, action="append", default=[])
    parser.add_argument("--rules", action="append")
    parser.add_argument("--once-suffix")
    parser.add_argument("--stream-suffix")
    parser.add_argument("--max-offsets", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("sigstream").setLevel(logging.INFO)

    settings = get_settings()
    t0 = time.monotonic()
    spark = build_session(settings, app_name="sigstream-cluster-tests")
    plan = load_plan(_rule_paths(args.rules))
    session: dict[str, Any] = {
        "master": spark.sparkContext.master,
        "default_parallelism": spark.sparkContext.defaultParallelism,
        "session_seconds": round(time.monotonic() - t0, 1),
        "rules": len(plan.rules),
    }
    if args.once_suffix:
        t1 = time.monotonic()
        workdir = args.workdir / "once"
        cfg = job_config(workdir, args.once_suffix)
        run = run_detection(spark, args.inputs, [], workdir, cfg=cfg, plan=plan)
        result = _summary(run.totals, run.findings, time.monotonic() - t1)
        _write(args.workdir / "once.json", session | result | {"replayed": run.replayed.sent})
    if args.stream_suffix:
        t2 = time.monotonic()
        overrides: dict[str, Any] = {"available_now": False}
        if args.max_offsets:
            overrides["max_offsets_per_trigger"] = args.max_offsets
        cfg = job_config(args.workdir / "stream", args.stream_suffix, **overrides)
        totals = JobTotals()
        query = start(spark, plan, cfg, totals)
        (args.workdir / "stream.started").touch()
        stop = args.workdir / "stop"
        while not stop.exists():
            if query.awaitTermination(0.5):
                break  # the query failed; its exception is raised below
        query.stop()
        if query.exception() is not None:
            raise RuntimeError(f"the streaming query failed: {query.exception()}")
        result = _summary(totals, read_findings(cfg), time.monotonic() - t2)
        _write(args.workdir / "stream.json", session | result)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
