"""The sensor's disk spool: order, commit, crash recovery, segment rolling."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.spool import Position, Spool


def recs(a: int, b: int) -> list[bytes]:
    return [f'{{"n": {i}}}'.encode() for i in range(a, b)]


def test_read_commit_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(recs(0, 10))
    got, end = spool.read(spool.committed, 4, 1 << 20)
    assert got == recs(0, 4)
    spool.commit(end)
    spool.close()
    again = Spool(tmp_path)  # a restarted sensor continues after the committed position
    got, _ = again.read(again.committed, 100, 1 << 20)
    assert got == recs(4, 10)


def test_segments_roll_and_committed_ones_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=100)
    for i in range(0, 30, 3):
        spool.append(recs(i, i + 3))
    assert len(list(tmp_path.glob("*.seg"))) > 3
    got, end = spool.read(spool.committed, 1000, 1 << 20)
    assert got == recs(0, 30)  # order kept across segments
    spool.commit(end)
    assert len(list(tmp_path.glob("*.seg"))) == 1
    assert not spool.pending()
    spool.append(recs(30, 31))
    assert spool.read(spool.committed, 10, 1 << 20)[0] == recs(30, 31)


def test_byte_limit_returns_at_least_one_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(recs(0, 5))
    got, pos = spool.read(Position(1, 0), 100, 1)
    assert got == recs(0, 1) and pos.offset == len(recs(0, 1)[0]) + 1


def test_torn_tail_after_crash_is_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync="never")
    spool.append(recs(0, 3))
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    with seg.open("ab") as handle:
        handle.write(b'{"n": 3')  # the crash happened mid-append
    reopened = Spool(tmp_path)
    reopened.append(recs(4, 5))
    assert reopened.read(reopened.committed, 100, 1 << 20)[0] == recs(0, 3) + recs(4, 5)


def test_multi_line_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path).append([b'{"a":\n1}'])
