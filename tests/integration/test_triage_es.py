"""Triage on the real Elasticsearch: replay-safe grouping, suppression, context, queries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.settings import Settings
from detections.sinks.elasticsearch import (
    _bulk_create,
    connect,
    groups_index,
    write_documents,
    write_findings,
)
from detections.sinks.finding_docs import build_finding, finding_document
from detections.sinks.suppression import Suppression
from tests.integration import triage_seed
from triage import store
from triage.auth import Caller

pytestmark = pytest.mark.integration
#: The stack the ``services`` fixture runs (SIGSTREAM_ES_HOSTS; 127.0.0.1:9200 by default).
HOSTS = Settings().es_hosts
ACME = Caller("alice", "analyst", "acme")


@pytest.fixture
def seeded(services: dict[str, Any], unique: str) -> Iterator[triage_seed.Seeded]:
    s = triage_seed.seed(HOSTS, f"test-{unique}-findings", f"test-{unique}-events")
    yield s
    triage_seed.drop(HOSTS, s)


@pytest.fixture
def es() -> Iterator[Any]:
    client = connect(HOSTS)
    yield client
    client.close()


def _group(es: Any, s: triage_seed.Seeded, gid: str) -> dict[str, Any]:
    return es.get(index=groups_index(s.index), id=gid)["_source"]


def _findings(rule: Any = None) -> list[Any]:
    return [build_finding(r, e, grouping=triage_seed.GROUPING) for r, e in triage_seed.matches()]


def test_grouping_is_replay_safe_and_keeps_triage_state(es: Any, seeded: Any) -> None:
    g = _group(es, seeded, seeded.acme_id)["sigstream"]
    assert (g["group"]["count"], g["finding"]["status"]) == (5, "open")
    store.update_finding(es, seeded.index, ACME, seeded.acme_id, "ack")
    store.update_finding(es, seeded.index, ACME, seeded.acme_id, "note", text="checking")
    store.update_finding(es, seeded.index, ACME, seeded.acme_id, "assign", assignee="bob")

    # The whole batch again (a Kafka replay): all duplicates, nothing double-counted.
    again = write_findings(es, seeded.index, _findings())
    assert (again.created, again.duplicates) == (0, 6)
    after = _group(es, seeded, seeded.acme_id)["sigstream"]
    assert after["group"]["count"] == 5
    assert after["finding"]["status"] == "acknowledged"
    assert after["finding"]["assignee"] == "bob"
    assert [n["text"] for n in after["finding"]["notes"]] == ["checking"]
    assert [h["action"] for h in after["finding"]["history"]] == ["ack", "note", "assign"]
    assert es.count(index=seeded.index)["count"] == 6
    assert es.count(index=groups_index(seeded.index))["count"] == 2


def test_a_new_match_grows_the_group_without_touching_triage(es: Any, seeded: Any) -> None:
    store.update_finding(es, seeded.index, ACME, seeded.acme_id, "ack")
    event = dict(
        triage_seed.matches()[0][1], event_id="a-ps-late", event_time="2026-11-20T10:59:00Z"
    )
    late = build_finding(triage_seed.ENCODED_PS, event, grouping=triage_seed.GROUPING)
    assert late.sigstream.group.id == seeded.acme_id  # type: ignore[union-attr]
    write_findings(es, seeded.index, [late])
    write_findings(es, seeded.index, [late])  # and once more, replayed
    g = _group(es, seeded, seeded.acme_id)["sigstream"]
    assert g["group"]["count"] == 6
    assert g["group"]["last_seen"].startswith("2026-11-20T10:59:00")
    assert g["finding"]["status"] == "acknowledged"


def test_crash_between_matches_and_group_is_repaired_by_the_replay(es: Any, seeded: Any) -> None:
    event = dict(
        triage_seed.matches()[0][1], event_id="a-ps-crash", event_time="2026-11-20T10:30:00Z"
    )
    doc = finding_document(
        build_finding(triage_seed.ENCODED_PS, event, grouping=triage_seed.GROUPING)
    )
    _bulk_create(es, seeded.index, [doc], 10)  # the match landed, then the executor died
    assert _group(es, seeded, seeded.acme_id)["sigstream"]["group"]["count"] == 5
    replay = write_documents(es, seeded.index, [doc])
    assert (replay.created, replay.duplicates) == (0, 1)
    assert _group(es, seeded, seeded.acme_id)["sigstream"]["group"]["count"] == 6


def test_suppressed_matches_are_stored_and_counted_but_open_nothing(es: Any, seeded: Any) -> None:
    sup = store.add_suppression(
        es,
        seeded.index,
        ACME,
        Suppression(
            tenant_id="ignored",
            rule_id=triage_seed.ENCODED_PS.id,
            fields={"host.name": "ws01"},
            reason="admin scripts",
        ),
    )
    assert sup.tenant_id == "acme" and sup.author == "alice"
    new = []
    for i in range(3):
        event = dict(
            triage_seed.matches()[0][1],
            event_id=f"a-sup-{i}",
            event_time=(datetime.now(UTC) + timedelta(seconds=i)).isoformat(),
        )
        new.append(build_finding(triage_seed.ENCODED_PS, event, grouping=triage_seed.GROUPING))
    result = write_findings(es, seeded.index, new)
    assert (result.created, result.suppressed, result.groups_synced) == (3, 3, 0)
    es.indices.refresh(index=f"{seeded.index},{groups_index(seeded.index)}")
    assert es.count(index=seeded.index)["count"] == 9
    assert es.count(index=groups_index(seeded.index))["count"] == 2
    rows = store.list_suppressions(es, seeded.index, ACME)
    assert [(r["id"], r["suppressed"]) for r in rows] == [(sup.id, 3)]
    assert store.list_suppressions(es, seeded.index, Caller("g", "analyst", "globex")) == []


def test_context_related_events_and_process_ancestry(es: Any, seeded: Any) -> None:
    f = store.get_finding(es, seeded.index, ACME, seeded.acme_id)
    total, items = store.finding_matches(es, seeded.index, ACME, f)
    assert total == 5 and items[0]["event"]["id"] == "a-ps-0"
    near = store.related_events(es, seeded.events_index, ACME, f, timedelta(minutes=0))
    assert {e["event_id"] for e in near} == {f"a-ps-{i}" for i in range(5)} | {"a-net"}
    wide = store.related_events(es, seeded.events_index, ACME, f, timedelta(minutes=5))
    assert {"a-1", "a-2"} <= {e["event_id"] for e in wide}
    assert "g-ps-1" not in {e["event_id"] for e in wide}  # same host name, other tenant
    chain = store.process_ancestry(es, seeded.events_index, f)
    assert [e["Image"].rsplit("\\", 1)[-1] for e in chain] == [
        "powershell.exe",
        "WINWORD.EXE",
        "explorer.exe",
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, 1),
        ({"host": "ws01"}, 1),
        ({"host": "WS02"}, 0),
        ({"levels": ["high"]}, 1),
        ({"levels": ["low"]}, 0),
        ({"status": ["closed"]}, 0),
        ({"rule": "encoded powershell command line"}, 1),
        ({"text": "hidden winword"}, 1),
        ({"text": "GLOBEXSECRET"}, 0),
        ({"start": datetime(2026, 11, 20, 10, 4, tzinfo=UTC)}, 1),
        ({"start": datetime(2026, 11, 20, 10, 6, tzinfo=UTC)}, 0),
        ({"end": datetime(2026, 11, 20, 10, 0, tzinfo=UTC)}, 0),
    ],
)
def test_list_filters(es: Any, seeded: Any, filters: dict[str, Any], expected: int) -> None:
    total, rows = store.list_findings(es, seeded.index, ACME, store.ListFilters(**filters))
    assert total == expected == len(rows)
    assert all(r["sigstream"]["tenant_id"] == "acme" for r in rows)
