"""The bad input corpus (tests/fixtures/bad_input) and the inputs too big to store: each is
rejected with its expected reason, nothing crashes, and valid events around them arrive."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.gateway.app import GatewayOptions, create_app
from ingest.gateway.credentials import CredentialStore
from ingest.gateway.parse import BatchError, Identity, Limits, parse_batch
from tests.unit.gateway_helpers import event, ndjson
from tests.unit.memory_sink import MemorySink

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "bad_input"
FILES = sorted(CORPUS.glob("*.ndjson"))
NOW = datetime(2026, 11, 27, tzinfo=UTC)
ME = Identity("acme", "ws01")


def generated() -> dict[str, bytes]:
    """Inputs too large to keep in git, by expected reason."""
    nested: object = "x"
    for _ in range(40):
        nested = {"k": nested}
    return {
        "event_too_large": json.dumps(event(1, CommandLine="A" * (300 * 1024))).encode(),
        "too_deep": json.dumps(event(2, extra=nested)).encode(),
        "too_deep (past the recursion limit)": b'{"a":' + b"[" * 60_000 + b"]" * 60_000 + b"}",
    }


def test_corpus_is_there() -> None:
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_corpus_input_is_rejected_with_its_reason(path: Path) -> None:
    expected = path.name.split("__")[0]
    batch = parse_batch(path.read_bytes(), ME, Limits(), NOW)
    assert batch.events == []
    assert [r.reason for r in batch.rejects] == [expected]
    assert batch.rejects[0].message
    assert batch.rejects[0].raw == path.read_bytes().rstrip(b"\n")  # the original bytes


@pytest.mark.parametrize("reason", sorted(generated()))
def test_generated_inputs(reason: str) -> None:
    batch = parse_batch(generated()[reason], ME, Limits(), NOW)
    assert [r.reason for r in batch.rejects] == [reason.split()[0]]


def test_compression_bomb_is_a_413() -> None:
    bomb = gzip.compress(b" " * (200 * 1024 * 1024))  # 200 MB of spaces in ~200 kB
    with pytest.raises(BatchError) as info:
        parse_batch(bomb, ME, Limits(), NOW, "gzip")
    assert info.value.status == 413


def test_whole_corpus_in_one_batch_valid_events_still_arrive(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "creds.json")
    _, token = store.enroll("acme", "ws01")
    sink = MemorySink()
    bad = [p.read_bytes().rstrip(b"\n") for p in FILES] + list(generated().values())
    good = [json.dumps(event(i)).encode() for i in range(len(bad))]
    body = b"\n".join(x for pair in zip(good, bad, strict=True) for x in pair)
    with TestClient(create_app(store, sink, GatewayOptions())) as http:
        resp = http.post(
            "/v1/events",
            content=gzip.compress(body),
            headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"},
        )
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert (answer["accepted"], answer["rejected"]) == (len(good), len(bad))
        assert [e.event_id for e in sink.events] == [f"ws01-{i:06d}" for i in range(len(good))]
        assert all(r.reason for _, r in sink.rejects)
        # a replayed batch: the events are duplicates, nothing is stored twice
        again = http.post(
            "/v1/events",
            content=ndjson([event(i) for i in range(len(good))]),
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert (again["accepted"], again["duplicates"]) == (0, len(good))
        assert len(sink.events) == len(good)
