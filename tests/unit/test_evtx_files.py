"""``.evtx`` files read with the Rust-backed ``evtx`` parser give the same events, and the
same findings with every default rule, as the same records rendered as SigmaHQ's
``.json`` (the regression corpus holds each case both ways)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.settings import get_settings
from detections.compiler.plan import load_plan
from detections.content.defaults import default_rule_paths
from detections.engine.apply import match_events, rule_ids
from ingest.sources import expand_paths, read_items

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REGRESSION = SHARED / "sigma-regression"
needs_corpus = pytest.mark.skipif(
    not REGRESSION.is_dir(), reason=f"shared corpus absent: {REGRESSION}"
)


def _pairs() -> list[tuple[Path, Path]]:
    pairs = [(p, p.with_suffix(".json")) for p in sorted(REGRESSION.rglob("*.evtx"))]
    return [(e, j) for e, j in pairs if j.exists()]


def _events(path: Path) -> list[dict[str, Any]]:
    out = []
    for item in read_items(path):
        assert item.event is not None, (item.origin, item.reason)
        out.append(item.event.model_dump(mode="json"))
    return out


def _trimmed(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its id (derived from the record's origin: file name and kind) and
    with string values trimmed: SigmaHQ's JSON renderings dropped whitespace at the ends
    of some values that the raw records keep (a ``ParentCommandLine`` ending in a space)."""

    def trim(value: Any) -> Any:
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, dict):
            return {k: trim(v) for k, v in value.items()}
        return value

    return trim({k: v for k, v in event.items() if k != "event_id"})


@needs_corpus
def test_every_regression_evtx_gives_the_events_of_its_json() -> None:
    pairs = _pairs()
    assert len(pairs) >= 100, len(pairs)
    events = 0
    for evtx_path, json_path in pairs:
        from_evtx = [_trimmed(e) for e in _events(evtx_path)]
        assert from_evtx == [_trimmed(e) for e in _events(json_path)], evtx_path
        events += len(from_evtx)
    assert events >= len(pairs)


@needs_corpus
def test_the_regression_corpus_gives_the_same_findings_from_evtx_as_from_json() -> None:
    plan = load_plan(default_rule_paths(get_settings()))
    ids = rule_ids(plan)

    def findings(paths: list[Path]) -> set[tuple[str, str, str]]:
        events, cases = [], []
        for path in paths:
            for event in _events(path):
                events.append(event)
                cases.append((path.parent.name, str(event["event_time"])))
        return {(*cases[e], ids[r]) for e, r in match_events(plan, events)}

    pairs = _pairs()
    from_evtx = findings([e for e, _ in pairs])
    from_json = findings([j for _, j in pairs])
    assert len(from_json) >= 100  # the cases are written to fire their rules
    assert from_evtx == from_json


def test_a_file_that_is_not_evtx_is_one_reject_with_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "broken.evtx"
    bad.write_bytes(b"ElfFile\x00" + b"\x00" * 100)
    items = list(read_items(bad))
    assert len(items) == 1 and items[0].event is None
    assert items[0].reason and "evtx" in items[0].reason


def test_directory_walks_leave_evtx_to_explicit_paths(tmp_path: Path) -> None:
    (tmp_path / "case.json").write_text("{}")
    (tmp_path / "case.evtx").write_bytes(b"")
    assert expand_paths([tmp_path]) == [tmp_path / "case.json"]
    assert expand_paths([tmp_path / "case.evtx"]) == [tmp_path / "case.evtx"]


def test_a_truncated_file_ends_with_a_reject_saying_so(tmp_path: Path) -> None:
    """The parser stops silently at a cut; the header's chunk count tells it happened."""
    cut = tmp_path / "cut.evtx"
    header = bytearray(4096)
    header[:8] = b"ElfFile\x00"
    header[42:44] = (2).to_bytes(2, "little")  # two 64 KiB chunks declared
    cut.write_bytes(bytes(header) + b"\x00" * 100)
    items = list(read_items(cut))
    assert items and all(i.event is None for i in items)
    assert "truncated .evtx" in (items[-1].reason or "")
    assert "135,168 bytes" in (items[-1].reason or "")


@needs_corpus
def test_a_real_file_cut_mid_chunk_keeps_nothing_silently(tmp_path: Path) -> None:
    whole = next(p for p, _ in _pairs() if p.stat().st_size == 4096 + 65536)
    cut = tmp_path / whole.name
    cut.write_bytes(whole.read_bytes()[: 4096 + 30_000])
    items = list(read_items(cut))
    rejects = [i for i in items if i.event is None]
    assert len(rejects) == 1 and "truncated .evtx" in (rejects[0].reason or "")
    # The untouched file has no such reject.
    assert all(i.event is not None for i in read_items(whole))
