"""The alerts runner without services: a malformed finding skips only itself, a failed
claim leaves the cursor where it was, a stopped worker gives back what it held, and
removed routes lose their backlog series."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from common import metrics as common_metrics
from tests.alerts_support import finding_doc
from triage.alerts.config import RoutesFile, parse_routes
from triage.alerts.render import notification
from triage.alerts.runner import AlertConfig, Runner, Worker

ROUTES = """
destinations:
  hook: {type: webhook, url: "http://127.0.0.1:1/h", tenants: ["*"]}
routes:
  - name: everything
    match: {}
    destinations: [hook]
"""

CFG = AlertConfig(
    findings_index="findings",
    log_index="alerts-log",
    dead_index="alerts-dead",
    state_index="alerts-state",
    recover_every_s=1e9,
    backoff_s=0.01,
    backoff_max_s=0.01,
)


class StaticRoutes:
    """A RoutesWatcher that never changes."""

    def __init__(self, routes: RoutesFile) -> None:
        self.routes = routes

    def poll(self) -> bool:
        return False


class FakeDlog:
    def __init__(self) -> None:
        self.claimed: dict[str, dict[str, Any]] = {}
        self.fail = False

    def claim(self, entries: list[dict[str, Any]]) -> list[bool]:
        if self.fail:
            raise RuntimeError("delivery log refused an entry")
        out = []
        for e in entries:
            out.append(e["id"] not in self.claimed)
            self.claimed.setdefault(e["id"], e)
        return out

    def mark_attempt(self, *args: Any) -> None:
        pass

    def mark_failed(self, *args: Any) -> None:
        pass

    def mark_sent(self, *args: Any) -> None:
        pass


def _hit(doc_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    ms = datetime.fromisoformat(doc["event"]["ingested"]).timestamp() * 1000
    return {"_id": doc_id, "_source": doc, "sort": [ms, doc_id]}


def fake_es(docs: list[tuple[str, dict[str, Any]]]) -> MagicMock:
    """Findings in the ``ingested`` lane; ``search_after`` past the last one reads
    nothing (as Elasticsearch would); sweeps find nothing new."""
    hits = [_hit(i, d) for i, d in docs]

    def search(index: str, **body: Any) -> dict[str, Any]:
        field = next(iter(body["sort"][0]))
        if field != "event.ingested" or not body["_source"]:
            return {"hits": {"hits": []}}
        after = body.get("search_after")
        out = [h for h in hits if after is None or h["sort"] > after]
        return {"hits": {"hits": out}}

    es = MagicMock()
    es.search.side_effect = search
    es.mget.return_value = {"docs": []}
    return es


def make_runner(docs: list[tuple[str, dict[str, Any]]]) -> tuple[Runner, FakeDlog]:
    es = fake_es(docs)
    runner = Runner(
        CFG,
        es,
        StaticRoutes(parse_routes(ROUTES, "routes.yml")),  # type: ignore[arg-type]
        MagicMock(),
        start=datetime(2026, 12, 6, tzinfo=UTC),
        resume=False,
    )
    runner.follower.load(resume=False)
    dlog = FakeDlog()
    runner.dlog = dlog  # type: ignore[assignment]
    runner.last_recover = time.monotonic()
    return runner, dlog


def good(event_id: str) -> tuple[str, dict[str, Any]]:
    when = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    return finding_doc(event_id=event_id, ingested=when)


@pytest.mark.parametrize(
    "bad",
    [
        {"rule": "x"},
        {"event": "x"},
        {"threat": {"technique": [{"id": "T1"}]}},
    ],
)
def test_a_malformed_finding_is_skipped_and_reported_the_others_are_routed(
    bad: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = good("e1"), good("e2")
    runner, _ = make_runner([])
    entries, work = runner._route_all(
        runner.routes.routes,  # type: ignore[arg-type]
        [first, ("bad-doc", bad), second],
        datetime.now(UTC),
    )
    assert {e["finding_doc"] for e in entries} == {first[0], second[0]}
    assert len(work) == 2
    assert runner.counts["unroutable"] == 1
    assert "bad-doc" in caplog.text and "cannot route" in caplog.text


def test_a_round_with_a_malformed_finding_still_delivers_the_good_ones() -> None:
    first, second = good("e1"), good("e2")
    bad_doc = {**second[1], "rule": "x"}
    runner, dlog = make_runner([first, ("bad-doc", bad_doc), second])
    assert runner.step() == 3
    assert {e["finding_doc"] for e in dlog.claimed.values()} == {first[0], second[0]}


def test_a_failed_claim_leaves_the_cursor_where_it_was() -> None:
    first, second = good("e1"), good("e2")
    runner, dlog = make_runner([first, second])
    before = {
        name: (c.after, c.high_ms, dict(c.seen)) for name, c in runner.follower.cursors.items()
    }
    dlog.fail = True
    with pytest.raises(RuntimeError):
        runner.step()
    after = {
        name: (c.after, c.high_ms, dict(c.seen)) for name, c in runner.follower.cursors.items()
    }
    assert after == before
    assert not dlog.claimed
    # The next round reads the same findings again and claims them.
    dlog.fail = False
    assert runner.step() == 2
    assert {e["finding_doc"] for e in dlog.claimed.values()} == {first[0], second[0]}
    # And only once: the cursor moved on after the claim.
    assert runner.step() == 0


def test_a_worker_stopped_while_a_send_fails_gives_the_delivery_back() -> None:
    sending, release = threading.Event(), threading.Event()

    class FailingSender:
        def send(self, n: Any, did: str) -> None:
            sending.set()
            release.wait(5)
            raise ConnectionError("receiver down")

        def close(self) -> None:
            pass

    inflight: set[str] = set()
    lock = threading.Lock()
    worker = Worker("hook", FailingSender, FakeDlog(), CFG, inflight, lock)  # type: ignore[arg-type]
    worker.start()
    _, doc = good("e1")
    entry = {"id": "d1", "route": "everything"}
    assert worker.offer(entry, notification(doc, CFG.base_url, "sigma"), None)
    assert sending.wait(5)
    worker.stop()  # the destination's config changed while the send is failing
    release.set()
    worker.join(5)
    assert not worker.is_alive()
    with lock:
        assert inflight == set()  # recover() may offer it again; idle() can become true
    assert worker.heap == []


def test_a_stopped_worker_gives_back_its_queued_deliveries() -> None:
    inflight: set[str] = set()
    lock = threading.Lock()
    worker = Worker("hook", MagicMock(), FakeDlog(), CFG, inflight, lock)  # type: ignore[arg-type]
    _, doc = good("e1")
    n = notification(doc, CFG.base_url, "sigma")
    for did in ("d1", "d2"):
        worker.offer({"id": did, "route": "everything"}, n, None)
    assert inflight == {"d1", "d2"}
    worker.stop()
    worker.start()  # stopping already: exits at once, as after a routes change
    worker.join(5)
    assert inflight == set()


def test_removed_routes_lose_their_backlog_series() -> None:
    runner, _ = make_runner([])
    two = parse_routes(
        ROUTES + "  - name: second\n    match: {}\n    destinations: [hook]\n", "routes.yml"
    )
    r = common_metrics.canary_registry()
    runner.publish_backlog(two)
    assert r.get_sample_value("sigstream_alert_delivery_backlog", {"route": "second"}) == 0
    runner.publish_backlog(parse_routes(ROUTES, "routes.yml"))
    assert r.get_sample_value("sigstream_alert_delivery_backlog", {"route": "second"}) is None
    assert r.get_sample_value("sigstream_alert_delivery_backlog", {"route": "everything"}) == 0


def test_secret_files_are_read_bounded_and_a_bad_one_is_a_permanent_error(
    tmp_path: Path,
) -> None:
    import os

    from triage.alerts.destinations.base import (
        MAX_SECRET_BYTES,
        PermanentError,
        SenderContext,
        read_secret,
    )

    ctx = SenderContext(timeout_s=1)
    good = tmp_path / "token"
    good.write_text("s3cret\n")
    assert read_secret(None, good, ctx, "webhook") == "s3cret"
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(PermanentError, match="content limit"):
        read_secret(None, huge, ctx, "webhook")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes it: reading must not wait
    with pytest.raises(PermanentError, match="not a regular file"):
        read_secret(None, fifo, ctx, "webhook")


def test_an_idle_follower_writes_its_cursor_only_when_it_moved() -> None:
    from triage.alerts.follower import Follower

    es = MagicMock()
    es.get.side_effect = KeyError  # never called: resume=False
    follower = Follower(es, "f", "state", 120.0, datetime(2026, 12, 6, tzinfo=UTC))
    follower.load(resume=False)
    follower.save()
    follower.save()  # nothing moved: no second write
    assert es.index.call_count == 1
    next(iter(follower.cursors.values())).high_ms += 1000
    follower.save()
    assert es.index.call_count == 2
