"""Follow new findings in the findings index: a persisted cursor, tolerant of late writes.

Two lanes, because not every finding has ``event.ingested`` (sensor-health and demotion
findings carry only ``event.created``): each lane follows its time field with
``search_after`` on (time, finding id). A finding becomes searchable a little after its
time was stamped (the detection pass stamps ``event.ingested`` when the batch starts and
writes at its end; an Elasticsearch outage can hold the write for minutes), so it can
appear *behind* the cursor. A sweep re-reads the last ``overlap_s`` seconds of each lane
every few seconds, ids only, and fetches what it had not seen. Duplicates that still slip
through (a restart starts ``overlap_s`` back) are harmless: the delivery log claims each
delivery once. Suppressed matches (``sigstream.suppressed_by``) are never followed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from triage.alerts.deliverylog import fetch_findings

TIEBREAK = "sigstream.finding.id"


@dataclass(frozen=True)
class Lane:
    name: str
    field: str
    #: Filter clauses selecting this lane's documents.
    filters: tuple[dict[str, Any], ...]
    must_not: tuple[dict[str, Any], ...]


_NOT_SUPPRESSED = ({"exists": {"field": "sigstream.suppressed_by"}},)
LANES = (
    Lane("ingested", "event.ingested", ({"exists": {"field": "event.ingested"}},), _NOT_SUPPRESSED),
    Lane(
        "created", "event.created", (), ({"exists": {"field": "event.ingested"}}, *_NOT_SUPPRESSED)
    ),
)


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass
class LaneCursor:
    lane: Lane
    #: Last (time in epoch ms, finding id) read; None: start from ``start_ms``.
    after: list[Any] | None
    start_ms: float
    high_ms: float
    seen: dict[str, float] = field(default_factory=dict)


def lane_query(lane: Lane, gte_ms: float, lte_ms: float | None = None) -> dict[str, Any]:
    rng: dict[str, Any] = {"gte": _iso(gte_ms)}
    if lte_ms is not None:
        rng["lte"] = _iso(lte_ms)
    return {
        "bool": {
            "filter": [*lane.filters, {"range": {lane.field: rng}}],
            "must_not": list(lane.must_not),
        }
    }


@dataclass
class Follower:
    es: Elasticsearch
    index: str
    state_index: str
    overlap_s: float
    start: datetime
    page: int = 500
    sweep_every_s: float = 5.0
    cursors: dict[str, LaneCursor] = field(default_factory=dict)
    last_sweep: float = 0.0
    saved_lanes: dict[str, float] | None = None  # what save() last wrote

    @property
    def state_id(self) -> str:
        return f"cursor:{self.index}"

    def load(self, resume: bool = True) -> None:
        """Resume from the persisted cursor (``overlap_s`` back), else from ``start``."""
        saved: dict[str, Any] = {}
        if resume:
            try:
                saved = self.es.get(index=self.state_index, id=self.state_id)["_source"]["lanes"]
            except NotFoundError:
                saved = {}
        start_ms = self.start.timestamp() * 1000
        for lane in LANES:
            high = saved.get(lane.name)
            begin = (high - self.overlap_s * 1000) if high is not None else start_ms
            self.cursors[lane.name] = LaneCursor(
                lane, None, begin, high if high is not None else begin
            )

    def mark(self) -> tuple[dict[str, LaneCursor], float]:
        """The in-memory cursor as it is now, for :meth:`rewind` (``poll`` advances it
        before the caller has claimed what it read)."""
        lanes = {
            name: replace(c, after=list(c.after) if c.after else c.after, seen=dict(c.seen))
            for name, c in self.cursors.items()
        }
        return lanes, self.last_sweep

    def rewind(self, mark: tuple[dict[str, LaneCursor], float]) -> None:
        """Back to a :meth:`mark`: the next ``poll`` reads the same findings again (the
        delivery log skips what was claimed already)."""
        lanes, self.last_sweep = mark
        self.cursors = dict(lanes)

    def save(self) -> None:
        """Store the lanes' high marks; a round that moved none writes nothing (an idle
        follower would otherwise write a document every poll)."""
        lanes = {name: c.high_ms for name, c in self.cursors.items()}
        if lanes == self.saved_lanes:
            return
        self.es.index(
            index=self.state_index,
            id=self.state_id,
            document={"lanes": lanes, "updated": datetime.now(UTC).isoformat()},
        )
        self.saved_lanes = lanes

    def _search(
        self, lane: Lane, query: dict[str, Any], after: list[Any] | None, source: bool
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "query": query,
            "size": self.page,
            "sort": [{lane.field: {"order": "asc", "format": "epoch_millis"}}, {TIEBREAK: "asc"}],
            "_source": source,
        }
        if after is not None:
            body["search_after"] = after
        try:
            return self.es.search(index=self.index, **body)["hits"]["hits"]
        except NotFoundError:
            return []

    def poll(self, max_docs: int = 5000) -> list[tuple[str, dict[str, Any]]]:
        """New findings (document id, source), oldest first per lane."""
        out: list[tuple[str, dict[str, Any]]] = []
        for cursor in self.cursors.values():
            while len(out) < max_docs:
                hits = self._search(
                    cursor.lane, lane_query(cursor.lane, cursor.start_ms), cursor.after, True
                )
                for hit in hits:
                    self._take(cursor, hit, out)
                if hits:
                    cursor.after = hits[-1]["sort"]
                if len(hits) < self.page:
                    break
        if time.monotonic() - self.last_sweep >= self.sweep_every_s:
            self.last_sweep = time.monotonic()
            out += self.sweep()
        return out

    def _take(
        self, cursor: LaneCursor, hit: dict[str, Any], out: list[tuple[str, dict[str, Any]]]
    ) -> None:
        at = float(hit["sort"][0])
        cursor.high_ms = max(cursor.high_ms, at)
        if hit["_id"] in cursor.seen:
            return
        cursor.seen[hit["_id"]] = at
        out.append((hit["_id"], hit["_source"]))

    def sweep(self) -> list[tuple[str, dict[str, Any]]]:
        """Findings written late, behind the cursor: ids of the overlap window first, then
        the unseen ones' documents. Forgets ids older than the window."""
        out: list[tuple[str, dict[str, Any]]] = []
        for cursor in self.cursors.values():
            floor = cursor.high_ms - self.overlap_s * 1000
            unseen: dict[str, float] = {}
            after: list[Any] | None = None
            while True:
                hits = self._search(
                    cursor.lane, lane_query(cursor.lane, floor, cursor.high_ms), after, False
                )
                for hit in hits:
                    if hit["_id"] not in cursor.seen:
                        unseen[hit["_id"]] = float(hit["sort"][0])
                if len(hits) < self.page:
                    break
                after = hits[-1]["sort"]
            for doc_id, source in fetch_findings(self.es, self.index, unseen).items():
                cursor.seen[doc_id] = unseen[doc_id]
                out.append((doc_id, source))
            cursor.seen = {k: v for k, v in cursor.seen.items() if v >= floor}
        return out


def parse_start(value: str | None, now: datetime, overlap_s: float) -> datetime:
    """``--from``: ``now`` (default: only findings from now on, ``overlap_s`` back),
    ``beginning``, or an ISO time."""
    if value in (None, "", "now"):
        return now - timedelta(seconds=overlap_s)
    if value == "beginning":
        return datetime(1970, 1, 1, tzinfo=UTC)
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
