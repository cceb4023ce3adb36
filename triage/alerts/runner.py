"""``sigstream alerts run``: follow findings, route them, deliver them. Beside the
detection job, never inside its micro-batch: a slow or dead destination delays nothing
but its own messages.

One loop (this thread) reloads the routes file when it changed, reads new findings,
plans each finding's deliveries, claims them in the delivery log and hands them to one
worker thread per destination. Each worker has a bounded queue ordered by due time and
retries with exponential backoff and jitter; after ``max_attempts`` the delivery is
dead-lettered with its error. A full queue refuses new work: the claim stays ``pending``
in the log and the recovery sweep offers it again later, so neither memory nor the loop
is held hostage by a destination that is down.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from common.metrics import forget_delivery_backlog, set_delivery_backlog
from common.settings import Settings
from triage.alerts.config import RoutesError, RoutesFile, parse_routes, read_routes
from triage.alerts.deliverylog import DeliveryLog, delivery_id, digest_id, fetch_findings
from triage.alerts.destinations import PermanentError, Sender, SenderContext, build_sender
from triage.alerts.follower import Follower
from triage.alerts.render import Notification, notification
from triage.alerts.routing import Facts, facts, plan
from triage.alerts.throttle import Digest, Throttler

log = logging.getLogger("sigstream.alerts")


@dataclass(frozen=True)
class AlertConfig:
    findings_index: str
    log_index: str
    dead_index: str
    state_index: str
    poll_s: float = 1.0
    overlap_s: float = 120.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    queue_size: int = 1000
    base_url: str = "http://127.0.0.1:8000"
    recover_every_s: float = 10.0

    @classmethod
    def from_settings(cls, s: Settings, **overrides: Any) -> AlertConfig:
        values: dict[str, Any] = {
            "findings_index": s.findings_index,
            "log_index": s.alerts_log_index,
            "dead_index": s.alerts_dead_index,
            "state_index": s.alerts_state_index,
            "poll_s": s.alerts_poll_s,
            "overlap_s": s.alerts_overlap_s,
            "max_attempts": s.alerts_max_attempts,
            "backoff_s": s.alerts_backoff_s,
            "backoff_max_s": s.alerts_backoff_max_s,
            "queue_size": s.alerts_queue_size,
            "base_url": s.triage_base_url,
        }
        values.update(overrides)
        return cls(**values)


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before try ``attempt + 1``: exponential, capped, with full-range jitter
    (0.5x-1.5x) so a recovering receiver is not hit by every queue at once."""
    return min(cap, base * (2 ** max(attempt - 1, 0))) * (0.5 + rng.random())


class RoutesWatcher:
    """The routes file, re-read when its mtime, size or content hash changes. A bad new
    version is logged once with file:line and the routes in force stay."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.routes: RoutesFile | None = None
        self.error: str | None = None
        self._stat: tuple[int, int] | None = None
        self._hash: str | None = None

    def poll(self) -> bool:
        """True when new routes were loaded."""
        try:
            st = self.path.stat()
            sig = (st.st_mtime_ns, st.st_size)
        except OSError as exc:
            self._fail(f"{self.path}:0: cannot read: {exc.strerror}")
            return False
        if sig == self._stat:
            return False
        self._stat = sig
        try:
            data = read_routes(self.path)  # bounded; read once, hashed and parsed
        except RoutesError as exc:
            self._fail(str(exc))
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._hash:
            return False
        self._hash = digest
        try:
            routes = parse_routes(data, str(self.path))
        except RoutesError as exc:
            self._fail(str(exc))
            return False
        self.routes, self.error = routes, None
        log.info(
            "routes loaded from %s: %d routes, %d destinations, %d silences",
            self.path,
            len(routes.routes),
            len(routes.destinations),
            len(routes.silences),
        )
        for warning in routes.warnings():
            log.warning("routes: %s", warning)
        return True

    def _fail(self, message: str) -> None:
        if message != self.error:
            kept = "keeping the routes in force" if self.routes else "no routes in force"
            log.error("bad routes file, %s: %s", kept, message)
        self.error = message


@dataclass(order=True)
class _Item:
    due: float
    seq: int
    entry: dict[str, Any] = field(compare=False)
    n: Notification = field(compare=False)
    written_ms: float | None = field(compare=False, default=None)
    attempts: int = field(compare=False, default=0)


class Worker(threading.Thread):
    """One destination's queue and sender thread."""

    def __init__(
        self,
        name: str,
        make_sender: Callable[[], Sender],
        dlog: DeliveryLog,
        cfg: AlertConfig,
        inflight: set[str],
        lock: threading.Lock,
    ) -> None:
        super().__init__(name=f"alerts-{name}", daemon=True)
        self.dest, self.make_sender, self.dlog, self.cfg = name, make_sender, dlog, cfg
        self.inflight, self.lock = inflight, lock
        self.heap: list[_Item] = []
        self.cond = threading.Condition()
        self.stopping = False
        self.seq = itertools.count()
        self.rng = random.Random()

    def offer(self, entry: dict[str, Any], n: Notification, written_ms: float | None) -> bool:
        with self.cond:
            if len(self.heap) >= self.cfg.queue_size or self.stopping:
                return False
            with self.lock:
                if entry["id"] in self.inflight:
                    return True
                self.inflight.add(entry["id"])
            heapq.heappush(self.heap, _Item(time.monotonic(), next(self.seq), entry, n, written_ms))
            self.cond.notify()
            return True

    def pending(self) -> list[tuple[str, float | None]]:
        """(route, finding written at, epoch ms) of each delivery queued here."""
        with self.cond:
            return [(str(item.entry.get("route", "")), item.written_ms) for item in self.heap]

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def run(self) -> None:
        sender: Sender | None = None
        item: _Item | None = None
        try:
            while True:
                with self.cond:
                    while not self.stopping and (
                        not self.heap or self.heap[0].due > time.monotonic()
                    ):
                        wait = self.heap[0].due - time.monotonic() if self.heap else None
                        self.cond.wait(timeout=wait)
                    if self.stopping:
                        return
                    item = heapq.heappop(self.heap)
                try:
                    if sender is None:
                        sender = self.make_sender()
                    sender.send(item.n, item.entry["id"])
                except PermanentError as exc:
                    item.attempts += 1
                    self._fail(item, str(exc))
                except Exception as exc:
                    item.attempts += 1
                    if sender is not None:
                        sender.close()  # a broken connection: start afresh next time
                        sender = None
                    if item.attempts >= self.cfg.max_attempts:
                        self._fail(item, f"{type(exc).__name__}: {exc}")
                    else:
                        self._retry(item, f"{type(exc).__name__}: {exc}")
                else:
                    self._sent(item)
                item = None
        finally:
            if sender is not None:
                sender.close()
            self._release(item)

    def _release(self, current: _Item | None) -> None:
        """On the way out, give back what this worker still holds (queued, retrying, or
        the one being sent when it stopped): it stays pending in the log and the
        recovery sweep offers it again, to this destination's new worker if any."""
        with self.cond:
            held = [i.entry["id"] for i in self.heap]
            self.heap.clear()
        if current is not None:
            held.append(current.entry["id"])
        with self.lock:
            for did in held:
                self.inflight.discard(did)

    def _retry(self, item: _Item, error: str) -> None:
        delay = backoff(item.attempts, self.cfg.backoff_s, self.cfg.backoff_max_s, self.rng)
        log.warning(
            "%s: delivery %s failed (try %d): %s; again in %.1fs",
            self.dest,
            item.entry["id"],
            item.attempts,
            error,
            delay,
        )
        _patiently(lambda: self.dlog.mark_attempt(item.entry["id"], item.attempts, error))
        with self.cond:
            item.due = time.monotonic() + delay
            heapq.heappush(self.heap, item)

    def _fail(self, item: _Item, error: str) -> None:
        log.error(
            "%s: delivery %s dead-lettered after %d tries: %s",
            self.dest,
            item.entry["id"],
            item.attempts,
            error,
        )
        _patiently(lambda: self.dlog.mark_failed(item.entry, item.attempts, error))
        self._done(item)

    def _sent(self, item: _Item) -> None:
        latency = None if item.written_ms is None else time.time() - item.written_ms / 1000
        _patiently(lambda: self.dlog.mark_sent(item.entry["id"], item.attempts + 1, latency))
        self._done(item)

    def _done(self, item: _Item) -> None:
        with self.lock:
            self.inflight.discard(item.entry["id"])


def _patiently(write: Callable[[], None], tries: int = 10) -> None:
    """A delivery-log write, retried through a short Elasticsearch hiccup (a sent
    delivery not marked sent would be sent again after a restart)."""
    for attempt in range(tries):
        try:
            write()
            return
        except Exception as exc:
            if attempt == tries - 1:
                log.error("delivery log write failed: %s", exc)
                return
            time.sleep(min(2**attempt * 0.2, 5.0))


def _written_ms(doc: dict[str, Any]) -> float | None:
    event = doc.get("event") or {}
    stamp = event.get("ingested") or event.get("created")
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


class Runner:
    def __init__(
        self,
        cfg: AlertConfig,
        es: Elasticsearch,
        routes: RoutesWatcher,
        ctx: SenderContext,
        start: datetime,
        resume: bool = True,
    ) -> None:
        self.cfg, self.es, self.routes, self.ctx = cfg, es, routes, ctx
        self.dlog = DeliveryLog(es, cfg.log_index, cfg.dead_index)
        self.follower = Follower(es, cfg.findings_index, cfg.state_index, cfg.overlap_s, start)
        self.throttler = Throttler()
        self.workers: dict[str, tuple[str, Worker]] = {}
        self.inflight: set[str] = set()
        self.lock = threading.Lock()
        self.resume = resume
        self.last_recover = 0.0
        self.started = datetime.now(UTC)
        self.counts = {"findings": 0, "claimed": 0, "duplicates": 0, "unroutable": 0}
        self.backlog_routes: set[str] = set()

    # --- set-up ---------------------------------------------------------------------

    def open(self) -> None:
        self.dlog.ensure()
        self.follower.load(resume=self.resume)

    def _apply_routes(self, routes: RoutesFile) -> None:
        """Start a worker per new or changed destination; stop removed or changed ones
        (their queued deliveries stay pending in the log and are offered again)."""
        wanted = {name: dest.model_dump_json() for name, dest in routes.destinations.items()}
        for name, (fingerprint, worker) in list(self.workers.items()):
            if wanted.get(name) != fingerprint:
                worker.stop()  # it gives back its deliveries as it exits (Worker._release)
                del self.workers[name]
        for name, dest in routes.destinations.items():
            if name in self.workers:
                continue
            worker = Worker(
                name,
                lambda name=name, dest=dest: build_sender(name, dest, self.ctx),
                self.dlog,
                self.cfg,
                self.inflight,
                self.lock,
            )
            worker.start()
            self.workers[name] = (wanted[name], worker)

    # --- one round ------------------------------------------------------------------

    def step(self) -> int:
        """One round; returns how many findings it read."""
        if self.routes.poll() and self.routes.routes is not None:
            self._apply_routes(self.routes.routes)
        routes = self.routes.routes
        if routes is None:
            return 0  # no valid routes yet: the cursor waits, nothing is skipped
        mark = self.follower.mark()
        try:
            docs = self.follower.poll()
            entries, work = self._route_all(routes, docs, datetime.now(UTC))
            self._claim(entries, work)
        except BaseException:
            # Nothing read this round is lost: the next round reads it again and the
            # delivery log skips what this one did claim.
            self.follower.rewind(mark)
            raise
        self._digests(routes)
        if time.monotonic() - self.last_recover >= self.cfg.recover_every_s:
            self.last_recover = time.monotonic()
            self.recover(routes)
        self.follower.save()
        self.counts["findings"] += len(docs)
        self.publish_backlog(routes)
        return len(docs)

    def _route_all(
        self, routes: RoutesFile, docs: list[tuple[str, dict[str, Any]]], now: datetime
    ) -> tuple[list[dict[str, Any]], dict[str, tuple[Notification, float | None]]]:
        """Every finding's deliveries. One that cannot be routed (a malformed document) is
        logged with its id and the reason and skipped; the others still go out."""
        entries: list[dict[str, Any]] = []
        work: dict[str, tuple[Notification, float | None]] = {}
        for doc_id, doc in docs:
            doc_entries: list[dict[str, Any]] = []
            doc_work: dict[str, tuple[Notification, float | None]] = {}
            try:
                self._route(routes, doc_id, doc, now, doc_entries, doc_work)
            except Exception as exc:
                self.counts["unroutable"] += 1
                log.error(
                    "finding %s skipped, cannot route it: %s: %s", doc_id, type(exc).__name__, exc
                )
                continue
            entries += doc_entries
            work.update(doc_work)
        return entries, work

    def publish_backlog(self, routes: RoutesFile) -> None:
        """Per route, the deliveries queued and the oldest one's finding time (metrics);
        routes gone from the routes file lose their series."""
        backlog = delivery_backlog(
            [r.name for r in routes.routes],
            [p for _, worker in self.workers.values() for p in worker.pending()],
        )
        for route, (pending, oldest_ms) in backlog.items():
            oldest = datetime.fromtimestamp(oldest_ms / 1000, UTC) if oldest_ms else None
            set_delivery_backlog(route, pending, oldest)
        for route in self.backlog_routes - backlog.keys():
            forget_delivery_backlog(route)
        self.backlog_routes = set(backlog)

    def _route(
        self,
        routes: RoutesFile,
        doc_id: str,
        doc: dict[str, Any],
        now: datetime,
        entries: list[dict[str, Any]],
        work: dict[str, tuple[Notification, float | None]],
    ) -> None:
        f = facts(doc)
        steps = plan(routes, f, now)
        admitted: dict[str, bool] = {}
        by_route = {r.name: r for r in routes.routes}
        written = _written_ms(doc)
        for step in steps:
            route = by_route[step.route]
            status, reason = "pending", None
            if step.action == "silenced" and step.silence is not None:
                status, reason = "silenced", f"{step.silence.id}: {step.silence.reason}"
            elif route.throttle is not None:
                if step.route not in admitted:
                    admitted[step.route] = self.throttler.admit(
                        step.route, route.throttle, f, doc_id, time.monotonic()
                    )
                if not admitted[step.route]:
                    status, reason = "throttled", "held for the route's digest"
            fid = str(((doc.get("sigstream") or {}).get("finding") or {}).get("id") or doc_id)
            entry = _entry(
                delivery_id(fid, step.route, step.destination),
                fid,
                doc_id,
                self.cfg,
                step.route,
                step.destination,
                f,
            )
            entry["status"] = status
            if reason:
                entry["reason"] = reason
            if written is not None:
                entry["finding_written"] = datetime.fromtimestamp(written / 1000, UTC).isoformat()
            entries.append(entry)
            if status == "pending":
                work[entry["id"]] = (
                    notification(doc, self.cfg.base_url, f.kind, step.route),
                    written,
                )

    def _claim(
        self, entries: list[dict[str, Any]], work: dict[str, tuple[Notification, float | None]]
    ) -> None:
        created = self.dlog.claim(entries)
        for entry, new in zip(entries, created, strict=True):
            if not new:
                self.counts["duplicates"] += 1
                continue
            self.counts["claimed"] += 1
            if entry["id"] in work:
                n, written = work[entry["id"]]
                self._offer(entry, n, written)

    def _offer(self, entry: dict[str, Any], n: Notification, written: float | None) -> None:
        pair = self.workers.get(entry["destination"])
        if pair is not None:
            pair[1].offer(entry, n, written)  # a full queue: stays pending, offered again

    def _digests(self, routes: RoutesFile) -> None:
        digest_routes = {r.name for r in routes.routes if r.throttle and r.throttle.digest}
        due = self.throttler.due(time.monotonic(), digest_routes)
        if not due:
            return
        samples = fetch_findings(self.es, self.cfg.findings_index, {d.sample for d in due})
        entries: list[dict[str, Any]] = []
        work: dict[str, tuple[Notification, float | None]] = {}
        route_by_name = {r.name: r for r in routes.routes}
        for d in due:
            route = route_by_name.get(d.route)
            doc = samples.get(d.sample)
            if route is None or doc is None:
                continue
            for dest in route.destinations:
                if dest not in routes.destinations or not routes.destinations[dest].allows(
                    d.facts.tenant
                ):
                    continue
                entry = _entry(
                    digest_id(d.route, d.key, d.start, dest),
                    d.sample,
                    d.sample,
                    self.cfg,
                    d.route,
                    dest,
                    d.facts,
                )
                entry["status"] = "pending"
                entry["digest"] = _digest_doc(d)
                entries.append(entry)
                work[entry["id"]] = (
                    _digest_notification(doc, self.cfg, d.facts.kind, d.route, entry["digest"]),
                    None,
                )
        self._claim(entries, work)

    def recover(self, routes: RoutesFile) -> int:
        """Offer again what the log says is pending and no worker holds (a crash before
        sending, a full queue, a changed destination). Returns how many were offered."""
        before = datetime.now(UTC) - timedelta(seconds=2)
        rows = self.dlog.pending(before)
        with self.lock:
            rows = [r for r in rows if r["id"] not in self.inflight]
        live = self.dlog.still_pending([r["id"] for r in rows])
        rows = [r for r in rows if r["id"] in live]
        if not rows:
            return 0
        docs = fetch_findings(self.es, self.cfg.findings_index, {r["finding_doc"] for r in rows})
        offered = 0
        for row in rows:
            doc = docs.get(row["finding_doc"])
            if row["destination"] not in routes.destinations:
                _patiently(
                    lambda row=row: self.dlog.mark_failed(
                        row, row.get("attempts", 0), "destination no longer in the routes file"
                    )
                )
                continue
            if doc is None:
                _patiently(
                    lambda row=row: self.dlog.mark_failed(
                        row, row.get("attempts", 0), "finding no longer in the findings index"
                    )
                )
                continue
            if not routes.destinations[row["destination"]].allows(row.get("tenant", "")):
                _patiently(
                    lambda row=row: self.dlog.mark_failed(
                        row, row.get("attempts", 0), "destination no longer takes this tenant"
                    )
                )
                continue
            if row.get("digest"):
                n = _digest_notification(
                    doc, self.cfg, row.get("kind", "sigma"), row["route"], row["digest"]
                )
                written = None
            else:
                n = notification(doc, self.cfg.base_url, row.get("kind", "sigma"), row["route"])
                written = _written_ms(doc)
            self._offer(row, n, written)
            offered += 1
        return offered

    # --- the process ----------------------------------------------------------------

    def idle(self) -> bool:
        """Every claimed delivery sent or dead-lettered (digest windows still open are
        not waited for)."""
        with self.lock:
            return not self.inflight

    def run(self, stop: threading.Event, once: bool = False, idle_rounds: int = 3) -> None:
        """Loop until ``stop``; ``once``: until nothing new came for ``idle_rounds``
        rounds and every claimed delivery was sent or dead-lettered."""
        self.open()
        quiet = 0
        while not stop.is_set():
            try:
                read = self.step()
            except Exception as exc:  # Elasticsearch away: keep the process, try again
                log.error("alerts round failed: %s: %s", type(exc).__name__, exc)
                read = 0
            if once:
                quiet = quiet + 1 if read == 0 and self.idle() else 0
                if quiet >= idle_rounds:
                    break
            stop.wait(self.cfg.poll_s)
        self.close()

    def close(self) -> None:
        for _, worker in self.workers.values():
            worker.stop()
        for _, worker in self.workers.values():
            worker.join(timeout=10)
        try:
            self.follower.save()
        except Exception as exc:
            log.error("could not save the cursor: %s", exc)


def delivery_backlog(
    routes: list[str], pending: list[tuple[str, float | None]]
) -> dict[str, tuple[int, float | None]]:
    """Route -> (deliveries queued, oldest finding's written time in epoch ms); every
    configured route appears, with 0 when nothing waits, so a drained backlog reads 0."""
    out: dict[str, tuple[int, float | None]] = dict.fromkeys(routes, (0, None))
    for route, written in pending:
        n, oldest = out.get(route, (0, None))
        if written is not None and (oldest is None or written < oldest):
            oldest = written
        out[route] = (n + 1, oldest)
    return out


def _entry(
    did: str, fid: str, doc_id: str, cfg: AlertConfig, route: str, dest: str, f: Facts
) -> dict[str, Any]:
    return {
        "id": did,
        "finding_id": fid,
        "finding_doc": doc_id,
        "finding_index": cfg.findings_index,
        "route": route,
        "destination": dest,
        "tenant": f.tenant,
        "kind": f.kind,
        "rule_id": f.rule_id,
        "host": f.host,
        "attempts": 0,
    }


def _digest_doc(d: Digest) -> dict[str, Any]:
    wall = time.time() - time.monotonic()
    return {
        "count": d.count,
        "start": datetime.fromtimestamp(d.start + wall, UTC).isoformat(),
        "end": datetime.fromtimestamp(d.end + wall, UTC).isoformat(),
    }


def _digest_notification(
    doc: dict[str, Any], cfg: AlertConfig, kind: str, route: str, digest: dict[str, Any]
) -> Notification:
    n = notification(doc, cfg.base_url, kind, route)
    return replace(
        n, digest_count=int(digest["count"]), digest_window=(digest["start"], digest["end"])
    )
