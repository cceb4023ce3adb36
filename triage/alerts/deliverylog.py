"""The delivery log: one Elasticsearch document per (finding, route, destination).

Its id is a hash of the three, and it is written with ``op_type=create`` *before* the
message is sent: a second claim of the same delivery (a restart re-reading the overlap
window, a replay of the whole index, two processes) conflicts and is skipped. The entry
starts ``pending`` and becomes ``sent`` or ``failed`` (then also a dead-letter document
with the error); ``silenced`` and ``throttled`` entries record what was deliberately not
sent. Pending entries are the outbox: on start, and every few seconds, entries left
pending (a crash, a full queue) are sent again, so a claim is never lost.

The one window this cannot close is a crash after the receiver accepted a message and
before the entry says ``sent``: that delivery is repeated, with the same
``X-Sigstream-Delivery`` id (webhooks, mail, Kafka key), so receivers can drop it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

STATUSES = ("pending", "sent", "failed", "silenced", "throttled")

LOG_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "finding_id": {"type": "keyword"},
        "finding_doc": {"type": "keyword"},
        "finding_index": {"type": "keyword"},
        "route": {"type": "keyword"},
        "destination": {"type": "keyword"},
        "tenant": {"type": "keyword"},
        "kind": {"type": "keyword"},
        "rule_id": {"type": "keyword"},
        "host": {"type": "keyword"},
        "status": {"type": "keyword"},
        "reason": {"type": "keyword"},
        "attempts": {"type": "integer"},
        "created": {"type": "date"},
        "updated": {"type": "date"},
        "finding_written": {"type": "date"},
        "sent_at": {"type": "date"},
        "latency_s": {"type": "float"},
        "error": {"type": "text", "index": False},
        # A digest's own content (count, window): sent again from here after a restart.
        "digest": {"type": "object", "enabled": False},
    },
}

DEAD_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        **LOG_MAPPINGS["properties"],
        "dead_at": {"type": "date"},
    },
}


def delivery_id(finding_id: str, route: str, destination: str) -> str:
    raw = json.dumps(["finding", finding_id, route, destination])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def digest_id(route: str, key: tuple[str, ...], start: float, destination: str) -> str:
    raw = json.dumps(["digest", route, list(key), round(start, 3), destination])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class DeliveryLog:
    es: Elasticsearch
    index: str
    dead_index: str

    def ensure(self) -> None:
        for index, mappings in ((self.index, LOG_MAPPINGS), (self.dead_index, DEAD_MAPPINGS)):
            if not self.es.indices.exists(index=index):
                self.es.options(ignore_status=400).indices.create(index=index, mappings=mappings)
        # Searches of a just-created index fail until its shard has started.
        self.es.cluster.health(
            index=f"{self.index},{self.dead_index}", wait_for_status="yellow", timeout="30s"
        )

    def claim(self, entries: list[dict[str, Any]]) -> list[bool]:
        """Create each entry (its ``id`` is the document id); True where this call created
        it, False where it existed already (delivered or claimed before)."""
        if not entries:
            return []
        ops: list[dict[str, Any]] = []
        for entry in entries:
            ops.append({"create": {"_index": self.index, "_id": entry["id"]}})
            ops.append({**entry, "created": entry.get("created") or _now(), "updated": _now()})
        resp = self.es.bulk(operations=ops, refresh=False)
        created: list[bool] = []
        for item in resp["items"]:
            result = item["create"]
            status = result.get("status", 500)
            if status == 409:
                created.append(False)
            elif status >= 300:
                raise RuntimeError(f"delivery log refused an entry: {result.get('error')}")
            else:
                created.append(True)
        return created

    def mark_sent(self, did: str, attempts: int, latency_s: float | None) -> None:
        doc: dict[str, Any] = {
            "status": "sent",
            "attempts": attempts,
            "sent_at": _now(),
            "updated": _now(),
        }
        if latency_s is not None:
            doc["latency_s"] = round(latency_s, 4)
        self.es.update(index=self.index, id=did, doc=doc, retry_on_conflict=3)

    def mark_attempt(self, did: str, attempts: int, error: str) -> None:
        self.es.update(
            index=self.index,
            id=did,
            doc={"attempts": attempts, "error": error[:4000], "updated": _now()},
            retry_on_conflict=3,
        )

    def mark_failed(self, entry: dict[str, Any], attempts: int, error: str) -> None:
        """Failed for good: the log says so and the dead-letter index keeps the entry and
        the error (``sigstream alerts status`` counts them)."""
        now = _now()
        update = {"status": "failed", "attempts": attempts, "error": error[:4000], "updated": now}
        self.es.update(index=self.index, id=entry["id"], doc=update, retry_on_conflict=3)
        dead = {k: v for k, v in entry.items() if k in LOG_MAPPINGS["properties"]}
        self.es.index(
            index=self.dead_index, id=entry["id"], document={**dead, **update, "dead_at": now}
        )

    def pending(self, before: datetime, size: int = 500) -> list[dict[str, Any]]:
        """Pending entries created before ``before`` (oldest first)."""
        try:
            resp = self.es.search(
                index=self.index,
                size=size,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"status": "pending"}},
                            {"range": {"created": {"lt": before.isoformat()}}},
                        ]
                    }
                },
                sort=[{"created": "asc"}],
            )
        except NotFoundError:
            return []
        return [h["_source"] for h in resp["hits"]["hits"]]

    def still_pending(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` are pending right now (a realtime get, not the search's
        refreshed view, which can lag a just-sent entry by a second)."""
        if not ids:
            return set()
        docs = self.es.mget(index=self.index, ids=ids)["docs"]
        return {
            d["_id"] for d in docs if d.get("found") and d["_source"].get("status") == "pending"
        }

    def refresh(self) -> None:
        self.es.indices.refresh(index=f"{self.index},{self.dead_index}", ignore_unavailable=True)


def status_rows(es: Elasticsearch, index: str, dead_index: str) -> list[dict[str, Any]]:
    """Per route and destination: pending, sent, failed, silenced, throttled, dead letters,
    and the p50/p99 finding-written -> sent latency."""
    try:
        resp = es.search(
            index=index,
            size=0,
            aggs={
                "r": {
                    "terms": {"field": "route", "size": 1000},
                    "aggs": {
                        "d": {
                            "terms": {"field": "destination", "size": 1000},
                            "aggs": {
                                "s": {"terms": {"field": "status", "size": 10}},
                                "lat": {
                                    "percentiles": {"field": "latency_s", "percents": [50, 99]}
                                },
                            },
                        }
                    },
                }
            },
        )
    except NotFoundError:
        return []
    dead = _dead_counts(es, dead_index)
    rows: list[dict[str, Any]] = []
    for r in resp["aggregations"]["r"]["buckets"]:
        for d in r["d"]["buckets"]:
            counts = {s: 0 for s in STATUSES}
            counts.update({b["key"]: b["doc_count"] for b in d["s"]["buckets"]})
            lat = d["lat"]["values"]
            rows.append(
                {
                    "route": r["key"],
                    "destination": d["key"],
                    **counts,
                    "dead_letters": dead.get((r["key"], d["key"]), 0),
                    "p50_s": lat.get("50.0"),
                    "p99_s": lat.get("99.0"),
                }
            )
    return sorted(rows, key=lambda row: (row["route"], row["destination"]))


def _dead_counts(es: Elasticsearch, dead_index: str) -> dict[tuple[str, str], int]:
    try:
        resp = es.search(
            index=dead_index,
            size=0,
            aggs={
                "r": {
                    "terms": {"field": "route", "size": 1000},
                    "aggs": {"d": {"terms": {"field": "destination", "size": 1000}}},
                }
            },
        )
    except NotFoundError:
        return {}
    return {
        (r["key"], d["key"]): d["doc_count"]
        for r in resp["aggregations"]["r"]["buckets"]
        for d in r["d"]["buckets"]
    }


def fetch_findings(es: Elasticsearch, index: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(ids)
    if not ids:
        return {}
    try:
        docs = es.mget(index=index, ids=ids)["docs"]
    except NotFoundError:
        return {}
    return {d["_id"]: d["_source"] for d in docs if d.get("found")}
