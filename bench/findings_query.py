"""Triage query latency with 1 million findings in the index (issue 6).

Bulk-loads synthetic findings (group documents, the ones analysts list) into a dedicated
index, then times the production read path (triage/store.py) for list, filter, free-text
and show queries: p50/p95 of the client-side wall time and of Elasticsearch's ``took``.
The index is deleted at the end unless ``--keep``; ``--reuse`` times an index kept earlier.

    python -m bench.findings_query                # 1,000,000 findings
    python -m bench.findings_query --findings 100000 --rounds 20
    python -m bench.findings_query --only overview  # the triage page's overview queries
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch, helpers

from bench.common import print_kv, print_table, progress, save_result
from common.settings import Settings
from detections.sinks.elasticsearch import (
    connect,
    drop_findings_index,
    ensure_findings_index,
    groups_index,
)
from schemas.findings import LEVEL_SEVERITY, attack_from_tags, group_id
from triage import dashboard, store
from triage.auth import Caller

TENANTS = [f"tenant-{i}" for i in range(5)]
LEVELS = ["informational", "low", "medium", "high", "critical"]
LEVEL_WEIGHTS = [10, 30, 35, 20, 5]
STATUSES = ["open", "acknowledged", "closed"]
STATUS_WEIGHTS = [60, 15, 25]
WORDS = [
    "powershell",
    "rundll32",
    "mshta",
    "certutil",
    "regsvr32",
    "wmic",
    "schtasks",
    "bitsadmin",
    "cmd",
    "cscript",
    "mimikatz",
    "procdump",
    "psexec",
    "vssadmin",
]
NOW = datetime(2026, 11, 20, tzinfo=UTC)
SPAN = timedelta(days=30)


def synthetic_findings(n: int, seed: int = 7) -> Iterator[tuple[str, dict[str, Any]]]:
    """``n`` group documents shaped like production ones (5 tenants, 5,000 hosts, 300
    rules, levels and statuses in realistic proportions, 30 days of activity)."""
    rnd = random.Random(seed)
    rules: list[dict[str, Any]] = []
    for r in range(300):
        word = WORDS[r % len(WORDS)]
        tags = [f"attack.t{1000 + r % 200}", "attack.execution"]
        level = rnd.choices(LEVELS, LEVEL_WEIGHTS)[0]
        rules.append(
            {
                "id": f"rule-{r:04d}",
                "name": f"Suspicious {word} use variant {r}",
                "level": level,
                "tags": tags,
                "word": word,
                "threat": attack_from_tags(tags).model_dump(mode="json"),
            }
        )
    for i in range(n):
        rule = rules[rnd.randrange(len(rules))]
        tenant = TENANTS[i % len(TENANTS)]
        host = f"WS{rnd.randrange(5000):05d}"
        first = NOW - SPAN * rnd.random()
        last = first + timedelta(seconds=rnd.randrange(3600))
        gid = group_id(tenant, rule["id"], host, f"bench:{i}")
        exe = rf"C:\Windows\System32\{rule['word']}.exe"
        cmd = f"{rule['word']}.exe /c task{rnd.randrange(100000)} {rnd.choice(WORDS)}"
        status = rnd.choices(STATUSES, STATUS_WEIGHTS)[0]
        yield (
            gid,
            {
                "@timestamp": first.isoformat(),
                "rule": {
                    "id": rule["id"],
                    "name": rule["name"],
                    "level": rule["level"],
                    "tags": rule["tags"],
                    "references": [],
                },
                "threat": rule["threat"],
                "host": {"name": host},
                "process": {"executable": exe, "command_line": cmd, "parent": {}},
                "event": {
                    "id": f"ev-{i}",
                    "kind": "alert",
                    "category": "process_creation",
                    "created": first.isoformat(),
                    "severity": LEVEL_SEVERITY[rule["level"]],
                },
                "message": f"{rule['name']} | {rule['id']} | {host} | {exe} | {cmd}",
                "sigstream": {
                    "tenant_id": tenant,
                    "sensor_id": f"{tenant}-{host}",
                    "finding": {
                        "id": gid,
                        "status": status,
                        "resolution": "benign" if status == "closed" else None,
                        "assignee": f"analyst{rnd.randrange(20)}" if status != "open" else None,
                        "notes": [],
                        "history": [],
                    },
                    "group": {
                        "id": gid,
                        "window_s": 3600,
                        "count": 1 + int(rnd.paretovariate(1.2)),
                        "first_seen": first.isoformat(),
                        "last_seen": last.isoformat(),
                    },
                    "suppressed_by": [],
                    "event": {"event_id": f"ev-{i}", "host": host, "CommandLine": cmd},
                },
            },
        )


def load(es: Elasticsearch, index: str, n: int) -> float:
    """Bulk-load ``n`` findings into ``index``'s groups index; returns seconds taken."""
    target = groups_index(index)
    # Bulk-load settings (restored below): no refreshes, fsync the translog asynchronously.
    es.indices.put_settings(
        index=target, settings={"refresh_interval": "-1", "translog.durability": "async"}
    )
    start, done = time.perf_counter(), 0
    actions = ({"_index": target, "_id": i, "_source": d} for i, d in synthetic_findings(n))
    for ok, _item in helpers.parallel_bulk(
        es, actions, thread_count=2, chunk_size=2000, raise_on_error=True
    ):
        done += ok
        if done % 100_000 == 0:
            took = time.perf_counter() - start
            progress(f"loaded {done:,} / {n:,} ({done / took:,.0f} docs/s)")
    es.indices.put_settings(
        index=target, settings={"refresh_interval": "1s", "translog.durability": "request"}
    )
    es.indices.refresh(index=target)
    return time.perf_counter() - start


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def scenarios(rnd: random.Random, es: Elasticsearch, index: str) -> dict[str, Callable[[], Any]]:
    """Name -> one query with fresh random parameters each call (production code path)."""
    target = groups_index(index)

    def caller() -> Caller:
        return Caller("bench", "analyst", rnd.choice(TENANTS))

    def ids() -> list[str]:
        resp = es.search(index=target, size=200, source=False, query={"match_all": {}})
        return [h["_id"] for h in resp["hits"]["hits"]]

    sample = ids()

    def lst(kw: Callable[[], dict[str, Any]]) -> Callable[[], Any]:
        return lambda: store.list_findings(es, index, caller(), store.ListFilters(**kw()))

    def day() -> datetime:
        return NOW - SPAN * rnd.random()

    return {
        "list (newest, page 1)": lst(lambda: {}),
        "list page 20": lst(lambda: {"page": 20}),
        "list by severity": lst(lambda: {"sort": "severity"}),
        "filter level+status": lst(lambda: {"levels": ["high", "critical"], "status": ["open"]}),
        "filter host": lst(lambda: {"host": f"ws{rnd.randrange(5000):05d}"}),
        "filter rule + 24h": lst(
            lambda: {
                "rule": f"rule-{rnd.randrange(300):04d}",
                "start": (d := day()),
                "end": d + timedelta(days=1),
            }
        ),
        "free text": lst(lambda: {"text": rnd.choice(WORDS)}),
        "free text 2 words + level": lst(
            lambda: {"text": f"{rnd.choice(WORDS)} {rnd.choice(WORDS)}", "levels": ["high"]}
        ),
        "show (by id)": lambda: _show(es, index, rnd.choice(sample)),
        # The triage page's overview (triage/views.py): aggregations only, bounded bars.
        "overview 24h": lambda: _overview(es, target, caller(), timedelta(days=1), day()),
        "overview 7d": lambda: _overview(es, target, caller(), timedelta(days=7), day()),
        "overview all (30 days)": lambda: _overview(es, target, caller(), None, NOW),
        "sensor-health findings": lambda: es.search(
            index=target, **dashboard.health_findings_query(caller())
        ),
    }


def _overview(
    es: Elasticsearch, target: str, who: Caller, span: timedelta | None, end: datetime
) -> Any:
    """What ``GET /api/overview`` asks: for an open range, first the span, then the
    histogram and the top lists."""
    if span is None:
        aggs = es.search(index=target, **dashboard.span_query(who, None, None))["aggregations"]
        start = datetime.fromisoformat(aggs["first"]["value_as_string"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(aggs["last"]["value_as_string"].replace("Z", "+00:00"))
    else:
        start = end - span
    interval = dashboard.interval_for(start, end)
    return es.search(index=target, **dashboard.overview_query(who, start, end, interval))


def _show(es: Elasticsearch, index: str, fid: str) -> Any:
    tenant = es.get(index=groups_index(index), id=fid, source_includes=["sigstream.tenant_id"])
    who = Caller("bench", "analyst", tenant["_source"]["sigstream"]["tenant_id"])
    return store.get_finding(es, index, who, fid)


class TookRecorder:
    """Wraps ``es.search`` to record Elasticsearch's own ``took`` of each query."""

    def __init__(self, es: Elasticsearch) -> None:
        self.took: list[float] = []
        self._search = es.search
        es.search = self  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        resp = self._search(*args, **kwargs)
        self.took.append(float(resp["took"]))
        return resp


def measure(
    es: Elasticsearch, index: str, rounds: int, warmup: int, only: str = ""
) -> list[list[Any]]:
    rnd = random.Random(11)
    rows = []
    for name, query in scenarios(rnd, es, index).items():
        if only and only not in name:
            continue
        for _ in range(warmup):
            query()
        recorder = TookRecorder(es)
        wall = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            query()
            wall.append((time.perf_counter() - t0) * 1000)
        es.search = recorder._search  # type: ignore[method-assign]
        took = recorder.took or [0.0]
        rows.append(
            [
                name,
                f"{_pct(wall, 50):.1f}",
                f"{_pct(wall, 95):.1f}",
                f"{statistics.median(took):.0f}",
                f"{_pct(took, 95):.0f}",
            ]
        )
        progress(f"{name}: p50 {rows[-1][1]} ms, p95 {rows[-1][2]} ms")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--findings", type=int, default=1_000_000, help="findings to load")
    p.add_argument("--rounds", type=int, default=50, help="timed queries per scenario")
    p.add_argument("--warmup", type=int, default=5, help="untimed queries per scenario")
    p.add_argument("--index", default=None, help="index name (default: a fresh bench-... one)")
    p.add_argument("--keep", action="store_true", help="keep the index afterwards")
    p.add_argument("--reuse", action="store_true", help="time an existing index, load nothing")
    p.add_argument("--only", default="", help="only scenarios whose name contains this")
    args = p.parse_args(argv)
    settings = Settings()
    index = args.index or f"bench-findings-{int(time.time())}"
    es = connect(settings.es_hosts)
    load_s = None
    try:
        if not args.reuse:
            ensure_findings_index(es, index)
            progress(f"loading {args.findings:,} synthetic findings into {groups_index(index)}")
            load_s = load(es, index, args.findings)
        count = es.count(index=groups_index(index))["count"]
        stats = es.indices.stats(index=groups_index(index), metric="store,segments")
        size = stats["_all"]["primaries"]["store"]["size_in_bytes"]
        print_kv(
            "findings query benchmark",
            {
                "index": groups_index(index),
                "findings": f"{count:,}",
                "store": f"{size / 2**20:,.0f} MiB",
                "segments": str(stats["_all"]["primaries"]["segments"]["count"]),
                "load": f"{load_s:,.0f} s ({count / load_s:,.0f} docs/s)" if load_s else "reused",
                "rounds": f"{args.rounds} per scenario after {args.warmup} warm-up",
            },
        )
        rows = measure(es, index, args.rounds, args.warmup, args.only)
        print_table(["query", "p50 ms", "p95 ms", "ES took p50 ms", "ES took p95 ms"], rows)
        save_result("findings_query", {"findings": count, "rows": rows, "load_s": load_s})
    finally:
        if not args.keep and not args.reuse:
            drop_findings_index(es, index)
        es.close()


if __name__ == "__main__":
    main()
